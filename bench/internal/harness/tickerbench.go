package harness

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/ticker"
)

// Size of the ticker case at scale 1.
const tickerQueues = 1000

// manyQueues is a database with nq queues.
type manyQueues struct {
	env *Env
	db  *DB
	nq  int
}

func newManyQueues(ctx context.Context, env *Env, nq int) (*manyQueues, error) {
	db, err := env.CreateDB(ctx, "queues", true, 4)
	if err != nil {
		return nil, err
	}
	// create_queue makes 3 tables, 3 indexes and 2 sequences: 100 per
	// transaction stays well inside max_locks_per_transaction.
	for i := 0; i < nq; i += 100 {
		tx, err := db.Pool.Begin(ctx)
		if err != nil {
			return nil, err
		}
		b := &pgx.Batch{}
		for j := i; j < min(i+100, nq); j++ {
			b.Queue("select pgq.create_queue($1)", "q"+strconv.Itoa(j))
		}
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			_ = tx.Rollback(ctx)
			return nil, err
		}
		if err := tx.Commit(ctx); err != nil {
			return nil, err
		}
	}
	return &manyQueues{env: env, db: db, nq: nq}, nil
}

// setBusy makes every queue tick on every ticker call (ticker_max_lag and
// ticker_idle_period 0), or restores PgQ's defaults (3 s, 1 min).
func (m *manyQueues) setBusy(ctx context.Context, busy bool) error {
	lag, idle := "0", "0"
	if !busy {
		lag, idle = "3 seconds", "1 minute"
	}
	_, err := m.db.Pool.Exec(ctx, `select pgq.set_queue_config(queue_name, 'ticker_max_lag', $1),
		pgq.set_queue_config(queue_name, 'ticker_idle_period', $2) from pgq.queue`, lag, idle)
	return err
}

// ceiling times PgQ's own "select pgq.ticker()" (one statement ticking
// every due queue), the mean of calls calls, in ms.
func (m *manyQueues) ceiling(ctx context.Context, calls int) (float64, error) {
	start := time.Now()
	for range calls {
		if _, err := pgq.Ticker(ctx, m.db.Pool); err != nil {
			return 0, err
		}
	}
	return float64(time.Since(start)) / float64(time.Millisecond) / float64(calls), nil
}

// ours runs the ticker library (TickPeriod 1 ms, the smallest, so rounds
// run back to back once a round takes longer than that) for window and
// returns ms per round and queue ticks per round.
func (m *manyQueues) ours(ctx context.Context, window time.Duration) (msPerRound, ticksPerRound float64, err error) {
	tk, err := ticker.New(ticker.Config{
		Servers:     []ticker.Server{{ConnString: m.env.BaseDSN(), Databases: []string{m.db.Name}}},
		TickPeriod:  time.Millisecond,
		RetryPeriod: time.Hour,
		MaintPeriod: time.Hour,
		StatsPeriod: time.Hour,
		Logger:      slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return 0, 0, err
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- tk.Run(rctx) }()
	defer func() {
		cancel()
		<-done
	}()
	snap := func() ticker.DatabaseStats {
		if s := tk.Snapshot(); len(s) > 0 {
			return s[0]
		}
		return ticker.DatabaseStats{}
	}
	// Skip the start-up (connect, lock, first retry and maintenance).
	deadline := time.Now().Add(30 * time.Second)
	for snap().TickRuns < 2 {
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("ticker did not start: %+v", snap())
		}
		time.Sleep(5 * time.Millisecond)
	}
	a, t0 := snap(), time.Now()
	time.Sleep(window)
	b, t1 := snap(), time.Now()
	rounds := b.TickRuns - a.TickRuns
	if rounds == 0 {
		return 0, 0, fmt.Errorf("no tick round in %v", window)
	}
	if b.Errors > 0 {
		return 0, 0, fmt.Errorf("ticker errors: %s", b.LastError)
	}
	return float64(t1.Sub(t0)) / float64(time.Millisecond) / float64(rounds),
		float64(b.Ticks-a.Ticks) / float64(rounds), nil
}

func (s *suite) tickerFamily(ctx context.Context) error {
	nq := s.o.n(tickerQueues)
	start := time.Now()
	m, err := newManyQueues(ctx, s.env, nq)
	if err != nil {
		return err
	}
	defer s.env.DropDB(m.db)
	s.logf("ticker: created %d queues in %.1fs", nq, time.Since(start).Seconds())
	window := time.Duration(float64(2*time.Second) * min(1, max(s.o.Scale, 0.25)))
	for _, busy := range []bool{true, false} {
		if err := m.setBusy(ctx, busy); err != nil {
			return err
		}
		if !busy {
			// One round to tick the queues the busy phase left due.
			if _, err := m.ceiling(ctx, 1); err != nil {
				return err
			}
		}
		var ours, ceil, ticks []float64
		for run := range s.o.Runs {
			c, err := m.ceiling(ctx, 5)
			if err != nil {
				return err
			}
			o, tpr, err := m.ours(ctx, window)
			if err != nil {
				return err
			}
			ours, ceil, ticks = append(ours, o), append(ceil, c), append(ticks, tpr)
			s.logf("ticker busy=%v run %d: ours %.1f ms/round (%.0f queue ticks/round), pgq.ticker() %.1f ms", busy, run+1, o, tpr, c)
		}
		r := Result{Unit: "ms", Ours: median(ours), OursRuns: ours, Ceiling: median(ceil), CeilingRuns: ceil,
			CeilingWhat: "select pgq.ticker()", Target: "report",
			Values: map[string]float64{"queue_ticks_per_round": median(ticks)}}
		var ratios []float64
		for i := range ours {
			ratios = append(ratios, ceil[i]/ours[i])
		}
		r.Ratio = median(ratios)
		r.oursText = fmt.Sprintf("%.1f ms per round", r.Ours)
		if busy {
			r.Case = fmt.Sprintf("%s queues ticked by one ticker, every queue ticks", count(nq))
			r.Note = fmt.Sprintf("ticker library, one database, TickPeriod 1 ms so rounds run back to back; every queue due "+
				"(ticker_max_lag = ticker_idle_period = 0), %.0f queue ticks + NOTIFYs per round; ratio = pgq.ticker() time / ours", median(ticks))
		} else {
			r.Case = fmt.Sprintf("%s queues ticked by one ticker, idle round", count(nq))
			r.Note = "same, PgQ's default queue settings and no events: a round checks every queue and ticks none " +
				"(rounds shorter than 1 ms would read as 1 ms)"
		}
		s.add(r)
	}
	return nil
}
