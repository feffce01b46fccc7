package remote_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/remote"
	"github.com/stretchr/testify/require"
)

type env struct {
	ctx      context.Context
	src, dst *pgtest.DB
}

const appliedDDL = "create table applied (ev_id bigint not null, data text, retry int, at timestamptz default clock_timestamp())"

func setup(t *testing.T, srcC, dstC *pgtest.Cluster) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	e := &env{ctx: ctx, src: srcC.NewDB(t), dst: dstC.NewPlainDB(t)}
	_, err := pgq.CreateQueue(ctx, e.src.Pool, "q")
	require.NoError(t, err)
	_, err = pgq.RegisterConsumer(ctx, e.src.Pool, "q", "copier")
	require.NoError(t, err)
	_, err = e.dst.Pool.Exec(ctx, appliedDDL)
	require.NoError(t, err)
	return e
}

func (e *env) produce(t *testing.T, from, n int, data func(i int) string) {
	t.Helper()
	evs := make([]pgq.EventData, n)
	for i := range evs {
		evs[i] = pgq.EventData{Type: pgq.T("row"), Data: pgq.T(data(from + i))}
	}
	tx, err := e.src.Pool.Begin(e.ctx)
	require.NoError(t, err)
	_, err = pgq.InsertEvents(e.ctx, tx, "q", slices.Values(evs))
	require.NoError(t, err)
	require.NoError(t, tx.Commit(e.ctx))
}

func plain(i int) string { return fmt.Sprintf("row-%d", i) }

func (e *env) cfg() remote.Config {
	return remote.Config{Consumer: consumer.Config{Queue: "q", Name: "copier", LazyFetch: 10,
		PollInterval: 20 * time.Millisecond,
		ErrorBackoff: consumer.Backoff{Initial: 10 * time.Millisecond, Max: 200 * time.Millisecond}}}
}

// pump keeps the source moving like the ticker daemon would (retry
// maintenance + a tick) and reports whether want rows are applied.
func (e *env) pump(t *testing.T, dst *pgxpool.Pool, want int) func() bool {
	return func() bool {
		_, _ = pgq.MaintRetryEvents(e.ctx, e.src.Pool)
		_, _ = pgq.Tick(e.ctx, e.src.Pool, "q")
		var n int
		if err := dst.QueryRow(e.ctx, "select count(*) from applied").Scan(&n); err != nil {
			return false
		}
		return n >= want
	}
}

// requireExactlyOnce checks every row 0..n-1 is applied exactly once.
func requireExactlyOnce(t *testing.T, ctx context.Context, dst *pgxpool.Pool, n int) {
	t.Helper()
	var total, distinct int
	require.NoError(t, dst.QueryRow(ctx, "select count(*), count(distinct data) from applied").Scan(&total, &distinct))
	require.Equal(t, n, distinct, "rows applied")
	require.Equal(t, n, total, "no row applied twice")
}

func TestRemoteConsumerAppliesExactlyOnce(t *testing.T) {
	t.Parallel()
	e := setup(t, cluster, cluster)
	rc, err := remote.New(e.src.Pool, e.dst.Pool, e.cfg(), copyHandler(nil))
	require.NoError(t, err)
	stop := pgtest.Background(t, e.ctx, rc.Run)
	e.produce(t, 0, 100, plain)
	e.produce(t, 100, 50, func(i int) string { return fmt.Sprintf("retry-%d", i) })
	require.Eventually(t, e.pump(t, e.dst.Pool, 150), 30*time.Second, 20*time.Millisecond)
	require.NoError(t, stop())
	requireExactlyOnce(t, e.ctx, e.dst.Pool, 150)
	var retried int
	require.NoError(t, e.dst.Pool.QueryRow(e.ctx, "select count(*) from applied where retry = 1").Scan(&retried))
	require.Equal(t, 50, retried, "retried events applied on their second delivery")
	last, err := remote.LastBatch(e.ctx, e.dst.Pool, "copier", "")
	require.NoError(t, err)
	require.Positive(t, last)
}

func TestRemoteConsumerHandlerErrorRollsBack(t *testing.T) {
	t.Parallel()
	e := setup(t, cluster, cluster)
	var mu sync.Mutex
	fails := 2
	h := copyHandler(nil)
	rc, err := remote.New(e.src.Pool, e.dst.Pool, e.cfg(), remote.HandlerFunc(func(ctx context.Context, b *pgq.Batch, tx pgx.Tx) error {
		if err := h.ProcessRemoteBatch(ctx, b, tx); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if fails > 0 && b.Seen() > 0 {
			fails--
			return fmt.Errorf("boom")
		}
		return nil
	}))
	require.NoError(t, err)
	e.produce(t, 0, 30, plain)
	stop := pgtest.Background(t, e.ctx, rc.Run)
	require.Eventually(t, e.pump(t, e.dst.Pool, 30), 30*time.Second, 20*time.Millisecond)
	require.NoError(t, stop())
	requireExactlyOnce(t, e.ctx, e.dst.Pool, 30)
	mu.Lock()
	require.Zero(t, fails, "the handler failed twice before succeeding")
	mu.Unlock()
}

func TestRemoteConsumerCrashPoints(t *testing.T) {
	t.Parallel()
	type crash struct {
		point string
		pipe  bool // the handler writes through remote.Pipeline
	}
	for _, c := range []crash{{crashBeforeDstCommit, false}, {crashAfterDstCommit, false}, {crashMidStream, false},
		{crashBeforeDstCommit, true}, {crashAfterDstCommit, true}} {
		point := c.point
		name := point
		if c.pipe {
			name = "pipe/" + point
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := setup(t, cluster, cluster)
			e.produce(t, 0, 80, plain)
			e.produce(t, 80, 20, func(i int) string { return fmt.Sprintf("retry-%d", i) })
			_, err := pgq.Tick(e.ctx, e.src.Pool, "q")
			require.NoError(t, err)

			crashAt(t, point, c.pipe, e.src.DSN, e.dst.DSN)

			var n int
			require.NoError(t, e.dst.Pool.QueryRow(e.ctx, "select count(*) from applied").Scan(&n))
			if point == crashAfterDstCommit {
				require.Equal(t, 80, n, "the batch was applied and committed before the crash")
				// The batch is still open on the source.
				ci, err := pgq.GetConsumerInfo(e.ctx, e.src.Pool, "q", "copier")
				require.NoError(t, err)
				require.NotZero(t, ci.CurrentBatch)
			} else {
				require.Zero(t, n, "nothing committed before the crash")
			}

			rc, err := remote.New(e.src.Pool, e.dst.Pool, e.cfg(), copyHandler(nil))
			require.NoError(t, err)
			stop := pgtest.Background(t, e.ctx, rc.Run)
			require.Eventually(t, e.pump(t, e.dst.Pool, 100), 30*time.Second, 20*time.Millisecond)
			require.NoError(t, stop())
			requireExactlyOnce(t, e.ctx, e.dst.Pool, 100)
			var retried int
			require.NoError(t, e.dst.Pool.QueryRow(e.ctx,
				"select count(*) from applied where data like 'retry%' and retry = 1").Scan(&retried))
			require.Equal(t, 20, retried, "retried events survive the crash and are applied once, later")
		})
	}
}

func TestRemoteConsumerSurvivesRestartsAndCuts(t *testing.T) {
	t.Parallel()
	srcC := pgtest.NewCluster(t)
	dstC := pgtest.NewCluster(t)
	e := setup(t, srcC, dstC)
	proxy := pgtest.NewProxy(t, dstC.Addr())
	dstViaProxy, err := pgxpool.New(e.ctx, dstC.DSNVia(proxy.Addr(), e.dst.Name))
	require.NoError(t, err)
	t.Cleanup(dstViaProxy.Close)
	srcPool, err := pgxpool.New(e.ctx, e.src.DSN)
	require.NoError(t, err)
	t.Cleanup(srcPool.Close)

	rc, err := remote.New(srcPool, dstViaProxy, e.cfg(), copyHandler(nil))
	require.NoError(t, err)
	stop := pgtest.Background(t, e.ctx, rc.Run)

	total := 0
	round := func(n int) {
		e.produce(t, total, n, plain)
		total += n
		require.Eventually(t, e.pump(t, e.dst.Pool, total), 60*time.Second, 20*time.Millisecond)
	}
	round(50)
	require.NoError(t, srcC.Restart())
	e.src.Pool.Reset()
	round(50)
	require.NoError(t, dstC.Restart())
	e.dst.Pool.Reset()
	round(50)
	proxy.Cut()
	e.produce(t, total, 50, plain)
	total += 50
	_, err = pgq.Tick(e.ctx, e.src.Pool, "q")
	require.NoError(t, err)
	proxy.Restore()
	require.Eventually(t, e.pump(t, e.dst.Pool, total), 60*time.Second, 20*time.Millisecond)
	require.NoError(t, stop())
	requireExactlyOnce(t, e.ctx, e.dst.Pool, total)
}

func TestSerialConsumer(t *testing.T) {
	t.Parallel()
	e := setup(t, cluster, cluster)
	sc, err := remote.NewSerial(e.src.Pool, e.dst.Pool, e.cfg(), copyHandler(nil))
	require.NoError(t, err)
	stop := pgtest.Background(t, e.ctx, sc.Run)
	e.produce(t, 0, 40, plain)
	require.Eventually(t, e.pump(t, e.dst.Pool, 40), 30*time.Second, 20*time.Millisecond)
	require.NoError(t, stop())
	requireExactlyOnce(t, e.ctx, e.dst.Pool, 40)
	ci, err := pgq.GetConsumerInfo(e.ctx, e.src.Pool, "q", "copier")
	require.NoError(t, err)
	dstTick, err := remote.LastTick(e.ctx, e.dst.Pool, "copier", "")
	require.NoError(t, err)
	require.Equal(t, ci.LastTick, dstTick, "destination tracks the last applied tick")

	// Already applied: rewind the source one batch back; the batch is skipped.
	first, err := pgq.RegisterConsumer(e.ctx, e.src.Pool, "q", "other")
	require.NoError(t, err)
	require.True(t, first)
	e.produce(t, 40, 10, plain)
	_, err = pgq.Tick(e.ctx, e.src.Pool, "q")
	require.NoError(t, err)
	sc2, err := remote.NewSerial(e.src.Pool, e.dst.Pool, e.cfg(), copyHandler(nil))
	require.NoError(t, err)
	stop = pgtest.Background(t, e.ctx, sc2.Run)
	require.Eventually(t, e.pump(t, e.dst.Pool, 50), 30*time.Second, 20*time.Millisecond)
	require.NoError(t, stop())
	requireExactlyOnce(t, e.ctx, e.dst.Pool, 50)

	// Lost position: the destination claims a tick the source never offers.
	_, err = e.dst.Pool.Exec(e.ctx, "select pgq_ext.set_last_tick('copier', 999999)")
	require.NoError(t, err)
	e.produce(t, 50, 5, plain)
	_, err = pgq.Tick(e.ctx, e.src.Pool, "q")
	require.NoError(t, err)
	err = sc2.Run(e.ctx)
	require.ErrorIs(t, err, remote.ErrLostPosition)
	require.ErrorContains(t, err, "999999")
	requireExactlyOnce(t, e.ctx, e.dst.Pool, 50)

	// Reset forgets the position; the pending batch is then applied.
	require.NoError(t, sc2.Reset(e.ctx))
	stop = pgtest.Background(t, e.ctx, sc2.Run)
	require.Eventually(t, e.pump(t, e.dst.Pool, 55), 30*time.Second, 20*time.Millisecond)
	require.NoError(t, stop())
	requireExactlyOnce(t, e.ctx, e.dst.Pool, 55)

	// Rewind: move the source back to the destination's tick after a
	// source-side rewind went too far back.
	dstTick, err = remote.LastTick(e.ctx, e.dst.Pool, "copier", "")
	require.NoError(t, err)
	require.NoError(t, pgq.RegisterConsumerAt(e.ctx, e.src.Pool, "q", "copier", dstTick-2))
	ok, err := sc2.Rewind(e.ctx)
	require.NoError(t, err)
	require.True(t, ok)
	ci, err = pgq.GetConsumerInfo(e.ctx, e.src.Pool, "q", "copier")
	require.NoError(t, err)
	require.Equal(t, dstTick, ci.LastTick)

}
