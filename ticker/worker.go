package ticker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync/atomic"
	"time"

	"github.com/pgq-go/pgq/internal/backoff"
	"github.com/pgq-go/pgq/internal/logging"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgq-go/pgq/pgq"
)

// worker serves one database: its own goroutine, its own connection.
type worker struct {
	t        *Ticker
	key      dbKey
	server   string
	explicit atomic.Bool // named in Databases (vs discovered): louder about missing pgq
	st       *stats
	log      *slog.Logger
	wake     chan struct{}
	cancel   context.CancelFunc
	done     chan struct{}

	watch   map[string][]int64 // queue → transactions its last tick saw in progress (race.go)
	foreign foreignWatch       // ticks made by another ticker (foreign.go)
}

func newWorker(t *Ticker, k dbKey, explicit bool) *worker {
	w := &worker{
		t:      t,
		key:    k,
		server: serverLabel(k.conn),
		st:     &stats{},
		watch:  map[string][]int64{},
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	w.explicit.Store(explicit)
	w.st.s = DatabaseStats{Server: w.server, Database: k.db, State: StateConnecting, Since: time.Now()}
	w.log = t.config().Logger.With("server", w.server, "db", k.db)
	return w
}

func (w *worker) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// sleep waits d, or less when poked (a reload); it reports false when ctx
// is done.
func (w *worker) sleep(ctx context.Context, d time.Duration) bool {
	return backoff.Wait(ctx, d, w.wake)
}

var errNoPgq = errors.New("no usable pgq")

func (w *worker) run(ctx context.Context) {
	defer close(w.done)
	failures := 0
	for {
		err := w.session(ctx)
		if ctx.Err() != nil {
			return
		}
		cfg := w.t.config()
		var wait time.Duration
		switch {
		case err == nil: // connection recycled
			failures = 0
		case errors.Is(err, errNoPgq):
			failures = 0
			wait = cfg.CheckPeriod
		default:
			w.st.fail(err)
			w.st.setState(StateFailing)
			failures++
			wait = backoff.Policy{Initial: cfg.MinBackoff, Max: cfg.MaxBackoff, Multiplier: 2}.Delay(failures)
			w.log.Warn("ticker: database failing; retrying", logging.KeyErr, err, logging.KeyBackoff, wait)
		}
		if !w.sleep(ctx, wait) {
			return
		}
	}
}

// session connects, checks pgq, takes the advisory lock (standing by while
// another ticker holds it) and ticks until an error, ctx, or the end of the
// connection's lifetime (nil error).
func (w *worker) session(ctx context.Context) error {
	cfg := w.t.config()
	pc, err := pgx.ParseConfig(w.key.conn)
	if err != nil {
		return err
	}
	pc.Database = w.key.db
	pc.RuntimeParams["application_name"] = "pgq-go ticker"
	cctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	conn, err := pgx.ConnectConfig(cctx, pc)
	cancel()
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn.Close(cctx)
	}()
	born := time.Now()

	if err := pgq.CheckExtension(ctx, conn); err != nil {
		if !errors.Is(err, pgq.ErrNoExtension) {
			return err
		}
		if w.st.setState(StateNoPgq) {
			level := slog.LevelDebug
			if w.explicit.Load() {
				level = slog.LevelWarn
			}
			w.log.Log(ctx, level, "ticker: database has no usable pgq; will check again", logging.KeyErr, err, "check_period", cfg.CheckPeriod)
		}
		w.st.update(func(s *DatabaseStats) { s.ConsecutiveErrors = 0 })
		return errNoPgq
	}
	version, err := pgq.Version(ctx, conn)
	if err != nil {
		return err
	}
	w.st.update(func(s *DatabaseStats) { s.Version = version })

	for {
		var locked bool
		if err := conn.QueryRow(ctx, "select pg_try_advisory_lock($1)", LockKey).Scan(&locked); err != nil {
			return fmt.Errorf("advisory lock: %w", err)
		}
		if locked {
			break
		}
		w.st.update(func(s *DatabaseStats) { s.ConsecutiveErrors = 0 })
		if w.st.setState(StateStandby) {
			w.log.Info("ticker: another ticker holds the database's advisory lock; standing by",
				"lock_key", LockKey, "retry_period", w.t.config().LockRetryPeriod)
		}
		if time.Since(born) >= w.t.config().ConnectionLifetime {
			return nil
		}
		if !w.sleep(ctx, w.t.config().LockRetryPeriod) {
			return ctx.Err()
		}
	}
	if w.st.setState(StateTicking) {
		w.log.Info("ticker: ticking", "pgq_version", version)
	}
	return w.serve(ctx, conn, born)
}

// schedule holds when each periodic operation is next due.
type schedule struct {
	tick, retry, maint, recycle time.Time
	lastTick                    time.Time // the last tick round
}

// serve runs the periodic operations on conn, which holds the lock.
func (w *worker) serve(ctx context.Context, conn *pgx.Conn, born time.Time) error {
	cfg := w.t.config()
	now := time.Now()
	// Retry and maintenance run at once on every (re)connection, then
	// every period, so a restart does not postpone rotation by MaintPeriod.
	sc := &schedule{tick: now, retry: now, maint: now, recycle: born.Add(cfg.ConnectionLifetime)}
	// Tick requests (pgq.TickRequestChannel) arrive on this connection.
	if _, err := conn.Exec(ctx, "listen "+pgx.Identifier{pgq.TickRequestChannel}.Sanitize()); err != nil {
		return fmt.Errorf("listen for tick requests: %w", err)
	}
	w.foreign = foreignWatch{last: w.foreign.last} // a new connection looks afresh
	for {
		if err := w.lookForeign(ctx, conn); err != nil {
			return err
		}
		if err := w.tickIfDue(ctx, conn, sc); err != nil {
			return err
		}
		if !time.Now().Before(sc.retry) {
			if err := w.retry(ctx, conn, sc); err != nil {
				return err
			}
			sc.retry = time.Now().Add(w.t.config().RetryPeriod)
		}
		if !time.Now().Before(sc.maint) {
			if err := w.maint(ctx, conn, sc); err != nil {
				return err
			}
			sc.maint = time.Now().Add(w.t.config().MaintPeriod)
		}
		if !time.Now().Before(sc.recycle) {
			w.log.Debug("ticker: recycling connection", "lifetime", w.t.config().ConnectionLifetime)
			w.st.setState(StateConnecting)
			return nil
		}
		next := sc.tick
		for _, t := range []time.Time{sc.retry, sc.maint, sc.recycle} {
			if t.Before(next) {
				next = t
			}
		}
		requested, reloaded, err := w.waitRequest(ctx, conn, next)
		if err != nil {
			return err
		}
		if requested {
			// A round soon, not at once: requests from many producers
			// share it.
			sc.tick = earliest(sc.tick, sc.lastTick.Add(min(w.t.config().TickPeriod/8, maxRequestGap)))
			w.st.update(func(s *DatabaseStats) { s.TickRequests++ })
		}
		if reloaded { // new periods apply from now if sooner
			cfg := w.t.config()
			now := time.Now()
			sc.tick = earliest(sc.tick, now.Add(cfg.TickPeriod))
			sc.retry = earliest(sc.retry, now.Add(cfg.RetryPeriod))
			sc.maint = earliest(sc.maint, now.Add(cfg.MaintPeriod))
			sc.recycle = earliest(sc.recycle, born.Add(cfg.ConnectionLifetime))
		}
	}
}

// dueMargin is how long after a queue's computed due time its round
// runs: the round's statement must find ticker_max_lag reached.
const dueMargin = time.Millisecond

// maxRequestGap bounds the time between tick rounds that requests
// (pgq.TickRequestChannel) can ask for; below it, requests share a round.
// The gap is TickPeriod/8 when that is shorter.
const maxRequestGap = 25 * time.Millisecond

// waitRequest waits on conn until the time until, a tick request
// (requested), a reload (reloaded) or ctx's end. An error means the
// connection is broken or ctx ended.
func (w *worker) waitRequest(ctx context.Context, conn *pgx.Conn, until time.Time) (requested, reloaded bool, err error) {
	wctx, cancel := context.WithDeadline(ctx, until)
	defer cancel()
	var reload bool
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-w.wake:
			reload = true
			cancel()
		case <-stop:
		}
	}()
	n, err := conn.WaitForNotification(wctx)
	close(stop)
	<-done // reload is settled
	switch {
	case err == nil:
		return n.Channel == pgq.TickRequestChannel, reload, nil
	case ctx.Err() != nil:
		return false, false, ctx.Err()
	case wctx.Err() != nil && !conn.IsClosed():
		return false, reload, nil // the time came, or a reload
	default:
		return false, false, fmt.Errorf("wait for tick requests: %w", err)
	}
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// tickIfDue ticks when the tick is due and schedules the next one on the
// TickPeriod cadence (missed ticks are skipped, not bunched).
func (w *worker) tickIfDue(ctx context.Context, conn *pgx.Conn, sc *schedule) error {
	now := time.Now()
	if now.Before(sc.tick) {
		return nil
	}
	// The next round comes a TickPeriod after this one starts (as pgqd
	// waits a period after each round), not on a fixed grid: on a grid,
	// a round woken a little earlier than the one before saw a queue's
	// last tick younger than a ticker_max_lag equal to the period, and
	// skipped it (a third of the rounds at 100 ms). The round itself may
	// bring it forward (a queue due sooner, a retry).
	sc.tick = now.Add(w.t.config().TickPeriod)
	sc.lastTick = now
	return w.tick(ctx, conn, sc)
}

// sqlTick ticks every queue pgq.ticker() would tick, in one statement (so
// one transaction, like pgq.ticker()), and says which queues ticked.
//
// pgq.ticker(queue) costs a PL/pgSQL call with a dynamic EXECUTE (the
// event sequence's value) per queue and round, idle or not: 64 idle
// databases at a 200 ms period cost the server about 0.1 CPU. So the WHERE
// first applies pgq.ticker's own thresholds in plain SQL, and calls it
// only for the queues that pass; pgq.ticker then decides as always. The
// test is pgq 3.5's: tick when the queue has no tick yet; with new events
// (the sequence moved), when there are ticker_max_count of them or the
// last tick is ticker_max_lag old; without, unless the last tick is
// younger than half ticker_max_lag, or (the back-off) younger than twice
// the gap before it and than ticker_idle_period. The event sequence is
// read with pg_sequence_last_value, which gives NULL for a sequence not
// used yet: that is its start value (what pgq.seq_getval reads) when the
// last tick recorded that value. A sequence the role may not read, or
// still NULL, sends the queue to pgq.ticker. The third column is the
// round's own txid once a tick gave it one (the race watch leaves it
// out): read above the subquery, so after the pgq.ticker calls of the
// rows before it (a plain column would be computed below the sort, before
// any of them). The fourth is in how many seconds the next retry event is
// due by the server's clock (one index lookup; the statement returns one
// row of NULLs when no queue ticks), so retry maintenance runs then, not
// only every RetryPeriod. The fifth is in how many seconds the first queue
// holding new events that is not due yet will be (its last tick plus
// ticker_max_lag): the next round runs then, not up to a TickPeriod later.
const sqlTick = `with st as materialized (select q.queue_name, q.queue_ticker_max_lag as max_lag, t.tick_time, s.new_events,
		coalesce(t.tick_id is null or s.new_events is null
		    or (s.new_events > 0 and (s.new_events >= q.queue_ticker_max_count or s.lag >= q.queue_ticker_max_lag))
		    or (s.new_events <= 0 and s.lag >= q.queue_ticker_max_lag / 2
		      and (t2.tick_time is null or s.lag >= (t.tick_time - t2.tick_time) * 2 or s.lag >= q.queue_ticker_idle_period)),
		  false) as due
	from pgq.queue q
	left join lateral (select t.tick_id, t.tick_time, t.tick_event_seq from pgq.tick t
		where t.tick_queue = q.queue_id order by t.tick_queue desc, t.tick_id desc limit 1) t on true
	left join lateral (select t2.tick_time from pgq.tick t2
		where t2.tick_queue = q.queue_id and t2.tick_id < t.tick_id
		order by t2.tick_queue desc, t2.tick_id desc limit 1) t2 on true
	cross join lateral (select case when has_sequence_privilege(q.queue_event_seq, 'select, usage')
		then coalesce(pg_sequence_last_value(q.queue_event_seq::regclass),
			(select sq.seqstart from pg_catalog.pg_sequence sq
				where sq.seqrelid = q.queue_event_seq::regclass and sq.seqstart = t.tick_event_seq))
		end - t.tick_event_seq as new_events,
		now() - t.tick_time as lag) s
	where not q.queue_external_ticker and not q.queue_ticker_paused)
	select x.queue_name, x.tick_id, x.own, r.next_retry, r.next_due
	from (select (select extract(epoch from min(ev_retry_after) - now())::float8 from pgq.retry_queue) as next_retry,
		(select extract(epoch from min(tick_time + max_lag) - now())::float8 from st
			where not due and new_events > 0) as next_due) r
	left join lateral (select queue_name, tick_id, txid_current_if_assigned() as own from (
		select queue_name, pgq.ticker(queue_name) as tick_id from st where due
		order by queue_name offset 0) ticked offset 0) x on true`

// sqlNotify wakes the consumers of the queues that ticked; the payload is
// the tick id.
const sqlNotify = `select pg_notify(ch, id::text) from unnest($1::text[], $2::int8[]) as u(ch, id)`

func (w *worker) tick(ctx context.Context, conn *pgx.Conn, sc *schedule) error {
	if err := w.forceEnded(ctx, conn); err != nil {
		return err
	}
	// The period runs from the tick statement, whose transaction time the
	// ticks get: the race watch's statement before it takes a round trip
	// in some rounds only.
	sc.tick = time.Now().Add(w.t.config().TickPeriod)
	rows, err := conn.Query(ctx, sqlTick)
	if err != nil {
		return fmt.Errorf("ticker: %w", err)
	}
	var (
		name      *string
		id, own   *int64
		nextRetry *float64
		nextDue   *float64
		self      int64 // the round's txid, if a tick assigned one
		channels  []string
		queues    []string
		ids       []int64
	)
	_, err = pgx.ForEachRow(rows, []any{&name, &id, &own, &nextRetry, &nextDue}, func() error {
		if own != nil {
			self = max(self, *own)
		}
		if name != nil && id != nil {
			channels = append(channels, pgq.NotifyChannel(*name))
			queues = append(queues, *name)
			ids = append(ids, *id)
		}
		if nextRetry != nil {
			sc.retry = earliest(sc.retry, time.Now().Add(time.Duration(*nextRetry*float64(time.Second))))
		}
		if nextDue != nil {
			// A little after: the server must see the lag reached.
			d := max(time.Duration(*nextDue*float64(time.Second)), 0) + dueMargin
			sc.tick = earliest(sc.tick, time.Now().Add(d))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ticker: %w", err)
	}
	w.foreign.note(queues)
	if err := w.watchTicks(ctx, conn, queues, ids, self); err != nil {
		return err
	}
	now := time.Now()
	w.st.update(func(s *DatabaseStats) {
		s.TickRuns++
		s.Ticks += int64(len(ids))
		s.LastSuccess = now
		s.ConsecutiveErrors = 0
		for _, id := range ids {
			s.LastTickID = max(s.LastTickID, id)
		}
	})
	if len(ids) == 0 || w.t.config().DisableNotify {
		return nil
	}
	if _, err := conn.Exec(ctx, sqlNotify, channels, ids); err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	w.st.update(func(s *DatabaseStats) { s.Notifies += int64(len(ids)) })
	return nil
}

// sqlRetry moves due retry events back into their queues (at most 10 a
// call, pgq.maint_retry_events) and names the queues that had some due.
const sqlRetry = `with due as materialized (select coalesce(array_agg(distinct q.queue_name), '{}') as names
		from pgq.retry_queue r join pgq.queue q on q.queue_id = r.ev_queue
		where r.ev_retry_after <= current_timestamp)
	select pgq.maint_retry_events(), due.names from due`

// retry moves due retry events back into their queues, ticking between
// calls when a tick falls due, then ticks the queues that got events back.
func (w *worker) retry(ctx context.Context, conn *pgx.Conn, sc *schedule) error {
	var total int64
	defer func() {
		if total > 0 {
			w.log.Debug("ticker: retry events moved", "events", total)
		}
	}()
	got := map[string]bool{} // queues that got events back
	for {
		var n int64
		var queues []string
		if err := conn.QueryRow(ctx, sqlRetry).Scan(&n, &queues); err != nil {
			return w.softError("maint_retry_events", conn, err)
		}
		total += n
		w.st.update(func(s *DatabaseStats) { s.RetryEvents += n })
		if n == 0 {
			break
		}
		for _, q := range queues {
			got[q] = true
		}
		if err := w.tickIfDue(ctx, conn, sc); err != nil {
			return err
		}
	}
	if len(got) == 0 {
		return nil
	}
	// The events are back in their queues: tick those now, whatever their
	// ticker_max_lag, so a retry comes back at its time (once, after the
	// whole run: a forced tick per 10 events would cut them into batches
	// of 10).
	if _, err := conn.Exec(ctx, "select pgq.force_tick(q) from unnest($1::text[]) q", slices.Collect(maps.Keys(got))); err != nil {
		return w.softError("force_tick after retry", conn, err)
	}
	sc.tick = time.Now()
	return w.tickIfDue(ctx, conn, sc)
}

// maint runs every operation pgq.maint_operations() lists, each call in
// its own transaction, ticking between them when a tick falls due.
func (w *worker) maint(ctx context.Context, conn *pgx.Conn, sc *schedule) error {
	ops, err := pgq.MaintOperations(ctx, conn)
	if err != nil {
		return w.softError("maint_operations", conn, err)
	}
	for _, op := range ops {
		var tickErr error
		calls, err := runMaintOp(ctx, conn, op, func() error {
			tickErr = w.tickIfDue(ctx, conn, sc)
			return tickErr
		})
		w.st.update(func(s *DatabaseStats) { s.MaintOps += int64(calls) })
		if tickErr != nil {
			return tickErr
		}
		if err != nil {
			if err := w.softError("maintenance "+opString(op), conn, err); err != nil {
				return err
			}
			continue
		}
		w.log.Debug("ticker: maintenance", "op", opString(op), "calls", calls)
	}
	return nil
}

// softError records a failed maintenance step. SQL errors are logged and
// the session goes on (ticking matters more); a broken connection or a
// cancelled ctx ends the session.
func (w *worker) softError(what string, conn *pgx.Conn, err error) error {
	var pe *pgconn.PgError
	if conn.IsClosed() || !errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", what, err)
	}
	w.st.fail(fmt.Errorf("%s: %w", what, err))
	w.log.Error("ticker: maintenance step failed", "op", what, logging.KeyErr, err)
	return nil
}
