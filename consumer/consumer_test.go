package consumer_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	pool := cluster.NewDB(t).Pool
	h := consumer.BatchHandlerFunc(func(context.Context, *pgq.Batch) error { return nil })
	ok := consumer.Config{Queue: "q", Name: "c"}
	for _, tc := range []struct {
		name  string
		mod   func(*consumer.Config)
		field string
	}{
		{"no queue", func(c *consumer.Config) { c.Queue = "" }, "Config.Queue"},
		{"no name", func(c *consumer.Config) { c.Name = "" }, "Config.Name"},
		{"negative lazy fetch", func(c *consumer.Config) { c.LazyFetch = -1 }, "Config.LazyFetch"},
		{"negative min count", func(c *consumer.Config) { c.MinCount = -1 }, "Config.MinCount"},
		{"negative min interval", func(c *consumer.Config) { c.MinInterval = -time.Second }, "Config.MinInterval"},
		{"negative keep lag", func(c *consumer.Config) { c.KeepLag = -time.Second }, "Config.KeepLag"},
		{"negative poll", func(c *consumer.Config) { c.PollInterval = -time.Second }, "Config.PollInterval"},
		{"bad filter", func(c *consumer.Config) { c.Filter = pgq.In("nope", "x") }, "Config.Filter"},
		{"backoff order", func(c *consumer.Config) {
			c.ErrorBackoff = consumer.Backoff{Initial: time.Minute, Max: time.Second}
		}, "Config.ErrorBackoff"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.mod(&cfg)
			_, err := consumer.New(pool, cfg, h)
			require.ErrorContains(t, err, tc.field)
		})
	}
	_, err := consumer.New(pool, ok, nil)
	require.ErrorContains(t, err, "handler is nil")

	c, err := consumer.New(pool, ok, h)
	require.NoError(t, err)
	got := c.Config()
	require.Equal(t, consumer.DefaultLazyFetch, got.LazyFetch)
	require.Equal(t, time.Second, got.PollInterval)
	require.Equal(t, time.Second, got.ErrorBackoff.Initial)
	require.Equal(t, 20*time.Second, got.ErrorBackoff.Max)
	require.NotNil(t, got.Logger)

	c, err = consumer.New(pool, consumer.Config{Queue: "q", Name: "c", NoLazyFetch: true}, h)
	require.NoError(t, err)
	require.Zero(t, c.Config().LazyFetch)
}

func TestBackoffDelay(t *testing.T) {
	t.Parallel()
	b := consumer.Backoff{Initial: time.Second, Max: 20 * time.Second, Multiplier: 2}
	var got []time.Duration
	for n := 1; n <= 7; n++ {
		got = append(got, b.Delay(n))
	}
	s := time.Second
	require.Equal(t, []time.Duration{s, 2 * s, 4 * s, 8 * s, 16 * s, 20 * s, 20 * s}, got)
	require.Equal(t, 20*time.Second, b.Delay(1000), "no overflow")
}

func TestDoneByDefault(t *testing.T) {
	t.Parallel()
	e := setup(t)
	col := &collector{}
	var mu sync.Mutex
	var stats []consumer.BatchStats
	cfg := e.cfg(t)
	cfg.Hooks.OnBatch = func(s consumer.BatchStats) { mu.Lock(); stats = append(stats, s); mu.Unlock() }
	e.start(t, cfg, col)

	ids := e.Produce(t, 5, nil)
	tick1 := e.Tick(t)
	col.waitIDs(t, ids, 20*time.Second)
	// A second, empty tick: the events must not come back.
	tick2 := e.Tick(t)
	// OnBatch runs after the finish commits: wait for both.
	require.Eventually(t, func() bool {
		mu.Lock()
		n := len(stats)
		mu.Unlock()
		return e.Info(t).LastTick == tick2 && n >= 2
	}, 20*time.Second, 10*time.Millisecond)

	require.Equal(t, ids, col.ids(), "each event exactly once, in order")
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, stats, 2)
	require.Equal(t, 5, stats[0].Events)
	require.Equal(t, 0, stats[0].Retries)
	require.Equal(t, 1, stats[0].Attempts)
	require.Equal(t, tick1, stats[0].TickID)
	require.Equal(t, "q", stats[0].Queue)
	require.Equal(t, "c", stats[0].Consumer)
	require.Positive(t, stats[0].Duration)
	require.Equal(t, 0, stats[1].Events)
	require.Equal(t, tick2, stats[1].TickID)
	var retries int
	require.NoError(t, e.Pool.QueryRow(e.Ctx, "select count(*) from pgq.retry_queue").Scan(&retries))
	require.Zero(t, retries)
	ci := e.Info(t)
	require.Zero(t, ci.CurrentBatch)
	require.Zero(t, ci.PendingEvents)
}

func TestRetryWithDelay(t *testing.T) {
	t.Parallel()
	e := setup(t)
	const delay = 2 * time.Second
	var (
		mu     sync.Mutex
		tagged = map[int64]time.Time{}
	)
	col := &collector{each: func(ev *pgq.Event) {
		// The middle event is retried twice: once with a delay, then at once.
		if ev.Data.String != "1" {
			return
		}
		switch ev.Retry {
		case 0:
			ev.TagRetry(delay)
			mu.Lock()
			tagged[ev.ID] = time.Now()
			mu.Unlock()
		case 1:
			ev.TagRetry(0)
		case 2:
			ev.TagRetry(time.Hour)
			ev.TagDone() // undo: done after all
		}
	}}
	var retried counter
	cfg := e.cfg(t)
	cfg.Hooks.OnBatch = func(s consumer.BatchStats) {
		if s.Retries > 0 {
			retried.inc()
		}
	}
	e.start(t, cfg, col)
	ids := e.Produce(t, 3, nil)
	e.Tick(t)
	col.waitIDs(t, ids, 20*time.Second)
	require.Eventually(t, func() bool { return retried.get() == 1 }, 10*time.Second, 5*time.Millisecond)

	// Not due yet: maintenance moves nothing.
	n, err := pgq.MaintRetryEvents(e.Ctx, e.Pool)
	require.NoError(t, err)
	require.Zero(t, n, "retry delay not honoured")

	// Once due, the retry comes back to this consumer with ev_retry = 1.
	require.Eventually(t, func() bool {
		n, err := pgq.MaintRetryEvents(e.Ctx, e.Pool)
		require.NoError(t, err)
		return n == 1
	}, 20*time.Second, 50*time.Millisecond)
	mu.Lock()
	require.GreaterOrEqual(t, time.Since(tagged[ids[1]]), delay-100*time.Millisecond)
	mu.Unlock()
	e.Tick(t)
	waitRetry := func(r int32) {
		require.Eventually(t, func() bool {
			evs, _ := col.snapshot()
			return slices.ContainsFunc(evs, func(s seen) bool { return s.id == ids[1] && s.retry == r })
		}, 20*time.Second, 10*time.Millisecond, "event not redelivered with ev_retry=%d", r)
	}
	waitRetry(1)
	require.Eventually(t, func() bool { return retried.get() == 2 }, 10*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool {
		n, err := pgq.MaintRetryEvents(e.Ctx, e.Pool)
		require.NoError(t, err)
		return n == 1
	}, 20*time.Second, 20*time.Millisecond)
	e.Tick(t)
	waitRetry(2)
	tick := e.Tick(t)
	require.Eventually(t, func() bool { return e.Info(t).LastTick == tick }, 20*time.Second, 10*time.Millisecond)

	evs, _ := col.snapshot()
	var got []seen
	for _, s := range evs {
		got = append(got, seen{id: s.id, retry: s.retry, data: s.data})
	}
	require.Equal(t, []seen{
		{id: ids[0], data: "0"}, {id: ids[1], data: "1"}, {id: ids[2], data: "2"},
		{id: ids[1], retry: 1, data: "1"}, {id: ids[1], retry: 2, data: "1"},
	}, got)
	var left int
	require.NoError(t, e.Pool.QueryRow(e.Ctx, "select count(*) from pgq.retry_queue").Scan(&left))
	require.Zero(t, left, "TagDone must undo TagRetry")
	require.Equal(t, 2, retried.get())
}

func TestManyRetriesFinishFast(t *testing.T) {
	t.Parallel()
	e := setup(t)
	const n = 10000
	_, err := pgxBegin(e, func(ctx context.Context, tx pgqTx) error {
		evs := make([]pgq.EventData, n)
		for i := range evs {
			evs[i] = pgq.EventData{Type: pgq.T("t"), Data: pgq.T("x")}
		}
		_, err := pgq.InsertEvents(ctx, tx, e.Queue, slices.Values(evs))
		return err
	})
	require.NoError(t, err)
	e.Tick(t)

	statsCh := make(chan consumer.BatchStats, 1)
	cfg := e.cfg(t)
	cfg.Hooks.OnBatch = func(s consumer.BatchStats) { statsCh <- s }
	cfg.LazyFetch = 1000
	e.start(t, cfg, consumer.Events(consumer.EventHandlerFunc(func(_ context.Context, ev *pgq.Event) error {
		ev.TagRetry(time.Hour)
		return nil
	})))
	var st consumer.BatchStats
	select {
	case st = <-statsCh:
	case <-time.After(60 * time.Second):
		t.Fatal("batch not finished")
	}
	t.Logf("batch of %d events, all retried: %v", st.Events, st.Duration)
	require.Equal(t, n, st.Events)
	require.Equal(t, n, st.Retries)
	// event_retry rescans the batch per call: minutes for 10k. The raw
	// pipelined path takes about a second under -race on an idle machine;
	// the bound leaves room for a loaded one (6.7 s seen with the CPU
	// busy) and still tells seconds from minutes.
	require.Less(t, st.Duration, 30*time.Second)
	var cnt, minRetry, maxRetry int
	require.NoError(t, e.Pool.QueryRow(e.Ctx,
		"select count(*), min(ev_retry), max(ev_retry) from pgq.retry_queue").Scan(&cnt, &minRetry, &maxRetry))
	require.Equal(t, n, cnt)
	require.Equal(t, 1, minRetry)
	require.Equal(t, 1, maxRetry)
}

func TestHandlerErrorAndPanicRetrySameBatch(t *testing.T) {
	t.Parallel()
	e := setup(t)
	var (
		mu       sync.Mutex
		attempts []int64 // batch id per attempt
		got      [][]int64
	)
	col := &collector{before: func(ctx context.Context, b *pgq.Batch) error {
		evs, err := b.All(ctx)
		if err != nil {
			return err
		}
		var ids []int64
		for _, ev := range evs {
			ids = append(ids, ev.ID)
			ev.TagRetry(time.Hour) // tags of a failed attempt must not survive
		}
		mu.Lock()
		attempts = append(attempts, b.ID())
		got = append(got, ids)
		n := len(attempts)
		mu.Unlock()
		switch n {
		case 1, 2:
			return errors.New("boom")
		case 3:
			panic("kaboom")
		}
		b.ResetRetries()
		return nil
	}}
	var (
		errMu  sync.Mutex
		errs   []consumer.ErrorInfo
		stats  = make(chan consumer.BatchStats, 1)
		failed counter
	)
	cfg := e.cfg(t)
	cfg.Hooks.OnError = func(ei consumer.ErrorInfo) { errMu.Lock(); errs = append(errs, ei); errMu.Unlock(); failed.inc() }
	cfg.Hooks.OnBatch = func(s consumer.BatchStats) { stats <- s }
	e.start(t, cfg, col)
	ids := e.Produce(t, 4, nil)
	e.Tick(t)
	col.waitIDs(t, ids, 30*time.Second)

	st := <-stats
	require.Equal(t, 4, st.Attempts)
	require.Equal(t, 4, st.Events)
	require.Zero(t, st.Retries)
	mu.Lock()
	require.Len(t, attempts, 4)
	for i := range attempts {
		require.Equal(t, attempts[0], attempts[i], "the same batch every attempt")
		require.Equal(t, ids, got[i], "the same events every attempt")
	}
	mu.Unlock()
	errMu.Lock()
	require.Len(t, errs, 3)
	for i, ei := range errs {
		require.Equal(t, attempts[0], ei.BatchID)
		require.Equal(t, i+1, ei.Attempt)
		require.Equal(t, i == 2, ei.Panicked)
	}
	require.ErrorContains(t, errs[0].Err, "boom")
	require.ErrorContains(t, errs[2].Err, "kaboom")
	errMu.Unlock()
	var left int
	require.NoError(t, e.Pool.QueryRow(e.Ctx, "select count(*) from pgq.retry_queue").Scan(&left))
	require.Zero(t, left, "retry tags of failed attempts leaked")
	require.Zero(t, e.Info(t).CurrentBatch)
}

func TestFilterServerSide(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		lazy int
		all  bool
	}{{"cursor", 3, false}, {"whole batch", 0, true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := setup(t)
			targets := []string{"a", "b", "c'); drop table pgq.queue; --", ""}
			ids := e.Produce(t, 40, func(i int) pgq.EventData {
				d := pgq.EventData{Type: pgq.T("copy"), Data: pgq.T("x")}
				if i%5 != 4 {
					d.Extra1 = pgq.T(targets[i%5])
				}
				return d
			})
			var want []int64
			for i, id := range ids {
				if i%5 == 1 || i%5 == 2 {
					want = append(want, id)
				}
			}
			col := &collector{}
			cfg := e.cfg(t)
			cfg.LazyFetch, cfg.NoLazyFetch = tc.lazy, tc.all
			cfg.Filter = pgq.In(pgq.FieldExtra1, "b", targets[2])
			e.start(t, cfg, col)
			tick := e.Tick(t)
			require.Eventually(t, func() bool { return e.Info(t).LastTick == tick }, 20*time.Second, 10*time.Millisecond)
			require.Equal(t, want, col.ids())
			var n int
			require.NoError(t, e.Pool.QueryRow(e.Ctx, "select count(*) from pgq.queue").Scan(&n))
			require.Equal(t, 1, n)
		})
	}
}

func TestNotRegistered(t *testing.T) {
	t.Parallel()
	e := setup(t)
	cfg := e.cfg(t)
	cfg.Name = "nobody"
	c, err := consumer.New(e.Pool, cfg, &collector{})
	require.NoError(t, err)
	err = c.Run(e.Ctx)
	require.ErrorIs(t, err, pgq.ErrNotRegistered)

	cfg.Queue = "no_such_queue"
	cfg.Register = true
	c, err = consumer.New(e.Pool, cfg, &collector{})
	require.NoError(t, err)
	require.ErrorIs(t, c.Run(e.Ctx), pgq.ErrQueueNotFound)
}

func TestRegisterOnStartAndAdmin(t *testing.T) {
	t.Parallel()
	e := setup(t)
	col := &collector{}
	cfg := e.cfg(t)
	cfg.Name = "fresh"
	cfg.Register = true
	c, err := consumer.New(e.Pool, cfg, col)
	require.NoError(t, err)
	_, err = c.Info(e.Ctx)
	require.ErrorIs(t, err, pgq.ErrNotRegistered)

	ctx, cancel := context.WithCancel(e.Ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	require.Eventually(t, func() bool { _, err := c.Info(e.Ctx); return err == nil }, 20*time.Second, 10*time.Millisecond)
	require.ErrorIs(t, c.Run(ctx), consumer.ErrRunning)
	ids := e.Produce(t, 3, nil)
	tick := e.Tick(t)
	col.waitIDs(t, ids, 20*time.Second)
	require.Eventually(t, func() bool { ci, _ := c.Info(e.Ctx); return ci.LastTick == tick }, 20*time.Second, 10*time.Millisecond)
	cancel()
	require.NoError(t, <-done)

	// Rewind: register at the tick before the events; they come again.
	ci, err := c.Info(e.Ctx)
	require.NoError(t, err)
	require.Equal(t, "fresh", ci.Name)
	require.NoError(t, c.RegisterAt(e.Ctx, tick-1))
	again := &collector{}
	stop := startOn(t, e.Ctx, e.Pool, cfg, again)
	again.waitIDs(t, ids, 20*time.Second)
	require.NoError(t, stop())

	created, err := c.Register(e.Ctx)
	require.NoError(t, err)
	require.False(t, created, "already registered")
	removed, err := c.Unregister(e.Ctx)
	require.NoError(t, err)
	require.True(t, removed)
	removed, err = c.Unregister(e.Ctx)
	require.NoError(t, err)
	require.False(t, removed)
}

func TestStopDuringBatch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		ret      func(ctx context.Context) error
		finished bool
	}{
		{"handler completes", func(context.Context) error { return nil }, true},
		{"handler aborts", func(ctx context.Context) error { return ctx.Err() }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := setup(t)
			ids := e.Produce(t, 3, nil)
			e.Tick(t)
			inBatch := make(chan int64, 1)
			var read []int64
			h := consumer.BatchHandlerFunc(func(ctx context.Context, b *pgq.Batch) error {
				evs, err := b.All(ctx)
				if err != nil {
					return err
				}
				for _, ev := range evs {
					read = append(read, ev.ID)
				}
				inBatch <- b.ID()
				<-ctx.Done() // stop arrives mid-batch
				return tc.ret(ctx)
			})
			stop := e.start(t, e.cfg(t), h)
			var batch int64
			select {
			case batch = <-inBatch:
			case <-time.After(30 * time.Second):
				t.Fatal("no batch")
			}
			require.NoError(t, stop(), "a clean stop returns nil")
			ci := e.Info(t)
			if tc.finished {
				require.Zero(t, ci.CurrentBatch, "batch finished after the handler returned nil")
				require.Equal(t, ids, read)
				require.Zero(t, ci.PendingEvents)
				return
			}
			require.Equal(t, batch, ci.CurrentBatch, "batch left open, untouched")
			require.Equal(t, ids, read)
			again := &collector{}
			e.start(t, e.cfg(t), again)
			again.waitIDs(t, ids, 20*time.Second)
			_, bs := again.snapshot()
			require.Equal(t, batch, bs[0].ID, "the same batch is delivered on the next run")
		})
	}
}

func TestFatalHandlerErrorStopsRun(t *testing.T) {
	t.Parallel()
	e := setup(t)
	lost := errors.New("lost position")
	calls := 0
	h := consumer.BatchHandlerFunc(func(ctx context.Context, b *pgq.Batch) error {
		calls++
		return consumer.Fatal(lost)
	})
	e.Produce(t, 1, nil)
	e.Tick(t)
	c, err := consumer.New(e.Pool, e.cfg(t), h)
	require.NoError(t, err)
	err = c.Run(e.Ctx)
	require.ErrorIs(t, err, lost)
	require.True(t, consumer.IsFatal(err))
	require.Equal(t, 1, calls, "no retry after a fatal error")
	require.NotZero(t, e.Info(t).CurrentBatch, "the batch stays unfinished")
	require.NoError(t, consumer.Fatal(nil))
}
