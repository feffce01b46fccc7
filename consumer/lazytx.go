package consumer

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/pgq"
)

// lazyTx is a batch's source transaction (Batch.DB) on the consumer's
// connection, begun with its first statement: the begin goes in the same
// round trip as that statement (pgx.Batch.BeginTx), usually the read of
// the batch's events, or else the finish. A transaction that was never
// used costs no round trip at all.
//
// The statements that cannot carry the begin (CopyFrom, Prepare, a
// savepoint, large objects) begin it first, in a round trip of its own.
//
// pending is the batch's events sent ahead on the connection
// (pgq.Prefetch), if any: the first statement through the transaction
// drops what the batch has not taken of them, and fails while the batch
// is reading them (the connection is busy: read the events first, or
// buffer them).
type lazyTx struct {
	conn    *pgxpool.Conn
	tx      pgx.Tx // nil until begun
	pending *pgq.Prefetch
}

// free frees the connection from the events sent ahead.
func (t *lazyTx) free() error {
	if t.pending == nil {
		return nil
	}
	if err := t.pending.Release(); err != nil {
		return err
	}
	t.pending = nil
	return nil
}

var _ pgx.Tx = (*lazyTx)(nil)

// begin begins the transaction in a round trip of its own, if needed.
func (t *lazyTx) begin(ctx context.Context) error {
	if t.tx != nil {
		return nil
	}
	if err := t.free(); err != nil {
		return err
	}
	tx, err := t.conn.Begin(ctx)
	if err != nil {
		return err
	}
	t.tx = tx
	return nil
}

// withBegin sends b, preceded by the begin unless the transaction was
// begun: the results skip the begin's.
func (t *lazyTx) withBegin(ctx context.Context, b *pgx.Batch) (pgx.BatchResults, error) {
	if err := t.free(); err != nil {
		return nil, err
	}
	if t.tx != nil {
		return t.tx.SendBatch(ctx, b), nil
	}
	pb := &pgx.Batch{}
	pb.BeginTx(pgx.TxOptions{})
	pb.QueuedQueries = append(pb.QueuedQueries, b.QueuedQueries...)
	res := t.conn.SendBatch(ctx, pb)
	t.tx = res.Tx()
	if _, err := res.Exec(); err != nil {
		_ = res.Close()
		return nil, err
	}
	return res, nil
}

func (t *lazyTx) Begin(ctx context.Context) (pgx.Tx, error) {
	if err := t.begin(ctx); err != nil {
		return nil, err
	}
	return t.tx.Begin(ctx)
}

func (t *lazyTx) Commit(ctx context.Context) error {
	if t.tx == nil {
		return nil
	}
	return t.tx.Commit(ctx)
}

func (t *lazyTx) Rollback(ctx context.Context) error {
	if t.tx == nil {
		return nil
	}
	return t.tx.Rollback(ctx)
}

func (t *lazyTx) CopyFrom(ctx context.Context, table pgx.Identifier, cols []string, src pgx.CopyFromSource) (int64, error) {
	if err := t.begin(ctx); err != nil {
		return 0, err
	}
	return t.tx.CopyFrom(ctx, table, cols, src)
}

func (t *lazyTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	res, err := t.withBegin(ctx, b)
	if err != nil {
		return pgx.FailedBatchResults(b, err)
	}
	return res
}

// LargeObjects begins the transaction first, with no context to bound the
// round trip but beginTimeout; if that fails, every large object
// operation fails with pgx.ErrTxClosed.
func (t *lazyTx) LargeObjects() pgx.LargeObjects {
	ctx, cancel := context.WithTimeout(context.Background(), beginTimeout)
	defer cancel()
	if err := t.begin(ctx); err != nil {
		b := &pgx.Batch{}
		b.BeginTx(pgx.TxOptions{})
		return pgx.FailedBatchResults(b, err).Tx().LargeObjects()
	}
	return t.tx.LargeObjects()
}

// beginTimeout bounds LargeObjects' begin, which has no context.
const beginTimeout = time.Minute

func (t *lazyTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	if err := t.begin(ctx); err != nil {
		return nil, err
	}
	return t.tx.Prepare(ctx, name, sql)
}

func (t *lazyTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if t.tx != nil {
		return t.tx.Exec(ctx, sql, args...)
	}
	b := &pgx.Batch{}
	b.Queue(sql, args...)
	res, err := t.withBegin(ctx, b)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := res.Exec()
	if cerr := res.Close(); err == nil {
		err = cerr
	}
	return tag, err
}

func (t *lazyTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if t.tx != nil {
		return t.tx.Query(ctx, sql, args...)
	}
	b := &pgx.Batch{}
	b.Queue(sql, args...)
	res, err := t.withBegin(ctx, b)
	if err != nil {
		return nil, err
	}
	rows, err := res.Query()
	if err != nil {
		_ = res.Close()
		return nil, err
	}
	return &batchRows{Rows: rows, res: res}, nil
}

func (t *lazyTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if t.tx != nil {
		return t.tx.QueryRow(ctx, sql, args...)
	}
	rows, err := t.Query(ctx, sql, args...)
	return &rowOf{rows: rows, err: err}
}

func (t *lazyTx) Conn() *pgx.Conn { return t.conn.Conn() }

// batchRows are the rows of a statement sent in a batch (after the
// begin): closing them closes the batch, which frees the connection.
type batchRows struct {
	pgx.Rows
	res    pgx.BatchResults
	closed bool
	err    error
}

// Next closes the batch once the rows are read, as pgx closes rows then:
// callers may leave Close out.
func (r *batchRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.Close()
	return false
}

func (r *batchRows) Close() {
	r.Rows.Close()
	if !r.closed {
		r.closed = true
		r.err = r.res.Close()
	}
}

func (r *batchRows) Err() error {
	if err := r.Rows.Err(); err != nil {
		return err
	}
	return r.err
}

// rowOf is a pgx.Row read from rows, as pgx's QueryRow does.
type rowOf struct {
	rows pgx.Rows
	err  error
}

func (r *rowOf) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		r.rows.Close()
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	r.rows.Close()
	return r.rows.Err()
}
