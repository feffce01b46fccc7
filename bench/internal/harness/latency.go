package harness

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/ticker"
)

// Latency settings: the ticker library in-process ticking every
// latencyTick, the queue's ticker_max_lag at the same value (PgQ's
// default of 3 s would otherwise decide), one event every ~5 ms.
const (
	latencyTick     = 10 * time.Millisecond
	latencyMaxLag   = 10 * time.Millisecond
	latencyInterval = 5 * time.Millisecond
	latencyRunTime  = 3 * time.Second
	pollInterval    = time.Second
)

const latQueue = "lat_q"

// receiver records when a consumer's handler saw each event.
type receiver struct {
	mu   sync.Mutex
	recv map[int64]time.Time
}

func (r *receiver) handler() consumer.BatchHandler {
	return consumer.Events(consumer.EventHandlerFunc(func(_ context.Context, ev *pgq.Event) error {
		now := time.Now()
		r.mu.Lock()
		r.recv[ev.ID] = now
		r.mu.Unlock()
		return nil
	}))
}

func (r *receiver) get(id int64) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.recv[id]
	return t, ok
}

// latencyFixture runs the ticker and two consumers of one queue: "listen"
// (wake-ups on: LISTEN for the ticker's NOTIFY) and "poll" (wake-ups off:
// DisableListen, PollInterval 1 s).
type latencyFixture struct {
	db             *DB
	listen, poll   *receiver
	cancel         context.CancelFunc
	wg             sync.WaitGroup
	errMu          sync.Mutex
	err            error
	runTime, every time.Duration
	tk             *ticker.Ticker
	once           sync.Once
	produced       func() // called when a run's production ends, if set
}

// Tick schedule case (issue 13 goal 2): a busy queue whose
// ticker_max_lag equals the ticker's period.
const (
	scheduleTick   = 100 * time.Millisecond
	scheduleMaxLag = 100 * time.Millisecond
)

// tickerStats is the ticker's figures for the fixture's database.
func (f *latencyFixture) tickerStats() ticker.DatabaseStats {
	for _, st := range f.tk.Snapshot() {
		if st.Database == f.db.Name {
			return st
		}
	}
	return ticker.DatabaseStats{}
}

func newLatencyFixture(ctx context.Context, env *Env, name string, runTime, tick, maxLag time.Duration) (*latencyFixture, error) {
	db, err := env.CreateDB(ctx, name, true, 8)
	if err != nil {
		return nil, err
	}
	f := &latencyFixture{db: db, listen: &receiver{recv: map[int64]time.Time{}},
		poll: &receiver{recv: map[int64]time.Time{}}, runTime: runTime, every: latencyInterval}
	p := db.Pool
	if _, err := pgq.CreateQueue(ctx, p, latQueue); err != nil {
		return nil, err
	}
	if err := pgq.SetQueueConfig(ctx, p, latQueue, pgq.QueueConfig{TickerMaxLag: pgq.Ptr(maxLag)}); err != nil {
		return nil, err
	}
	for _, c := range []string{"listen", "poll"} {
		if _, err := pgq.RegisterConsumer(ctx, p, latQueue, c); err != nil {
			return nil, err
		}
	}
	quiet := slog.New(slog.DiscardHandler)
	tk, err := ticker.New(ticker.Config{
		Servers:    []ticker.Server{{ConnString: env.BaseDSN(), Databases: []string{db.Name}}},
		TickPeriod: tick,
		Logger:     quiet,
	})
	if err != nil {
		return nil, err
	}
	f.tk = tk
	lc, err := consumer.New(p, consumer.Config{Queue: latQueue, Name: "listen", Logger: quiet}, f.listen.handler())
	if err != nil {
		return nil, err
	}
	pc, err := consumer.New(p, consumer.Config{Queue: latQueue, Name: "poll", DisableListen: true,
		PollInterval: pollInterval, Logger: quiet}, f.poll.handler())
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f.cancel = cancel
	for _, r := range []interface{ Run(context.Context) error }{tk, lc, pc} {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			if err := r.Run(rctx); err != nil {
				f.errMu.Lock()
				f.err = err
				f.errMu.Unlock()
			}
		}()
	}
	return f, nil
}

func (f *latencyFixture) close() {
	f.once.Do(func() {
		f.cancel()
		f.wg.Wait()
	})
}

// latencySample is one run's latencies (ms) for both consumers.
type latencySample struct {
	listen, poll []float64
}

// run produces events for runTime, one every ~5 ms (uniform 2.5–7.5 ms),
// each in its own transaction, and returns commit → handler latencies.
func (f *latencyFixture) run(ctx context.Context) (latencySample, error) {
	type sent struct {
		id     int64
		commit time.Time
	}
	var evs []sent
	end := time.Now().Add(f.runTime)
	for time.Now().Before(end) {
		id, err := pgq.InsertEvent(ctx, f.db.Pool, latQueue, benchEvent(len(evs)))
		if err != nil {
			return latencySample{}, err
		}
		evs = append(evs, sent{id, time.Now()})
		time.Sleep(f.every/2 + rand.N(f.every))
	}
	if f.produced != nil {
		f.produced()
	}
	deadline := time.Now().Add(3*pollInterval + time.Second + f.runTime)
	var s latencySample
	for _, e := range evs {
		for _, r := range []struct {
			rc  *receiver
			out *[]float64
		}{{f.listen, &s.listen}, {f.poll, &s.poll}} {
			for {
				if t, ok := r.rc.get(e.id); ok {
					*r.out = append(*r.out, float64(t.Sub(e.commit))/float64(time.Millisecond))
					break
				}
				f.errMu.Lock()
				err := f.err
				f.errMu.Unlock()
				if err != nil {
					return s, err
				}
				if time.Now().After(deadline) {
					return s, fmt.Errorf("event %d not delivered within %v", e.id, 3*pollInterval+time.Second)
				}
				select {
				case <-ctx.Done():
					return s, ctx.Err()
				case <-time.After(5 * time.Millisecond):
				}
			}
		}
	}
	return s, nil
}

func (s *suite) latencyFamily(ctx context.Context) error {
	rt := time.Duration(float64(latencyRunTime) * min(1, s.o.Scale))
	rt = max(rt, 300*time.Millisecond)
	f, err := newLatencyFixture(ctx, s.env, "latency", rt, latencyTick, latencyMaxLag)
	if err != nil {
		return err
	}
	defer s.env.DropDB(f.db)
	defer f.close()
	// Let the ticker take its lock and the consumers start.
	time.Sleep(200 * time.Millisecond)
	var lp50, lp99, pp50, pp99 []float64
	samples := 0
	for run := range s.o.Runs {
		smp, err := f.run(ctx)
		if err != nil {
			return fmt.Errorf("latency: %w", err)
		}
		samples += len(smp.listen)
		lp50 = append(lp50, percentile(smp.listen, 50))
		lp99 = append(lp99, percentile(smp.listen, 99))
		pp50 = append(pp50, percentile(smp.poll, 50))
		pp99 = append(pp99, percentile(smp.poll, 99))
		s.logf("latency run %d (%d events): wake-ups on p50 %.1f ms p99 %.1f ms; polling p50 %.0f ms p99 %.0f ms",
			run+1, len(smp.listen), lp50[run], lp99[run], pp50[run], pp99[run])
	}
	on := Result{Case: "latency insert-commit → handler, tick period 10 ms, wake-ups on", Unit: "ms",
		Ours: median(lp50), OursRuns: lp50, Target: "p50 ≤ 15 ms, p99 ≤ 50 ms", Events: samples,
		Values: map[string]float64{"p50_ms": median(lp50), "p99_ms": median(lp99)}}
	on.oursText = fmt.Sprintf("p50 %.1f ms / p99 %.1f ms", median(lp50), median(lp99))
	on.ceilText = fmt.Sprintf("tick period %v", latencyTick)
	met := median(lp50) <= 15 && median(lp99) <= 50
	on.Met = &met
	on.Note = fmt.Sprintf("ticker library in-process at %v with NOTIFY; queue ticker_max_lag set to %v "+
		"(PgQ's default 3 s would dominate); one event every ~%v, each its own transaction; "+
		"p50/p99 per run, median of runs; %d events", latencyTick, latencyMaxLag, latencyInterval, samples)
	s.add(on)
	off := Result{Case: "same, wake-ups off (polling 1 s)", Unit: "ms",
		Ours: median(pp50), OursRuns: pp50, Target: "report", Events: samples,
		Values: map[string]float64{"p50_ms": median(pp50), "p99_ms": median(pp99)}}
	off.oursText = fmt.Sprintf("p50 %.0f ms / p99 %.0f ms", median(pp50), median(pp99))
	off.ceilText = "—"
	off.Note = "consumer DisableListen, PollInterval 1 s, same ticker and events"
	s.add(off)
	f.close() // its ticker must not run beside the next case's
	if err := s.scheduleCase(ctx, rt); err != nil {
		return err
	}
	if err := s.slowQueueCase(ctx); err != nil {
		return err
	}
	return s.retryCase(ctx)
}

// Slow queue case (issue 13 goal 3): 5 events/s, each its own
// transaction, ticker 10 ms, ticker_max_lag 10 ms. An event whose commit
// races a tick (the tick counts it without seeing it) waits, with PgQ
// alone, for the next event or the idle period.
const (
	slowEvery   = 200 * time.Millisecond
	slowRunTime = 8 * time.Second
)

func (s *suite) slowQueueCase(ctx context.Context) error {
	rt := max(time.Duration(float64(slowRunTime)*min(1, s.o.Scale)), 2*time.Second)
	f, err := newLatencyFixture(ctx, s.env, "slow", rt, latencyTick, latencyMaxLag)
	if err != nil {
		return err
	}
	defer s.env.DropDB(f.db)
	defer f.close()
	f.every = slowEvery
	// A fresh queue's first event does not move its event sequence (the
	// sequence starts uncalled), so no tick counts it until the next event
	// or the idle tick: a PgQ quirk apart from the commit race. One event
	// is sent and delivered before the runs.
	id, err := pgq.InsertEvent(ctx, f.db.Pool, latQueue, benchEvent(0))
	if err != nil {
		return err
	}
	deadline := time.Now().Add(time.Minute)
	for {
		if _, ok := f.listen.get(id); ok {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("slow queue: warm-up event not delivered in a minute")
		}
		time.Sleep(5 * time.Millisecond)
	}
	var p50, p99, worst []float64
	samples := 0
	for run := range s.o.Runs {
		smp, err := f.run(ctx)
		if err != nil {
			return fmt.Errorf("slow queue: %w", err)
		}
		samples += len(smp.listen)
		p50 = append(p50, percentile(smp.listen, 50))
		p99 = append(p99, percentile(smp.listen, 99))
		worst = append(worst, slices.Max(smp.listen))
		s.logf("slow queue run %d (%d events): p50 %.1f ms p99 %.1f ms max %.1f ms", run+1, len(smp.listen), p50[run], p99[run], worst[run])
	}
	allP99, allMax := slices.Max(p99), slices.Max(worst)
	met := allP99 <= 30 && allMax <= 60
	r := Result{Case: "slow queue, 5 events/s, ticker 10 ms, ticker_max_lag 10 ms: insert-commit → handler", Unit: "ms",
		Ours: median(p99), OursRuns: p99, Target: "p99 ≤ 30 ms, max ≤ 60 ms", Met: &met, Events: samples,
		Values: map[string]float64{"p50_ms": median(p50), "p99_ms": allP99, "max_ms": allMax}}
	r.oursText = fmt.Sprintf("p50 %.1f ms / p99 %.1f ms / max %.1f ms", median(p50), allP99, allMax)
	r.ceilText = "before the commit-race ticks (issue 13): p99 205 ms, max 402 ms"
	r.Note = "one event every 100–300 ms, each its own transaction, consumer with wake-ups; p99 and max are the worst of the runs"
	s.add(r)
	return nil
}

// scheduleCase is issue 13's goal 2: ticker period 100 ms, a busy queue
// with ticker_max_lag 100 ms. It reports the share of the ticker's rounds
// that ticked the queue and the wake-ups-on latency's p90 and p99.
func (s *suite) scheduleCase(ctx context.Context, rt time.Duration) error {
	rt = max(rt, 2*time.Second)
	f, err := newLatencyFixture(ctx, s.env, "schedule", rt, scheduleTick, scheduleMaxLag)
	if err != nil {
		return err
	}
	defer s.env.DropDB(f.db)
	defer f.close()
	time.Sleep(300 * time.Millisecond) // the ticker's lock, the consumers' start
	var share, p90, p99 []float64
	samples := 0
	for run := range s.o.Runs {
		// Rounds while events are produced (afterwards the queue idles
		// while the polling consumer is waited for).
		st0 := f.tickerStats()
		var st1 ticker.DatabaseStats
		f.produced = func() { st1 = f.tickerStats() }
		smp, err := f.run(ctx)
		if err != nil {
			return fmt.Errorf("tick schedule: %w", err)
		}
		rounds, ticks := st1.TickRuns-st0.TickRuns, st1.Ticks-st0.Ticks
		if rounds == 0 {
			return fmt.Errorf("tick schedule: no ticker round in %v", rt)
		}
		samples += len(smp.listen)
		share = append(share, float64(ticks)/float64(rounds))
		p90 = append(p90, percentile(smp.listen, 90))
		p99 = append(p99, percentile(smp.listen, 99))
		s.logf("tick schedule run %d: %d of %d rounds ticked the queue; p90 %.0f ms p99 %.0f ms (%d events)",
			run+1, ticks, rounds, p90[run], p99[run], len(smp.listen))
	}
	met := median(share) >= 0.95 && median(p90) <= 110 && median(p99) <= 130
	r := Result{Case: "busy queue, ticker period 100 ms, ticker_max_lag 100 ms: rounds that tick it; insert-commit → handler", Unit: "ms",
		Ours: median(p90), OursRuns: p90, Target: "≥ 95 % of rounds, p90 ≤ 110 ms, p99 ≤ 130 ms", Met: &met, Events: samples,
		Values: map[string]float64{"rounds_ticked": median(share), "p90_ms": median(p90), "p99_ms": median(p99)}}
	r.oursText = fmt.Sprintf("%.0f %% of rounds; p90 %.0f ms / p99 %.0f ms", 100*median(share), median(p90), median(p99))
	r.ceilText = "pgqd (issue 13): p90 107 / p99 168 ms"
	r.Note = "rounds while the events are produced; every round of the ticker counts (its period, tick requests: none here, and rounds brought forward for a queue due sooner); " +
		"one event every ~5 ms, each its own transaction, consumer with wake-ups"
	s.add(r)
	return nil
}
