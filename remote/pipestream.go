package remote

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// pipeChunk is the size, in bytes of encoded messages, of the chunks a
// streaming pipe sends: each ends with a Sync, and the results of a chunk
// are read once the next one is sent, so at most two chunks are
// outstanding and the destination always has the next one to execute.
const pipeChunk = 32 << 10

// pipeMaxPrepared bounds the statements a streaming pipe prepares; later
// new texts go unprepared (a handler building a text per event must not
// fill the connection with prepared statements).
const pipeMaxPrepared = 32

// pipeStmtSeq names the statements streaming pipes prepare.
var pipeStmtSeq atomic.Int64

// pipeStream is a flow Pipe's sender on a destination connection of its
// own: PostgreSQL's pipeline mode (pgconn.Pipeline) inside the destination
// transaction. pgx.Batch encodes a whole batch before the server sees any
// of it and then waits for every result, so the destination would idle
// while the client encodes and the client while the destination executes;
// here chunks go out as they fill and results are read a chunk behind.
//
// A statement's text is prepared once per pipe (the first time it comes,
// in a round trip of its own) and deallocated when the pipe ends.
type pipeStream struct {
	conn     *pgx.Conn
	pl       *pgconn.Pipeline // nil outside pipeline mode
	eqb      pgx.ExtendedQueryBuilder
	stmts    map[string]*pgconn.StatementDescription
	names    []string // prepared, to deallocate at the end
	unsent   int      // statements encoded since the last chunk was sent
	bytes    int      // their approximate size
	n        int      // statements so far
	pending  []chunk  // sent, results not read yet, oldest first
	curFirst int      // number of the first statement of the chunk being encoded
	curSQL   []string
}

// chunk is a sent chunk: the number of its first statement and the text
// of each (to name a failing one).
type chunk struct {
	first int
	sqls  []string
}

// start enters pipeline mode.
func (s *pipeStream) start(ctx context.Context) {
	if s.pl == nil {
		// Not cancelled with the handler: the flow finishes what it sent
		// (a cancelled context would close the connection mid-pipeline).
		s.pl = s.conn.PgConn().StartPipeline(context.WithoutCancel(ctx))
	}
}

// exec encodes and queues one statement, sending the chunk when full.
func (s *pipeStream) exec(ctx context.Context, sql string, args []any) error {
	if len(args) == 1 {
		if rw, ok := args[0].(pgx.QueryRewriter); ok {
			var err error
			if sql, args, err = rw.RewriteQuery(ctx, s.conn, sql, args); err != nil {
				return fmt.Errorf("remote: pipelined statement %d: rewrite: %w", s.n+1, err)
			}
		}
	}
	sd, err := s.prepare(ctx, sql)
	if err != nil {
		return err
	}
	s.start(ctx)
	if err := s.eqb.Build(s.conn.TypeMap(), sd, args); err != nil {
		return stmtErr(s.n+1, sql, err)
	}
	if sd != nil {
		s.pl.SendQueryPrepared(sd.Name, s.eqb.ParamValues, s.eqb.ParamFormats, s.eqb.ResultFormats)
	} else {
		s.pl.SendQueryParams(sql, s.eqb.ParamValues, nil, s.eqb.ParamFormats, s.eqb.ResultFormats)
	}
	s.n++
	if s.unsent == 0 {
		s.curFirst = s.n
	}
	s.unsent++
	s.curSQL = append(s.curSQL, sql)
	s.bytes += 32 + len(sql)
	for _, v := range s.eqb.ParamValues {
		s.bytes += 4 + len(v)
	}
	if s.bytes >= pipeChunk {
		return s.send(false)
	}
	return nil
}

// prepare returns sql's description, preparing it on first use; nil past
// pipeMaxPrepared texts (the statement then goes unprepared).
func (s *pipeStream) prepare(ctx context.Context, sql string) (*pgconn.StatementDescription, error) {
	if sd, ok := s.stmts[sql]; ok {
		return sd, nil
	}
	if len(s.names) >= pipeMaxPrepared {
		return nil, nil
	}
	// The description is needed to encode the arguments: read every
	// outstanding result first, in order.
	if err := s.send(true); err != nil {
		return nil, err
	}
	s.start(ctx)
	name := "pgq_go_pipe_" + strconv.FormatInt(pipeStmtSeq.Add(1), 10)
	s.pl.SendPrepare(name, sql, nil)
	if err := s.pl.Sync(); err != nil {
		return nil, fmt.Errorf("remote: pipelined statement %d: prepare: %w", s.n+1, err)
	}
	var sd *pgconn.StatementDescription
	for {
		res, err := s.pl.GetResults()
		if err != nil {
			return nil, stmtErr(s.n+1, sql, err)
		}
		if d, ok := res.(*pgconn.StatementDescription); ok {
			sd = d
			sd.Name, sd.SQL = name, sql // pgconn leaves them empty
		}
		if _, ok := res.(*pgconn.PipelineSync); ok || res == nil {
			break
		}
	}
	if sd == nil {
		return nil, stmtErr(s.n+1, sql, errors.New("prepare: no statement description"))
	}
	if s.stmts == nil {
		s.stmts = map[string]*pgconn.StatementDescription{}
	}
	s.stmts[sql] = sd
	s.names = append(s.names, name)
	return sd, nil
}

// send sends the chunk being encoded (with a Sync) and reads the results
// of the chunks before it; all, every outstanding result.
func (s *pipeStream) send(all bool) error {
	if s.unsent > 0 {
		if err := s.pl.Sync(); err != nil {
			return fmt.Errorf("remote: pipelined statements %d..%d: %w", s.curFirst, s.n, err)
		}
		s.pending = append(s.pending, chunk{first: s.curFirst, sqls: s.curSQL})
		s.curSQL, s.unsent, s.bytes = nil, 0, 0
	}
	keep := 1
	if all {
		keep = 0
	}
	for len(s.pending) > keep {
		c := s.pending[0]
		s.pending = s.pending[1:]
		if err := s.read(c); err != nil {
			return err
		}
	}
	return nil
}

// read reads chunk c's results, up to its Sync; the first error names its
// statement.
func (s *pipeStream) read(c chunk) error {
	var first error
	i := 0
	for {
		res, err := s.pl.GetResults()
		if err != nil {
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) {
				return fmt.Errorf("remote: pipelined statements %d..%d: %w", c.first, c.first+len(c.sqls)-1, err)
			}
			if first == nil && i < len(c.sqls) {
				first = stmtErr(c.first+i, c.sqls[i], err)
			} else if first == nil {
				first = err
			}
			continue // the server skipped the chunk's other statements; its Sync comes next
		}
		switch r := res.(type) {
		case *pgconn.ResultReader:
			if _, err := r.Close(); err != nil && first == nil {
				first = stmtErr(c.first+i, c.sqls[min(i, len(c.sqls)-1)], err)
			}
			i++
		case *pgconn.PipelineSync:
			return first
		case nil:
			return errors.Join(first, errors.New("remote: pipeline: results ended before the chunk's sync"))
		}
	}
}

// end sends what is encoded, reads every result, deallocates the pipe's
// statements and leaves pipeline mode. The first failing statement's
// error is returned.
func (s *pipeStream) end() error {
	if s.pl == nil {
		return nil
	}
	err := s.send(true)
	for _, name := range s.names {
		s.pl.SendDeallocate(name)
	}
	s.names, s.stmts = nil, nil
	if serr := s.pl.Sync(); serr != nil && err == nil {
		err = serr
	}
	if cerr := s.pl.Close(); cerr != nil && err == nil {
		var pgErr *pgconn.PgError
		if !errors.As(cerr, &pgErr) { // a deallocation in a failed transaction
			err = cerr
		}
	}
	s.pl = nil
	s.pending, s.curSQL, s.unsent, s.bytes = nil, nil, 0, 0
	return err
}
