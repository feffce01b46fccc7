package harness

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/ticker"
)

// Retry case (issue 13 goal 5): an event tagged TagRetry(retryDelay)
// under the ticker's defaults (TickPeriod 1 s, RetryPeriod 30 s, as
// pgqd's). Before, retry maintenance ran every RetryPeriod, so the event
// came back up to 30 s late; the target is its delay plus one tick period.
const (
	retryDelay = 2 * time.Second
	retryQueue = "rq"
)

// retryCase measures, per run, how late after its retry time a retried
// event reaches the handler again.
func (s *suite) retryCase(ctx context.Context) error {
	db, err := s.env.CreateDB(ctx, "retry", true, 4)
	if err != nil {
		return err
	}
	defer s.env.DropDB(db)
	p := db.Pool
	if _, err := pgq.CreateQueue(ctx, p, retryQueue); err != nil {
		return err
	}
	if _, err := pgq.RegisterConsumer(ctx, p, retryQueue, "c"); err != nil {
		return err
	}
	quiet := slog.New(slog.DiscardHandler)
	tk, err := ticker.New(ticker.Config{ // the defaults, pgqd's
		Servers: []ticker.Server{{ConnString: s.env.BaseDSN(), Databases: []string{db.Name}}},
		Logger:  quiet,
	})
	if err != nil {
		return err
	}
	var mu sync.Mutex
	tagged, back := map[int64]time.Time{}, map[int64]time.Time{}
	h := consumer.Events(consumer.EventHandlerFunc(func(_ context.Context, ev *pgq.Event) error {
		mu.Lock()
		defer mu.Unlock()
		if ev.Retry == 0 {
			ev.TagRetry(retryDelay)
			tagged[ev.ID] = time.Now()
		} else if _, ok := back[ev.ID]; !ok {
			back[ev.ID] = time.Now()
		}
		return nil
	}))
	c, err := consumer.New(p, consumer.Config{Queue: retryQueue, Name: "c", Logger: quiet}, h)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, r := range []interface{ Run(context.Context) error }{tk, c} {
		wg.Go(func() { _ = r.Run(rctx) })
	}
	defer func() { cancel(); wg.Wait() }()

	// A fresh queue's first event does not move its event sequence, so no
	// tick would count it until the idle period (see slowQueueCase).
	if _, err := pgq.InsertEvent(ctx, p, retryQueue, benchEvent(-1)); err != nil {
		return err
	}
	var late []float64
	for run := range s.o.Runs {
		id, err := pgq.InsertEvent(ctx, p, retryQueue, benchEvent(run))
		if err != nil {
			return err
		}
		deadline := time.Now().Add(2 * time.Minute)
		for {
			mu.Lock()
			t0, ok0 := tagged[id]
			t1, ok1 := back[id]
			mu.Unlock()
			if ok0 && ok1 {
				late = append(late, float64(t1.Sub(t0)-retryDelay)/float64(time.Millisecond))
				s.logf("retry run %d: back %.0f ms after its retry time", run+1, late[run])
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("retry: event %d not back within 2 minutes (tagged: %v)", id, ok0)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	worst := 0.0
	for _, l := range late {
		worst = max(worst, l)
	}
	period := ticker.DefaultTickPeriod
	met := worst <= float64(period/time.Millisecond)
	r := Result{Case: fmt.Sprintf("retry: TagRetry(%v), ticker defaults (TickPeriod %v, RetryPeriod %v): tag → handler again, beyond the delay",
		retryDelay, period, ticker.DefaultRetryPeriod), Unit: "ms",
		Ours: median(late), OursRuns: late, Target: fmt.Sprintf("≤ one tick period (%v)", period), Met: &met,
		Values: map[string]float64{"worst_ms": worst}}
	r.oursText = fmt.Sprintf("median %.0f ms, worst %.0f ms late", median(late), worst)
	r.ceilText = fmt.Sprintf("before (retry maintenance every RetryPeriod): up to %v late", ticker.DefaultRetryPeriod)
	r.Note = "consumer defaults; lateness = time from the handler's tag to its second delivery, minus the delay; worst of the runs against the target"
	s.add(r)
	return nil
}
