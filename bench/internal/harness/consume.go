package harness

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/remote"
)

// Sizes of the consume cases at scale 1.
const (
	consumeEvents = 1_000_000
	tickSize      = 1000
)

const (
	bigQueue   = "big_q"   // one batch of consumeEvents between t0 and t1
	ticksQueue = "ticks_q" // consumeEvents in ticks of tickSize
)

// consumeFixture holds the queues the consume cases read again and again:
// every measurement registers a fresh consumer at the start tick, so the
// same events are consumed each run.
type consumeFixture struct {
	db      *DB
	n       int
	bigT0   int64 // the big batch is (bigT0, bigT1]
	bigT1   int64
	ticksT0 int64
	ticksN  int // events in ticks_q
	seq     atomic.Int64
}

func newConsumeFixture(ctx context.Context, env *Env, n int, withTicks bool, logf func(string, ...any)) (*consumeFixture, error) {
	db, err := env.CreateDB(ctx, "consume", true, 8)
	if err != nil {
		return nil, err
	}
	f := &consumeFixture{db: db, n: n}
	p := db.Pool
	if _, err := pgq.CreateQueue(ctx, p, bigQueue); err != nil {
		return nil, err
	}
	if f.bigT0, err = pgq.Tick(ctx, p, bigQueue); err != nil {
		return nil, err
	}
	start := time.Now()
	if err := insertCommit(ctx, p, bigQueue, benchEvents(n)); err != nil {
		return nil, err
	}
	if f.bigT1, err = pgq.Tick(ctx, p, bigQueue); err != nil {
		return nil, err
	}
	logf("fixture: %s events in one batch of %s in %.1fs", count(n), bigQueue, time.Since(start).Seconds())
	if !withTicks {
		return f, nil
	}
	start = time.Now()
	if _, err := pgq.CreateQueue(ctx, p, ticksQueue); err != nil {
		return nil, err
	}
	if f.ticksT0, err = pgq.Tick(ctx, p, ticksQueue); err != nil {
		return nil, err
	}
	for i := 0; i < n; i += tickSize {
		k := min(tickSize, n-i)
		if err := insertCommit(ctx, p, ticksQueue, func(yield func(pgq.EventData) bool) {
			for j := i; j < i+k; j++ {
				if !yield(benchEvent(j)) {
					return
				}
			}
		}); err != nil {
			return nil, err
		}
		if _, err := pgq.Tick(ctx, p, ticksQueue); err != nil {
			return nil, err
		}
		f.ticksN += k
	}
	logf("fixture: %s events in %d ticks of %d in %.1fs", count(n), (n+tickSize-1)/tickSize, tickSize, time.Since(start).Seconds())
	return f, nil
}

func insertCommit(ctx context.Context, p *pgxpool.Pool, q string, evs iter.Seq[pgq.EventData]) error {
	tx, err := p.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := pgq.InsertEvents(ctx, tx, q, evs); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// register positions a fresh consumer at tick and returns its name.
func (f *consumeFixture) register(ctx context.Context, queue, prefix string, tick int64) (string, error) {
	name := prefix + "_" + strconv.FormatInt(f.seq.Add(1), 10)
	return name, pgq.RegisterConsumerAt(ctx, f.db.Pool, queue, name, tick)
}

func (f *consumeFixture) unregister(ctx context.Context, queue, name string) {
	_, _ = pgq.UnregisterConsumer(context.WithoutCancel(ctx), f.db.Pool, queue, name)
}

// runUntil runs c until the OnBatch hook has counted want events and
// returns the time from Run to that hook (the last batch committed).
// cfg.Hooks.OnBatch is set by runUntil.
func runUntil(ctx context.Context, want int, mk func(hooks consumer.Hooks) (interface{ Run(context.Context) error }, error)) (time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var got int
	var end time.Time
	var fail error
	r, err := mk(consumer.Hooks{
		OnBatch: func(st consumer.BatchStats) {
			got += st.Events
			if got >= want {
				end = time.Now()
				cancel()
			}
		},
		OnError: func(e consumer.ErrorInfo) {
			fail = e.Err
			cancel()
		},
	})
	if err != nil {
		return 0, err
	}
	start := time.Now()
	err = r.Run(ctx)
	if fail != nil {
		return 0, fail
	}
	if err != nil {
		return 0, err
	}
	if end.IsZero() {
		if ctx.Err() != nil && got < want {
			return 0, fmt.Errorf("stopped after %d of %d events: %w", got, want, context.Cause(ctx))
		}
		return 0, errors.New("consumer stopped early")
	}
	if got != want {
		return 0, fmt.Errorf("consumed %d events, want %d", got, want)
	}
	return end.Sub(start), nil
}

// consumeOurs runs a consumer.Consumer with its default configuration
// (LazyFetch 300, LISTEN on) from tick t0 until want events are consumed.
func (f *consumeFixture) consumeOurs(ctx context.Context, queue string, t0 int64, want int) (time.Duration, error) {
	return f.consumeWith(ctx, queue, t0, want, 0)
}

// consumeWith is consumeOurs with a LazyFetch (0: the default).
func (f *consumeFixture) consumeWith(ctx context.Context, queue string, t0 int64, want, lazyFetch int) (time.Duration, error) {
	name, err := f.register(ctx, queue, "ours", t0)
	if err != nil {
		return 0, err
	}
	defer f.unregister(ctx, queue, name)
	var seen int
	h := consumer.Events(consumer.EventHandlerFunc(func(_ context.Context, ev *pgq.Event) error {
		seen++
		return nil
	}))
	return runUntil(ctx, want, func(hooks consumer.Hooks) (interface{ Run(context.Context) error }, error) {
		return consumer.New(f.db.Pool, consumer.Config{Queue: queue, Name: name, LazyFetch: lazyFetch, Hooks: hooks}, h)
	})
}

// rawEvent is what the ceiling scans each row into.
type rawEvent struct {
	ID                                         int64
	Time                                       time.Time
	TxID                                       int64
	Retry                                      pgtype.Int4
	Type, Data, Extra1, Extra2, Extra3, Extra4 pgtype.Text
}

// readCeiling opens the big batch for a fresh consumer and times
// "select * from pgq.get_batch_events(id)" scanned into structs.
func (f *consumeFixture) readCeiling(ctx context.Context) (time.Duration, error) {
	name, err := f.register(ctx, bigQueue, "ceil", f.bigT0)
	if err != nil {
		return 0, err
	}
	defer f.unregister(ctx, bigQueue, name)
	info, err := pgq.NextBatch(ctx, f.db.Pool, bigQueue, name)
	if err != nil {
		return 0, err
	}
	if info == nil {
		return 0, errors.New("ceiling: no batch")
	}
	start := time.Now()
	rows, err := f.db.Pool.Query(ctx, "select * from pgq.get_batch_events($1)", info.ID)
	if err != nil {
		return 0, err
	}
	var ev rawEvent
	n := 0
	for rows.Next() {
		if err := rows.Scan(&ev.ID, &ev.Time, &ev.TxID, &ev.Retry, &ev.Type, &ev.Data,
			&ev.Extra1, &ev.Extra2, &ev.Extra3, &ev.Extra4); err != nil {
			rows.Close()
			return 0, err
		}
		n++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	d := time.Since(start)
	if n != f.n {
		return 0, fmt.Errorf("ceiling read %d events, want %d", n, f.n)
	}
	_, err = pgq.FinishBatch(ctx, f.db.Pool, info.ID)
	return d, err
}

// remoteFixture is the destination database of the remote copy case.
type remoteFixture struct {
	dst *DB
}

var dstTable = pgx.Identifier{"public", "bench_dst"}
var dstColumns = []string{"ev_id", "ev_time", "ev_type", "ev_data", "ev_extra1", "ev_extra2", "ev_extra3", "ev_extra4"}

func newRemoteFixture(ctx context.Context, env *Env) (*remoteFixture, error) {
	dst, err := env.CreateDB(ctx, "dst", false, 4)
	if err != nil {
		return nil, err
	}
	if _, err := dst.Pool.Exec(ctx, `create table public.bench_dst (ev_id bigint primary key, ev_time timestamptz,
		ev_type text, ev_data text, ev_extra1 text, ev_extra2 text, ev_extra3 text, ev_extra4 text)`); err != nil {
		return nil, err
	}
	if err := remote.Install(ctx, dst.Pool); err != nil {
		return nil, err
	}
	return &remoteFixture{dst: dst}, nil
}

func (r *remoteFixture) reset(ctx context.Context) error {
	_, err := r.dst.Pool.Exec(ctx, "truncate "+dstTable.Sanitize())
	if err == nil {
		checkpoint(ctx, r.dst)
	}
	return err
}

// eventRows feeds a streamed batch into CopyFrom.
type eventRows struct {
	next func() (*pgq.Event, error, bool)
	ev   *pgq.Event
	err  error
	row  [8]any
}

func (c *eventRows) Next() bool {
	ev, err, ok := c.next()
	if !ok || err != nil {
		c.err = err
		return false
	}
	c.ev = ev
	return true
}

func (c *eventRows) Values() ([]any, error) {
	e := c.ev
	c.row = [8]any{e.ID, e.Time, e.Type, e.Data, e.Extra1, e.Extra2, e.Extra3, e.Extra4}
	return c.row[:], nil
}

func (c *eventRows) Err() error { return c.err }

// copyHandler streams each batch into the destination table with one COPY.
var copyHandler = remote.HandlerFunc(func(ctx context.Context, b *pgq.Batch, dst pgx.Tx) error {
	next, stop := iter.Pull2(b.Events(ctx))
	defer stop()
	src := &eventRows{next: next}
	_, err := dst.CopyFrom(ctx, dstTable, dstColumns, src)
	if src.err != nil {
		return src.err
	}
	return err
})

// remoteOurs copies the big batch into the destination with a
// remote.RemoteConsumer (exactly once: batch tracking in the same
// destination transaction) whose handler streams the events into COPY.
func (f *consumeFixture) remoteOurs(ctx context.Context, r *remoteFixture) (time.Duration, error) {
	if err := r.reset(ctx); err != nil {
		return 0, err
	}
	name, err := f.register(ctx, bigQueue, "remote", f.bigT0)
	if err != nil {
		return 0, err
	}
	defer f.unregister(ctx, bigQueue, name)
	d, err := runUntil(ctx, f.n, func(hooks consumer.Hooks) (interface{ Run(context.Context) error }, error) {
		return remote.New(f.db.Pool, r.dst.Pool, remote.Config{
			Consumer: consumer.Config{Queue: bigQueue, Name: name, Hooks: hooks},
		}, copyHandler)
	})
	if err != nil {
		return 0, err
	}
	var n int
	if err := r.dst.Pool.QueryRow(ctx, "select count(*) from "+dstTable.Sanitize()).Scan(&n); err != nil {
		return 0, err
	}
	if n != f.n {
		return 0, fmt.Errorf("remote copy: %d rows on the destination, want %d", n, f.n)
	}
	return d, nil
}

// copyCeiling is the raw COPY half of the remote ceiling: the same rows
// (generated, not read) into the emptied destination table, one transaction.
func (f *consumeFixture) copyCeiling(ctx context.Context, r *remoteFixture) (time.Duration, error) {
	if err := r.reset(ctx); err != nil {
		return 0, err
	}
	start := time.Now()
	tx, err := r.dst.Pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	now := time.Now()
	i := 0
	row := make([]any, 8)
	_, err = tx.CopyFrom(ctx, dstTable, dstColumns, pgx.CopyFromFunc(func() ([]any, error) {
		if i == f.n {
			return nil, nil
		}
		e := benchEvent(i)
		i++
		row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7] = int64(i), now, e.Type, e.Data, e.Extra1, e.Extra2, e.Extra3, e.Extra4
		return row, nil
	}))
	if err != nil {
		return 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func (s *suite) consumeFamily(ctx context.Context) error {
	n := s.o.n(consumeEvents)
	f, err := newConsumeFixture(ctx, s.env, n, true, s.logf)
	if err != nil {
		return err
	}
	defer s.env.DropDB(f.db)
	rf, err := newRemoteFixture(ctx, s.env)
	if err != nil {
		return err
	}
	defer s.env.DropDB(rf.dst)

	var read, one, ticks, rem, remCeil, rss []float64
	var rssRuns []childResult
	var rows remoteRowsRuns
	rowsWant := min((s.o.n(remoteRowsEvents)+tickSize-1)/tickSize*tickSize, f.ticksN) // whole batches
	for run := range s.o.Runs {
		dRead, err := f.readCeiling(ctx)
		if err != nil {
			return fmt.Errorf("read ceiling: %w", err)
		}
		read = append(read, rate(n, dRead))
		d, err := f.consumeOurs(ctx, bigQueue, f.bigT0, n)
		if err != nil {
			return fmt.Errorf("consume one batch: %w", err)
		}
		one = append(one, rate(n, d))
		d, err = f.consumeOurs(ctx, ticksQueue, f.ticksT0, f.ticksN)
		if err != nil {
			return fmt.Errorf("consume ticks: %w", err)
		}
		ticks = append(ticks, rate(f.ticksN, d))
		d, err = f.remoteOurs(ctx, rf)
		if err != nil {
			return fmt.Errorf("remote copy: %w", err)
		}
		rem = append(rem, rate(n, d))
		dCopy, err := f.copyCeiling(ctx, rf)
		if err != nil {
			return fmt.Errorf("copy ceiling: %w", err)
		}
		remCeil = append(remCeil, rate(n, dRead+dCopy))
		s.logf("consume run %d: read ceiling %s, one batch %s, ticks %s, remote %s (ceiling %s)", run+1,
			formatRate(read[run]), formatRate(one[run]), formatRate(ticks[run]), formatRate(rem[run]), formatRate(remCeil[run]))
		msg, err := f.measureRemoteRows(ctx, rf, rowsWant, &rows)
		if err != nil {
			return err
		}
		s.logf("consume run %d: remote, %s", run+1, msg)
		if s.o.Child != nil {
			cr, err := f.rssChild(ctx, s.o.Child)
			if err != nil {
				return fmt.Errorf("peak RSS child: %w", err)
			}
			rssRuns = append(rssRuns, cr)
			rss = append(rss, float64(cr.MaxRSSKiB)/1024)
			s.logf("consume run %d: child peak RSS %.1f MiB (%s)", run+1, rss[run], formatRate(rate(cr.Events, time.Duration(cr.Seconds*float64(time.Second)))))
		}
	}
	readWhat := "select * from pgq.get_batch_events(id), pgx scan into structs"
	r := rateResult(fmt.Sprintf("consume %s events in one batch (streamed, consumer defaults)", count(n)), one, read, readWhat, "≥ 0.85", 0.85)
	r.Events = n
	s.add(r)
	// Goal 1 of issue 13: batches of tickSize against the same consumer
	// reading one batch, and what a batch costs beyond its events.
	r = rateResult(fmt.Sprintf("consume %s events in ticks of %d, against one batch", count(f.ticksN), tickSize), ticks, one,
		"the same consumer, one batch", "≥ 0.85", 0.85)
	r.Events = f.ticksN
	var over []float64
	for i := range min(len(ticks), len(one)) {
		over = append(over, (1/ticks[i]-1/one[i])*tickSize*1e6)
	}
	r.Values = map[string]float64{"overhead_us_per_batch": median(over)}
	r.Note = fmt.Sprintf("per-batch overhead %.0f µs (time per batch of %d minus the one-batch time of as many events)", median(over), tickSize)
	s.add(r)
	r = rateResult(fmt.Sprintf("remote copy %s events into another db (RemoteConsumer + COPY)", count(n)), rem, remCeil,
		"raw read + raw COPY into dst, times added", "≥ 0.70", 0.70)
	r.Events = n
	s.add(r)
	s.addRemoteRows(rowsWant, rows)
	if len(rss) > 0 {
		r := Result{Case: fmt.Sprintf("peak RSS of a consumer streaming a %s-event batch", count(n)), Unit: "MiB",
			Ours: median(rss), OursRuns: rss, Target: "≤ 64 MiB", Events: n}
		met := r.Ours <= 64
		r.Met = &met
		var heap []float64
		for _, c := range rssRuns {
			heap = append(heap, float64(c.HeapSysKiB)/1024)
		}
		r.Values = map[string]float64{"go_heap_sys_mib": median(heap)}
		r.Note = fmt.Sprintf("VmHWM (/proc/self/status) of a child process running consumer.Consumer with defaults (LazyFetch 300); Go heap from the OS %.1f MiB", median(heap))
		s.add(r)
	}
	return nil
}
