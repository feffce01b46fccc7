package harness

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
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
}

func newLatencyFixture(ctx context.Context, env *Env, runTime time.Duration) (*latencyFixture, error) {
	db, err := env.CreateDB(ctx, "latency", true, 8)
	if err != nil {
		return nil, err
	}
	f := &latencyFixture{db: db, listen: &receiver{recv: map[int64]time.Time{}},
		poll: &receiver{recv: map[int64]time.Time{}}, runTime: runTime, every: latencyInterval}
	p := db.Pool
	if _, err := pgq.CreateQueue(ctx, p, latQueue); err != nil {
		return nil, err
	}
	if err := pgq.SetQueueConfig(ctx, p, latQueue, pgq.QueueConfig{TickerMaxLag: pgq.Ptr(latencyMaxLag)}); err != nil {
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
		TickPeriod: latencyTick,
		Logger:     quiet,
	})
	if err != nil {
		return nil, err
	}
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
	f.cancel()
	f.wg.Wait()
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
	deadline := time.Now().Add(3*pollInterval + time.Second)
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
	f, err := newLatencyFixture(ctx, s.env, rt)
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
	return nil
}
