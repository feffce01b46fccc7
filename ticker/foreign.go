package ticker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Another ticker. PgQ breaks when two pgq.ticker() calls run in parallel
// on one database. Tickers of this package exclude each other with the
// advisory lock, but pgqd takes no lock, nor does anyone calling
// pgq.ticker() by hand, and a ticker reached through a transaction-pooling
// pgbouncer holds it on whatever server connection it was given. So while
// it ticks, a worker looks for ticks it did not make: every ten tick
// periods (at least a second) it counts each queue's ticks since its last
// look and subtracts those its own rounds made. A queue new since the last
// look (pgq.create_queue ticks it) is not judged, nor are external-ticker
// queues; a connection's first look only takes note. Ticks of others found
// are logged at Warn with what other sessions of the database were seen
// calling pgq.ticker (from pg_stat_activity: other roles' queries only
// when the ticker's role is a superuser or in pg_read_all_stats), once;
// the warning comes again after foreignQuiet without such ticks.

// foreignQuiet is how long without ticks of another ticker ends an
// episode: the next ones are warned of again. (An idle queue ticks about
// once per ticker_idle_period, a minute by default.)
const foreignQuiet = 10 * time.Minute

// foreignWatch is a worker's look-out for ticks it did not make.
type foreignWatch struct {
	next time.Time                   // when to look next
	seen map[string]foreignQueueMark // per queue, what the last look saw; nil: no look yet on this connection
	made map[string]int64            // per queue, ticks made since the last look
	off  bool                        // the look failed on this connection: no more

	last time.Time // when another ticker's ticks were last seen; zero: not in an episode
}

type foreignQueueMark struct {
	id   int32 // queue_id: a queue dropped and created again is new
	tick int64 // its newest tick id at the look
}

// made records the ticks of a round.
func (f *foreignWatch) note(queues []string) {
	if f.seen == nil {
		return
	}
	for _, q := range queues {
		f.made[q]++
	}
}

// sqlForeignTicks lists each queue with its newest tick and how many
// ticks came after the newest one the last look saw ($1 names, $2 ids, $3
// tick ids, parallel; an index range per queue).
const sqlForeignTicks = `select q.queue_name, q.queue_id,
		(select max(t.tick_id) from pgq.tick t where t.tick_queue = q.queue_id),
		(select count(*) from pgq.tick t where t.tick_queue = q.queue_id and t.tick_id > k.tick)
	from pgq.queue q
	left join unnest($1::text[], $2::int4[], $3::int8[]) as k(name, id, tick)
		on k.name = q.queue_name and k.id = q.queue_id
	where not q.queue_external_ticker`

// sqlOtherTickers describes the other sessions of the database whose
// last statement called pgq.ticker, and counts those whose statement the
// role may not see.
const sqlOtherTickers = `select coalesce(string_agg(format('pid %s user %s app %s from %s since %s: %s',
			a.pid, a.usename, quote_literal(a.application_name), coalesce(host(a.client_addr), 'local socket'),
			to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SS TZ'), left(a.query, 80)), '; ' order by a.backend_start)
		filter (where a.query ~* 'pgq\.ticker\s*\('), ''),
		count(*) filter (where a.query = '<insufficient privilege>')
	from pg_stat_activity a
	where a.datname = current_database() and a.pid <> pg_backend_pid()`

// lookForeign counts, when it is time, the ticks made since the last
// look by someone else and warns of them.
func (w *worker) lookForeign(ctx context.Context, conn *pgx.Conn) error {
	f := &w.foreign
	now := time.Now()
	if f.off || now.Before(f.next) {
		return nil
	}
	f.next = now.Add(max(10*w.t.config().TickPeriod, time.Second))
	var names []string
	var ids []int32
	var ticks []int64
	for q, m := range f.seen {
		names, ids, ticks = append(names, q), append(ids, m.id), append(ticks, m.tick)
	}
	rows, err := conn.Query(ctx, sqlForeignTicks, names, ids, ticks)
	if err != nil {
		return w.foreignFailed(conn, err)
	}
	var (
		name    string
		id      int32
		newest  *int64
		since   int64
		seen    = map[string]foreignQueueMark{}
		foreign int64
		queues  []string
	)
	_, err = pgx.ForEachRow(rows, []any{&name, &id, &newest, &since}, func() error {
		prev, known := f.seen[name]
		known = known && prev.id == id
		if n := since - f.made[name]; known && n > 0 {
			foreign += n
			queues = append(queues, name)
		}
		m := foreignQueueMark{id: id}
		if newest != nil {
			m.tick = *newest
		} else if known {
			m.tick = prev.tick
		}
		seen[name] = m
		return nil
	})
	if err != nil {
		return w.foreignFailed(conn, err)
	}
	first := f.seen == nil
	f.seen, f.made = seen, map[string]int64{}
	switch {
	case first:
	case foreign > 0:
		if f.last.IsZero() {
			w.warnForeign(ctx, conn, foreign, queues)
		}
		f.last = now
	case !f.last.IsZero() && now.Sub(f.last) >= foreignQuiet:
		w.log.Info("ticker: no ticks of another ticker seen lately", "quiet_for", now.Sub(f.last).Round(time.Second))
		f.last = time.Time{}
	}
	return nil
}

func (w *worker) warnForeign(ctx context.Context, conn *pgx.Conn, n int64, queues []string) {
	slices.Sort(queues)
	if len(queues) > 10 {
		queues = append(queues[:10:10], fmt.Sprintf("and %d more", len(queues)-10))
	}
	sessions := "none found calling pgq.ticker"
	var seen string
	var hidden int64
	if err := conn.QueryRow(ctx, sqlOtherTickers).Scan(&seen, &hidden); err != nil {
		sessions = "not read: " + err.Error()
	} else if seen != "" {
		sessions = seen
	}
	if hidden > 0 {
		sessions += fmt.Sprintf(" (%d other sessions' statements are hidden from this role: see pg_read_all_stats)", hidden)
	}
	w.log.Warn("ticker: another ticker is ticking this database (pgqd, or a ticker without the advisory lock): "+
		"PgQ breaks when two tick in parallel; stop the other one",
		"foreign_ticks", n, "queues", queues, "sessions", strings.TrimSpace(sessions))
}

// foreignFailed ends the look-out for this connection on an SQL error
// (logged once); a broken connection ends the session.
func (w *worker) foreignFailed(conn *pgx.Conn, err error) error {
	var pe *pgconn.PgError
	if conn.IsClosed() || !errors.As(err, &pe) {
		return fmt.Errorf("look for another ticker's ticks: %w", err)
	}
	w.foreign.off = true
	w.log.Warn("ticker: cannot look for another ticker's ticks on this connection", "err", err)
	return nil
}
