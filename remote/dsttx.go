package remote

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/pgq"
)

// dstTx is the destination transaction of one batch, shared by
// RemoteConsumer and SerialConsumer.
type dstTx struct {
	pgx.Tx
	// shared: the destination is the source pool, and the transaction is
	// a savepoint in the consumer's source transaction: the apply, the
	// record and finish_batch commit together, on one connection.
	shared  bool
	release func()
	pipe    *Pipe // the handler's queued statements (Pipeline), sent first
}

func (t *dstTx) close(ctx context.Context) {
	_ = t.Rollback(context.WithoutCancel(ctx))
	if t.release != nil {
		t.release()
	}
}

// beginDst opens the destination transaction for batch b and queues, on
// pb, the statements every batch starts with: the idle timeout and the
// lock serialising every process applying the same tracking key.
//
// When the destination pool is the source pool (a node that is its own
// hub), a second connection is never taken: waiting for one while the
// batch holds the first deadlocks once the pool is exhausted. The
// destination transaction is then a savepoint of the source transaction.
// Otherwise the destination connection is acquired with a bounded wait.
func beginDst(ctx context.Context, src, dst *pgxpool.Pool, cfg Config, b *pgq.Batch, pb *pgx.Batch) (*dstTx, error) {
	name, sub := cfg.Consumer.Name, cfg.SubConsumer
	where := func(what string, err error) error {
		return fmt.Errorf("remote: %s/%s batch %d: %s: %w", b.Queue, name, b.ID(), what, err)
	}
	var t *dstTx
	if src == dst {
		outer, ok := b.DB().(pgx.Tx)
		if !ok {
			return nil, where("begin destination", errors.New("source and destination share a pool but the batch has no source transaction"))
		}
		sp, err := outer.Begin(ctx)
		if err != nil {
			return nil, where("begin destination savepoint", err)
		}
		b.BufferFetches() // the handler writes on this connection between events
		t = &dstTx{Tx: sp, shared: true}
	} else {
		actx, cancel := context.WithTimeout(ctx, cfg.AcquireTimeout)
		conn, err := dst.Acquire(actx)
		cancel()
		if err != nil {
			if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
				st := dst.Stat()
				err = fmt.Errorf("no destination connection within %v while holding a source connection "+
					"(destination pool exhausted: %d of %d in use; enlarge it or give this consumer its own pool): %w",
					cfg.AcquireTimeout, st.AcquiredConns(), st.MaxConns(), err)
			}
			return nil, where("acquire destination connection", err)
		}
		tx, err := conn.Begin(ctx)
		if err != nil {
			conn.Release()
			return nil, where("begin destination", err)
		}
		t = &dstTx{Tx: tx, release: conn.Release}
		if cfg.IdleTimeout > 0 {
			pb.Queue("select set_config('idle_in_transaction_session_timeout', $1, true)",
				strconv.FormatInt(cfg.IdleTimeout.Milliseconds(), 10))
		}
	}
	pb.Queue(lockKeySQL, name, sub)
	return t, nil
}

// lockKeySQL takes a transaction lock that serialises every process
// applying the same (consumer, subconsumer) to this destination, so two
// instances can never both see a batch as not done.
const lockKeySQL = "select pg_advisory_xact_lock(hashtextextended('pgq_go.remote:' || $1 || '/' || $2, 0))"

// execAll reads the results of the first n statements of a sent batch.
func execAll(res pgx.BatchResults, n int) error {
	for range n {
		if _, err := res.Exec(); err != nil {
			return err
		}
	}
	return nil
}
