package ticker_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/ticker"
	"github.com/stretchr/testify/require"
)

// drainOnce is consumeOnce for goroutines: errors are returned.
func drainOnce(ctx context.Context, pool *pgxpool.Pool, queue, cons string) ([]*pgq.Event, error) {
	info, err := pgq.NextBatch(ctx, pool, queue, cons)
	if err != nil || info == nil {
		return nil, err
	}
	b := pgq.NewBatch(pool, queue, cons, *info, pgq.ReadOptions{})
	evs, err := b.All(ctx)
	if err != nil {
		return nil, err
	}
	_, err = pgq.FinishBatch(ctx, pool, info.ID)
	return evs, err
}

// TestRotationBoundedAndLossless runs sustained inserts against a queue
// with a short rotation period: with consumers keeping up, the ticker's
// maintenance rotates and truncates the event tables so their size stays
// bounded; a lagging consumer blocks the rotation that would truncate
// what it has not read, and gets every event.
func TestRotationBoundedAndLossless(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	db := newDB(t)
	const q = "rot"
	createQueue(t, ctx, db.Pool, q, pgq.QueueConfig{TickerMaxLag: pgq.Ptr(time.Duration(0)), RotationPeriod: pgq.Ptr(200 * time.Millisecond)})
	_, err := pgq.RegisterConsumer(ctx, db.Pool, q, "fast")
	require.NoError(t, err)
	var parent string
	require.NoError(t, db.Pool.QueryRow(ctx, "select queue_data_pfx from pgq.queue where queue_name = $1", q).Scan(&parent))
	parentIdent := pgx.Identifier{"pgq", parent[len("pgq."):]}.Sanitize()

	cfg := fast(db.DSN)
	cfg.MaintPeriod = 50 * time.Millisecond
	r := start(t, cfg)
	r.waitState(t, db.Name, ticker.StateTicking)

	var (
		phase    atomic.Int32 // producer's current phase (1, 2); 0 stops it
		inserted atomic.Int64
		p2       atomic.Int64 // phase-2 events inserted
		wg       sync.WaitGroup
		errMu    sync.Mutex
		bgErr    error
		stopFast = make(chan struct{})
	)
	fail := func(err error) {
		if err != nil && !errors.Is(err, context.Canceled) {
			errMu.Lock()
			bgErr = errors.Join(bgErr, err)
			errMu.Unlock()
		}
	}
	phase.Store(1)
	wg.Add(2)
	go func() { // producer: 20 events per transaction, every 5ms
		defer wg.Done()
		for n := 0; ; {
			p := phase.Load()
			if p == 0 {
				return
			}
			evs := make([]pgq.EventData, 20)
			for i := range evs {
				evs[i] = pgq.EventData{Type: pgq.T("p" + strconv.Itoa(int(p))), Data: pgq.T(strconv.Itoa(n))}
				n++
			}
			fail(pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
				_, err := pgq.InsertEvents(ctx, tx, q, slices.Values(evs))
				return err
			}))
			inserted.Add(int64(len(evs)))
			if p == 2 {
				p2.Add(int64(len(evs)))
			}
			time.Sleep(5 * time.Millisecond) // pacing of the load, not a wait for a condition
		}
	}()
	go func() { // the consumer that keeps up
		defer wg.Done()
		for {
			select {
			case <-stopFast:
				return
			default:
			}
			evs, err := drainOnce(ctx, db.Pool, q, "fast")
			fail(err)
			if len(evs) == 0 {
				time.Sleep(5 * time.Millisecond) // poll interval of this test consumer
			}
		}
	}()
	defer func() {
		phase.Store(0)
		select {
		case <-stopFast:
		default:
			close(stopFast)
		}
		wg.Wait()
	}()

	type sample struct {
		rows    int64
		table   int
		switch_ time.Time
	}
	probe := func() sample {
		var s sample
		require.NoError(t, db.Pool.QueryRow(ctx, "select (select count(*) from "+parentIdent+
			"), queue_cur_table, queue_switch_time from pgq.queue where queue_name = $1", q).Scan(&s.rows, &s.table, &s.switch_))
		return s
	}

	// Phase 1: consumers keep up, tables rotate and are truncated.
	rotations, truncations := 0, 0
	var maxRows int64
	prev := probe()
	require.Eventually(t, func() bool {
		s := probe()
		if !s.switch_.Equal(prev.switch_) {
			rotations++
		}
		if s.rows < prev.rows {
			truncations++
		}
		maxRows = max(maxRows, s.rows)
		prev = s
		// Bounded: the tables' peak stops growing while inserts go on, so
		// the total soon passes twice the peak (without truncation the
		// peak is the total and this never holds). On a loaded machine
		// maintenance lags and that takes more events.
		n := inserted.Load()
		return rotations >= 6 && n >= 6000 && maxRows < n/2
	}, 60*time.Second, 20*time.Millisecond, "event tables stay bounded while inserts go on")
	total := inserted.Load()
	t.Logf("phase 1: %d events inserted, %d rotations, %d truncations seen, event tables peaked at %d rows", total, rotations, truncations, maxRows)
	require.Positive(t, truncations)
	require.Less(t, maxRows, total/2, "event tables stay bounded")
	require.Greater(t, r.stats(db.Name).MaintOps, int64(6))

	// Phase 2: a consumer that does not read blocks rotation; nothing it
	// needs is truncated.
	_, err = pgq.RegisterConsumer(ctx, db.Pool, q, "slow")
	require.NoError(t, err)
	phase.Store(2)
	rotations = 0
	prev = probe()
	require.Eventually(t, func() bool {
		s := probe()
		if !s.switch_.Equal(prev.switch_) {
			rotations++
		}
		prev = s
		return p2.Load() >= 4000
	}, 60*time.Second, 20*time.Millisecond)
	phase.Store(0)
	close(stopFast)
	wg.Wait()
	require.NoError(t, bgErr)
	t.Logf("phase 2: %d events while the slow consumer lagged, %d rotations", p2.Load(), rotations)
	require.LessOrEqual(t, rotations, 2, "rotation is blocked by the lagging consumer")

	// Every phase-2 event reaches the slow consumer, exactly once.
	var want int
	require.NoError(t, db.Pool.QueryRow(ctx, "select count(*) from "+parentIdent+" where ev_type = 'p2'").Scan(&want))
	require.Equal(t, p2.Load(), int64(want), "all phase-2 events are still in the tables")
	got := map[string]int{}
	require.Eventually(t, func() bool {
		evs, err := drainOnce(ctx, db.Pool, q, "slow")
		require.NoError(t, err)
		for _, e := range evs {
			if e.Type.String == "p2" {
				got[e.Data.String]++
			}
		}
		return len(got) == want
	}, 60*time.Second, time.Millisecond)
	for k, n := range got {
		require.Equal(t, 1, n, "event %s delivered once", k)
	}
}
