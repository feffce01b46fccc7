package remote

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// PipeBudget bounds, in bytes, the statements a Pipe holds before sending
// them: the SQL text plus the arguments' sizes (strings and byte slices by
// length, other values counted as 16 bytes).
const PipeBudget = 1 << 20

// Pipe sends a handler's per-event statements to the destination many per
// round trip. Exec queues a statement on the destination transaction; the
// queue is sent when it holds PipeBudget bytes, before any other use of
// the destination transaction the flow handed to the handler (its Exec,
// Query, QueryRow, SendBatch, CopyFrom, Prepare, Begin, Commit), and before
// the batch is recorded as done, in the same transaction. A handler that
// writes one INSERT per event thus pays one round trip per PipeBudget, not
// one per event, and its statements still commit with the batch's record.
//
// What a queued statement does is known only once it is sent: an error
// comes back from the Exec or Flush that sent it, or, from a flow's pipe
// sending in the background, from a later Exec, the Flush or the next use
// of the destination transaction (naming the statement), never from the
// Exec that queued it, and the destination transaction is
// then aborted: return the error, and the batch is processed again. A
// handler that must read a statement's result (RETURNING, a row count)
// uses the transaction itself, which sends the queue first, so the order
// of statements is kept.
//
// A Pipe is not safe for concurrent use, like the transaction it writes to.
type Pipe struct {
	tx    pgx.Tx
	pb    pgx.Batch
	bytes int
	sent  int   // statements sent before the queued ones
	err   error // the first failure; every later call returns it
	// stream: the flow's pipe on a destination connection of its own
	// sends through PostgreSQL's pipeline mode (pipestream.go).
	stream *pipeStream
}

// Pipeline returns the Pipe of dst. For the destination transaction a
// RemoteConsumer or SerialConsumer passed to its handler, it is the flow's
// pipe, sent before the batch is recorded: the handler need not Flush.
// For any other transaction it is a new Pipe, which the caller must Flush
// before committing.
//
// The flow's pipe, unless the destination is the source database's own
// pool, streams: it puts the destination connection in pipeline mode and
// sends its statements in chunks of pipeChunk bytes as they are queued,
// without waiting for their results, which it reads a chunk later. The
// destination so executes one chunk while the handler reads events and
// encodes the next. Any other use of the destination transaction ends
// the pipeline mode first.
func Pipeline(dst pgx.Tx) *Pipe {
	if t, ok := dst.(*dstTx); ok {
		if t.pipe == nil {
			t.pipe = &Pipe{tx: t.Tx}
			if !t.shared {
				t.pipe.stream = &pipeStream{conn: t.Tx.Conn()}
			}
		}
		return t.pipe
	}
	return &Pipe{tx: dst}
}

// Exec queues sql with args; it sends the queue when it holds PipeBudget
// bytes (a streaming pipe: pipeChunk bytes, without waiting). The error
// is that of a statement sent earlier.
func (p *Pipe) Exec(ctx context.Context, sql string, args ...any) error {
	if p.err != nil {
		return p.err
	}
	if p.stream != nil {
		if err := p.stream.exec(ctx, sql, args); err != nil {
			p.err = err
		}
		return p.err
	}
	p.pb.Queue(sql, args...)
	p.bytes += len(sql)
	for _, a := range args {
		p.bytes += argBytes(a)
	}
	if p.bytes >= PipeBudget {
		return p.Flush(ctx)
	}
	return nil
}

// Len is the number of statements queued and not yet sent.
func (p *Pipe) Len() int {
	if p.stream != nil {
		return p.stream.unsent
	}
	return p.pb.Len()
}

// Flush sends the queued statements and reads their results (a streaming
// pipe also leaves pipeline mode).
func (p *Pipe) Flush(ctx context.Context) error {
	if p.err != nil {
		return p.err
	}
	if p.stream != nil {
		if err := p.stream.end(); err != nil {
			p.err = err
		}
		return p.err
	}
	if p.pb.Len() == 0 {
		return nil
	}
	queued := p.pb.QueuedQueries
	res := p.tx.SendBatch(ctx, &p.pb)
	var err error
	failed := -1
	for i := range queued {
		if _, err = res.Exec(); err != nil {
			failed = i
			break
		}
	}
	if cerr := res.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if failed >= 0 {
			err = stmtErr(p.sent+failed+1, queued[failed].SQL, err)
		} else {
			err = fmt.Errorf("remote: pipelined statements %d..%d: %w", p.sent+1, p.sent+len(queued), err)
		}
		p.err = err
	}
	p.sent += len(queued)
	p.pb = pgx.Batch{}
	p.bytes = 0
	return err
}

// stmtErr names pipelined statement n (counted from 1) in err.
func stmtErr(n int, sql string, err error) error {
	return fmt.Errorf("remote: pipelined statement %d (%.80q): %w", n, sql, err)
}

func argBytes(a any) int {
	switch v := a.(type) {
	case string:
		return len(v)
	case []byte:
		return len(v)
	case *string:
		if v != nil {
			return len(*v)
		}
	}
	return 16
}

// flushPipe sends what the handler queued on t's pipe.
func (t *dstTx) flushPipe(ctx context.Context) error {
	if t.pipe == nil {
		return nil
	}
	return t.pipe.Flush(ctx)
}

// The destination transaction sends the pipe's queue before anything else
// it is asked to run, so statements run in the order they were given.

func (t *dstTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if err := t.flushPipe(ctx); err != nil {
		return pgconn.CommandTag{}, err
	}
	return t.Tx.Exec(ctx, sql, args...)
}

func (t *dstTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if err := t.flushPipe(ctx); err != nil {
		return errRows{err}, err
	}
	return t.Tx.Query(ctx, sql, args...)
}

func (t *dstTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if err := t.flushPipe(ctx); err != nil {
		return errRows{err}
	}
	return t.Tx.QueryRow(ctx, sql, args...)
}

func (t *dstTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if err := t.flushPipe(ctx); err != nil {
		return errBatch{err}
	}
	return t.Tx.SendBatch(ctx, b)
}

func (t *dstTx) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	if err := t.flushPipe(ctx); err != nil {
		return 0, err
	}
	return t.Tx.CopyFrom(ctx, table, columns, src)
}

func (t *dstTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	if err := t.flushPipe(ctx); err != nil {
		return nil, err
	}
	return t.Tx.Prepare(ctx, name, sql)
}

func (t *dstTx) Begin(ctx context.Context) (pgx.Tx, error) {
	if err := t.flushPipe(ctx); err != nil {
		return nil, err
	}
	return t.Tx.Begin(ctx)
}

// Rollback, Conn and LargeObjects end a streaming pipe's pipeline mode
// first: nothing else may use the connection meanwhile.
func (t *dstTx) Rollback(ctx context.Context) error {
	t.endStream()
	return t.Tx.Rollback(ctx)
}

func (t *dstTx) Conn() *pgx.Conn {
	t.endStream()
	return t.Tx.Conn()
}

func (t *dstTx) LargeObjects() pgx.LargeObjects {
	t.endStream()
	return t.Tx.LargeObjects()
}

// endStream ends the pipe's pipeline mode, if it is on; a failure stays
// the pipe's error.
func (t *dstTx) endStream() {
	if t.pipe != nil && t.pipe.stream != nil {
		_ = t.pipe.Flush(context.Background())
	}
}

func (t *dstTx) Commit(ctx context.Context) error {
	if err := t.flushPipe(ctx); err != nil {
		return err
	}
	return t.Tx.Commit(ctx)
}

// errRows is the result of a query that was not sent because the pipe's
// queue failed before it.
type errRows struct{ err error }

func (r errRows) Close()                                       {}
func (r errRows) Err() error                                   { return r.err }
func (r errRows) CommandTag() pgconn.CommandTag                { return pgconn.CommandTag{} }
func (r errRows) FieldDescriptions() []pgconn.FieldDescription { return nil }
func (r errRows) Next() bool                                   { return false }
func (r errRows) Scan(...any) error                            { return r.err }
func (r errRows) Values() ([]any, error)                       { return nil, r.err }
func (r errRows) RawValues() [][]byte                          { return nil }
func (r errRows) Conn() *pgx.Conn                              { return nil }
func (r errRows) TypeMap() *pgtype.Map                         { return nil }

// errBatch is the result of a batch that was not sent because the pipe's
// queue failed before it.
type errBatch struct{ err error }

func (b errBatch) Exec() (pgconn.CommandTag, error) { return pgconn.CommandTag{}, b.err }
func (b errBatch) Query() (pgx.Rows, error)         { return errRows(b), b.err }
func (b errBatch) QueryRow() pgx.Row                { return errRows(b) }
func (b errBatch) Close() error                     { return b.err }
func (b errBatch) Tx() pgx.Tx                       { return nil }
