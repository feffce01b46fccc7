package consumer_test

import (
	"context"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

// idleAfter waits until the consumer has looked for a batch and found none
// at least twice since now (so it saw the current ticks).
func idleAfter(t *testing.T, idle *counter) {
	t.Helper()
	n := idle.get()
	idle.waitAbove(t, n+1)
}

func TestMinCount(t *testing.T) {
	t.Parallel()
	e := setup(t)
	// Natural ticks (pgq.ticker() with ticker_max_lag 0): forced ticks bump
	// the event sequence, which MinCount measures.
	require.NoError(t, pgq.SetQueueConfig(e.Ctx, e.Pool, e.Queue, pgq.QueueConfig{TickerMaxLag: pgq.Ptr(time.Duration(0))}))
	tick := func() {
		n, err := pgq.Ticker(e.Ctx, e.Pool)
		require.NoError(t, err)
		require.EqualValues(t, 1, n)
	}
	var idle counter
	col := &collector{}
	cfg := e.cfg(t)
	cfg.MinCount = 5
	cfg.Hooks.OnIdle = idle.inc
	e.start(t, cfg, col)

	first := e.Produce(t, 3, nil)
	tick()
	idleAfter(t, &idle)
	require.Empty(t, col.ids(), "3 events < MinCount 5: no batch yet")

	second := e.Produce(t, 3, nil)
	tick()
	col.waitIDs(t, append(first, second...), 20*time.Second)
	_, bs := col.snapshot()
	require.Len(t, bs, 1, "one batch spanning both ticks")
	require.Equal(t, bs[0].PrevTickID+2, bs[0].TickID)
}

func TestMinInterval(t *testing.T) {
	t.Parallel()
	e := setup(t)
	const interval = 2 * time.Second
	var idle counter
	col := &collector{}
	cfg := e.cfg(t)
	cfg.MinInterval = interval
	cfg.Hooks.OnIdle = idle.inc
	e.start(t, cfg, col)

	ids := e.Produce(t, 2, nil)
	var regTick time.Time
	require.NoError(t, e.Pool.QueryRow(e.Ctx,
		"select min(tick_time) from pgq.tick").Scan(&regTick))
	e.Tick(t)
	idleAfter(t, &idle)
	var sinceReg time.Duration
	require.NoError(t, e.Pool.QueryRow(e.Ctx, "select extract(epoch from now() - $1::timestamptz)::float8 * interval '1 second'", regTick).Scan(&sinceReg))
	if sinceReg < interval {
		require.Empty(t, col.ids(), "batch span below MinInterval: no batch yet")
	}
	// Keep ticking: once ticks span the interval, one batch holds them all.
	require.Eventually(t, func() bool {
		_, err := pgq.Tick(e.Ctx, e.Pool, e.Queue)
		require.NoError(t, err)
		return len(col.ids()) == len(ids)
	}, 30*time.Second, 100*time.Millisecond)
	_, bs := col.snapshot()
	require.Len(t, bs, 1)
	require.GreaterOrEqual(t, bs[0].TickTime.Sub(bs[0].PrevTickTime), interval)
}

func TestKeepLag(t *testing.T) {
	t.Parallel()
	e := setup(t)
	const lag = 1500 * time.Millisecond
	col := &collector{}
	statsCh := make(chan consumer.BatchStats, 10)
	var tickAt time.Time
	col.before = func(ctx context.Context, b *pgq.Batch) error {
		var age time.Duration
		err := e.Pool.QueryRow(ctx, "select extract(epoch from now() - $1::timestamptz)::float8 * interval '1 second'", b.Info.TickTime).Scan(&age)
		if err != nil {
			return err
		}
		if age < lag {
			t.Errorf("batch tick only %v old, KeepLag %v", age, lag)
		}
		return nil
	}
	cfg := e.cfg(t)
	cfg.KeepLag = lag
	cfg.Hooks.OnBatch = func(s consumer.BatchStats) { statsCh <- s }
	e.start(t, cfg, col)
	ids := e.Produce(t, 3, nil)
	tickAt = time.Now()
	e.Tick(t)
	col.waitIDs(t, ids, 20*time.Second)
	require.GreaterOrEqual(t, time.Since(tickAt), lag)
	st := <-statsCh
	require.GreaterOrEqual(t, st.Lag, lag-50*time.Millisecond, "stats lag reflects KeepLag")
}

func TestListenWakeup(t *testing.T) {
	t.Parallel()
	e := setup(t)
	var idle counter
	col := &collector{}
	cfg := e.cfg(t)
	cfg.PollInterval = 10 * time.Minute // only a notification can wake it in time
	cfg.Hooks.OnIdle = idle.inc
	e.start(t, cfg, col)
	idle.waitAbove(t, 0)

	ids := e.Produce(t, 2, nil)
	tick := e.Tick(t)
	start := time.Now()
	// What the ticker package does after a tick. Repeated until delivered:
	// the listener may still be connecting when the first one is sent.
	require.Eventually(t, func() bool {
		_, err := e.Pool.Exec(e.Ctx, "select pg_notify($1, $2)", pgq.NotifyChannel(e.Queue), strconv.FormatInt(tick, 10))
		require.NoError(t, err)
		return len(col.ids()) == len(ids)
	}, 20*time.Second, 20*time.Millisecond)
	t.Logf("notify to delivery: %v (poll interval %v)", time.Since(start), cfg.PollInterval)
	require.Less(t, time.Since(start), 15*time.Second)
}

func TestPollingWithoutNotifications(t *testing.T) {
	t.Parallel()
	for _, listen := range []bool{true, false} {
		t.Run(map[bool]string{true: "listening", false: "listen disabled"}[listen], func(t *testing.T) {
			t.Parallel()
			e := setup(t)
			col := &collector{}
			var idle counter
			cfg := e.cfg(t)
			cfg.PollInterval = 100 * time.Millisecond
			cfg.DisableListen = !listen
			cfg.Hooks.OnIdle = idle.inc
			e.start(t, cfg, col)
			idle.waitAbove(t, 0)
			// No NOTIFY at all (e.g. ticks made by pgqd): polling finds it.
			ids := e.Produce(t, 2, nil)
			e.Tick(t)
			col.waitIDs(t, ids, 20*time.Second)
		})
	}
}

// TestCatchUpBoundedMemory: a consumer down while many events piled up
// catches up, batch after batch, reading each through a cursor so a big
// batch never sits in memory.
func TestCatchUpBoundedMemory(t *testing.T) {
	// Not parallel: the heap measurement must not see other tests.
	e := setup(t)
	const (
		bigN    = 8000
		payload = 4096 // 8000 * 4 KiB = 32 MiB if the batch were loaded whole
	)
	e.Produce(t, 100, nil)
	e.Tick(t)
	e.Produce(t, 100, nil)
	e.Tick(t)
	data := strings.Repeat("x", payload)
	require.NoError(t, pgx.BeginFunc(e.Ctx, e.Pool, func(tx pgx.Tx) error {
		_, err := pgq.InsertEvents(e.Ctx, tx, e.Queue, func(yield func(pgq.EventData) bool) {
			for range bigN {
				if !yield(pgq.EventData{Type: pgq.T("big"), Data: pgq.T(data)}) {
					return
				}
			}
		})
		return err
	}))
	e.Tick(t)
	ci := e.Info(t)
	require.Positive(t, ci.PendingEvents)

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc

	var (
		mu        sync.Mutex
		count     int
		bigCount  int
		peak      uint64
		lastQuery string
	)
	done := make(chan struct{})
	h := consumer.Events(consumer.EventHandlerFunc(func(_ context.Context, ev *pgq.Event) error {
		mu.Lock()
		defer mu.Unlock()
		count++
		if ev.Type.String == "big" {
			bigCount++
			if bigCount == bigN/2 {
				// Halfway through the batch, the statement reading its
				// events is still running: the events stream, they were not
				// loaded whole first.
				err := e.Pool.QueryRow(context.Background(), `select state || ': ' || query from pg_stat_activity
					where datname = current_database() and pid <> pg_backend_pid()
					  and query like 'with p as materialized (%'`).Scan(&lastQuery)
				if err != nil {
					return err
				}
			}
			if bigCount%1000 == 500 {
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapAlloc)
			}
		}
		return nil
	}))
	cfg := e.cfg(t)
	cfg.LazyFetch = 100
	cfg.Hooks.OnBatch = func(s consumer.BatchStats) {
		if s.Events == bigN {
			close(done)
		}
	}
	stop := e.start(t, cfg, h)
	select {
	case <-done:
	case <-time.After(90 * time.Second):
		t.Fatal("did not catch up")
	}
	require.NoError(t, stop())
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, 200+bigN, count, "every event, once")
	growth := int64(peak) - int64(base)
	t.Logf("heap growth while streaming a %d MiB batch: %d KiB", bigN*payload>>20, growth>>10)
	require.Less(t, growth, int64(8<<20), "the batch was not streamed")
	require.Regexp(t, `^active: `, lastQuery, "events are streamed by a running statement")
	ci = e.Info(t)
	require.Zero(t, ci.PendingEvents)
	require.Zero(t, ci.CurrentBatch)
}

// TestConsumersShareListener: consumers on one pool share one LISTEN
// connection, whatever their queues; each is still woken by its own
// queue's notifications, a stopped one does not take the connection from
// the others, and the connection closes with the last consumer.
func TestConsumersShareListener(t *testing.T) {
	t.Parallel()
	e := setup(t)
	listeners := func() int {
		var n int
		require.NoError(t, e.Pool.QueryRow(e.Ctx, `select count(*) from pg_stat_activity
			where datname = current_database() and query ~* '^(un)?listen '`).Scan(&n))
		return n
	}
	queues := []string{e.Queue, "q2", "q3"}
	cols := make([]*collector, len(queues))
	stops := make([]func() error, len(queues))
	for i, q := range queues {
		if i > 0 {
			_, err := pgq.CreateQueue(e.Ctx, e.Pool, q)
			require.NoError(t, err)
			_, err = pgq.RegisterConsumer(e.Ctx, e.Pool, q, e.Consumer)
			require.NoError(t, err)
		}
		var idle counter
		cfg := e.cfg(t)
		cfg.Queue = q
		cfg.PollInterval = 10 * time.Minute // only a notification can wake it in time
		cfg.Hooks.OnIdle = idle.inc
		cols[i] = &collector{}
		stops[i] = e.start(t, cfg, cols[i])
		idle.waitAbove(t, 0)
	}
	require.Eventually(t, func() bool { return listeners() == 1 }, 20*time.Second, 10*time.Millisecond)

	deliver := func(i int) {
		t.Helper()
		qe := *e.Env
		qe.Queue = queues[i]
		ids := qe.Produce(t, 2, nil)
		tick := qe.Tick(t)
		// Repeated until delivered: the shared connection may still be
		// adding the channel when the first one is sent.
		require.Eventually(t, func() bool {
			_, err := e.Pool.Exec(e.Ctx, "select pg_notify($1, $2)", pgq.NotifyChannel(queues[i]), strconv.FormatInt(tick, 10))
			require.NoError(t, err)
			got := cols[i].ids()
			return len(got) >= 2 && got[len(got)-1] == ids[1]
		}, 20*time.Second, 20*time.Millisecond)
	}
	for i := range queues {
		deliver(i)
	}
	require.Equal(t, 1, listeners())

	require.NoError(t, stops[0]())
	deliver(1)
	deliver(2)
	require.Equal(t, 1, listeners())
	require.NoError(t, stops[1]())
	require.NoError(t, stops[2]())
	require.Eventually(t, func() bool { return listeners() == 0 }, 20*time.Second, 10*time.Millisecond)
}
