package remote_test

import (
	"context"
	"iter"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/remote"
	"github.com/stretchr/testify/require"
)

// copyFromEvents feeds a streamed batch into COPY on the destination.
type copyFromEvents struct {
	next func() (*pgq.Event, error, bool)
	ev   *pgq.Event
	err  error
	n    int
	tick func(n int)
}

func (c *copyFromEvents) Next() bool {
	ev, err, ok := c.next()
	if !ok || err != nil {
		c.err = err
		return false
	}
	c.ev = ev
	c.n++
	if c.tick != nil {
		c.tick(c.n)
	}
	return true
}

func (c *copyFromEvents) Values() ([]any, error) {
	return []any{c.ev.ID, c.ev.Data.String, c.ev.Retry}, nil
}
func (c *copyFromEvents) Err() error { return c.err }

// Not parallel: the heap measurement must not see other tests' allocations.
func TestRemoteOneMillionEventBatchBoundedMemory(t *testing.T) {
	e := setup(t, cluster, cluster)
	const n = 1_000_000
	tx, err := e.src.Pool.Begin(e.ctx)
	require.NoError(t, err)
	_, err = pgq.InsertEvents(e.ctx, tx, "q", func(yield func(pgq.EventData) bool) {
		for i := range n {
			if !yield(pgq.EventData{Data: pgq.T("row-" + strconv.Itoa(i))}) {
				return
			}
		}
	})
	require.NoError(t, err)
	require.NoError(t, tx.Commit(e.ctx))
	_, err = pgq.Tick(e.ctx, e.src.Pool, "q")
	require.NoError(t, err)

	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak uint64
	batches := 0
	h := remote.HandlerFunc(func(ctx context.Context, b *pgq.Batch, dst pgx.Tx) error {
		batches++
		next, stop := iter.Pull2(b.Events(ctx))
		defer stop()
		src := &copyFromEvents{next: next, tick: func(k int) {
			if k%200_000 == 0 {
				runtime.GC()
				runtime.ReadMemStats(&ms)
				if ms.HeapAlloc > base {
					peak = max(peak, ms.HeapAlloc-base)
				}
			}
		}}
		_, err := dst.CopyFrom(ctx, pgx.Identifier{"applied"}, []string{"ev_id", "data", "retry"}, src)
		return err
	})
	cfg := e.cfg()
	cfg.Consumer.LazyFetch = 1000
	rc, err := remote.New(e.src.Pool, e.dst.Pool, cfg, h)
	require.NoError(t, err)
	stop := pgtest.Background(t, e.ctx, rc.Run)
	require.Eventually(t, func() bool {
		var got int
		_ = e.dst.Pool.QueryRow(e.ctx, "select count(*) from applied").Scan(&got)
		return got == n
	}, 5*time.Minute, 50*time.Millisecond)
	require.NoError(t, stop())
	requireExactlyOnce(t, e.ctx, e.dst.Pool, n)
	require.Equal(t, 1, batches, "one batch, one destination transaction")
	require.Less(t, peak, uint64(32<<20), "live heap grew %d MiB", peak>>20)
	t.Logf("1M events in one dst transaction; live heap growth peak %d KiB", peak>>10)
}
