package ticker

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgq-go/pgq/internal/logging"
)

// Commit race. PgQ counts a queue's new events by its event sequence,
// which moves when an event is inserted, not when its transaction
// commits. A tick taken between the two counts the events but cannot see
// them (its snapshot has the transaction in progress); after the commit
// the sequence does not move again, so pgq.ticker() sees no new events and
// the queue waits for another insert or for its idle period (a minute by
// default) before the events reach a consumer. pgqd has the same hole.
//
// The ticker closes it: after a tick that counted new events, it keeps
// the transactions the tick's snapshot had in progress (its xip) as the
// queue's watch list; on each later round, the ended ones leave the list,
// and if one of them wrote an event to the queue (a probe of the queue's
// event tables by their ev_txid index) it forces a tick (pgq.force_tick,
// then pgq.ticker() ticks), which sees what that transaction wrote. The
// transactions still running stay watched.
// A forced tick (ours, or anyone's pgq.force_tick) moves the sequence by
// 2 × ticker_max_count + 1001 without events: a tick that moved it by at
// least that much counts only the movement beyond it as events (a tick
// whose events moved it by about exactly that much is taken for a forced
// one).
// Only a tick that counted events adds what it saw in progress to the
// watch; the others keep the watched transactions still running.

// maxWatched bounds the transactions watched per queue; beyond it the
// oldest are dropped (their events then wait as PgQ would have them).
const maxWatched = 1000

// sqlTickXip returns, for the ticks just made ($1 queues, $2 tick ids),
// how far the event sequence moved since the previous tick, the queue's
// ticker_max_count and the transactions the tick could not see that may
// hold events it counted: those its snapshot had in progress (xip), and
// those with a txid at or above the snapshot's xmax, which a snapshot
// does not list (not yet committed when it was taken, they started before
// the tick statement read the sequence, or after its snapshot): every
// txid from that xmax up to the current one, except the round's own ($3,
// which made the tick). Only ticks with such transactions come back (the
// WHERE skips, without building the array, a tick whose snapshot lists
// none and whose range holds at most the round's own txid: a busy round
// of 1,000 queues otherwise built 1,000 arrays).
//
// Transaction ids are cluster-wide, so the snapshot also lists other
// databases' transactions, which cannot have written this queue: they are
// watched too, and dropped once ended without a forced tick, because the
// probe of forceEnded finds no event of theirs in the queue. (A read of
// pg_stat_activity to keep only this database's transactions cost a tick
// round about 1 ms per 200 backends on the server, for every database.)
const sqlTickXip = `with now as materialized (select txid_current_snapshot() as snap)
	select q.queue_name, t.tick_event_seq - p.tick_event_seq, q.queue_ticker_max_count,
		array(select x from (select txid_snapshot_xip(t.tick_snapshot) as x
				union all select generate_series(txid_snapshot_xmax(t.tick_snapshot), txid_snapshot_xmax(now.snap) - 1)) xs
			where x is distinct from $3::int8)
	from now, unnest($1::text[], $2::int8[]) as u(name, id)
	join pgq.queue q on q.queue_name = u.name
	join pgq.tick t on t.tick_queue = q.queue_id and t.tick_id = u.id
	cross join lateral (select tick_event_seq from pgq.tick p
		where p.tick_queue = q.queue_id and p.tick_id < u.id
		order by p.tick_queue desc, p.tick_id desc limit 1) p
	where txid_snapshot_xmin(t.tick_snapshot) < txid_snapshot_xmax(t.tick_snapshot)
	   or txid_snapshot_xmax(now.snap) - txid_snapshot_xmax(t.tick_snapshot) > 1
	   or (txid_snapshot_xmax(now.snap) - txid_snapshot_xmax(t.tick_snapshot) = 1
	       and txid_snapshot_xmax(t.tick_snapshot) is distinct from $3::int8)`

// sqlEnded returns the watched transactions ($2, parallel to their queues
// $1) that have ended, each with its queue's event table prefix; the
// prefix is null when the queue is gone, paused or ticked by an external
// ticker (nothing to force there: those transactions are dropped).
const sqlEnded = `with now as materialized (select txid_current_snapshot() as snap)
	select u.name, u.x, q.queue_data_pfx from now cross join unnest($1::text[], $2::int8[]) as u(name, x)
	left join pgq.queue q on q.queue_name = u.name and not q.queue_external_ticker and not q.queue_ticker_paused
	where txid_visible_in_snapshot(u.x, now.snap)`

// sqlForceQueues forces a tick on the queues $1 (the fallback when their
// event tables cannot be read).
const sqlForceQueues = `select n from unnest($1::text[]) as n where pgq.force_tick(n) is not null`

// endedProbe builds the statement that forces a tick on each queue one of
// whose ended transactions wrote an event to it: one probe of the queue's
// event tables by their ev_txid index per transaction (the parent table
// pgq creates, whose children hold the events). Parameters are the queue name
// and its transactions, in pairs; the statement's text depends on the
// queues, so it is sent unprepared.
func endedProbe(queues []string, pfx map[string]string, ended map[string][]int64) (string, []any) {
	var sb strings.Builder
	sb.WriteString("with hit as materialized (")
	var args []any
	for i, q := range queues {
		if i > 0 {
			sb.WriteString(" union all ")
		}
		args = append(args, q, ended[q])
		// One index probe per transaction (a lateral LIMIT 1): "ev_txid =
		// any($n)" over tables without statistics was planned as a
		// sequential scan comparing every row with the whole array (4.6 ms
		// for 60 transactions on 20k events, against 0.7 ms).
		fmt.Fprintf(&sb, "select $%d::text as name where exists (select from unnest($%d::int8[]) as u(x)"+
			" cross join lateral (select from %s e where e.ev_txid = u.x limit 1) e)",
			len(args)-1, len(args), quoteQualified(pfx[q]))
	}
	sb.WriteString(") select name from hit where pgq.force_tick(name) is not null")
	return sb.String(), args
}

// quoteQualified quotes a [schema.]table name as pgq.quote_fqname does:
// split at the first dot, public when there is none.
func quoteQualified(name string) string {
	schema, table, ok := strings.Cut(name, ".")
	if !ok {
		schema, table = "public", name
	}
	return pgx.Identifier{schema, table}.Sanitize()
}

// forceEnded drops the watched transactions that have ended and forces a
// tick on each queue one of them wrote events to.
func (w *worker) forceEnded(ctx context.Context, conn *pgx.Conn) error {
	if len(w.watch) == 0 {
		return nil
	}
	var names []string
	var txids []int64
	for q, xs := range w.watch {
		for _, x := range xs {
			names = append(names, q)
			txids = append(txids, x)
		}
	}
	rows, err := conn.Query(ctx, sqlEnded, names, txids)
	if err != nil {
		return fmt.Errorf("ticker: commit race watch: %w", err)
	}
	var (
		name string
		x    int64
		pfx  *string
	)
	ended := map[string][]int64{}
	tables := map[string]string{}
	if _, err := pgx.ForEachRow(rows, []any{&name, &x, &pfx}, func() error {
		if pfx == nil {
			w.unwatch(name, x) // the queue is gone, paused or external: nothing to force
		} else {
			ended[name] = append(ended[name], x)
			tables[name] = *pfx
		}
		return nil
	}); err != nil {
		return fmt.Errorf("ticker: commit race watch: %w", err)
	}
	if len(ended) == 0 {
		return nil
	}
	// The ended transactions leave the watch only once the statement that
	// forces their ticks has run: if it fails (the connection is lost, the
	// server restarts), the next round looks at them again.
	queues := slices.Sorted(maps.Keys(ended))
	sql, args := endedProbe(queues, tables, ended)
	rows, err = conn.Query(ctx, sql, append([]any{pgx.QueryExecModeExec}, args...)...)
	if err == nil {
		var tag pgconn.CommandTag
		if tag, err = pgx.ForEachRow(rows, []any{&name}, func() error { return nil }); err == nil {
			w.forced(ended, tag.RowsAffected())
			return nil
		}
	}
	// The event tables could not be read (no select right, a queue
	// dropped meanwhile): tick them all, a tick too many rather than
	// events left waiting.
	w.log.Debug("ticker: commit race watch: event tables not readable; forcing the ticks", logging.KeyErr, err, "queues", queues)
	rows, err = conn.Query(ctx, sqlForceQueues, queues)
	if err != nil {
		return fmt.Errorf("ticker: force tick after a commit race: %w", err)
	}
	tag, err := pgx.ForEachRow(rows, []any{&name}, func() error { return nil })
	if err != nil {
		return fmt.Errorf("ticker: force tick after a commit race: %w", err)
	}
	w.forced(ended, tag.RowsAffected())
	return nil
}

// unwatch drops transaction x from queue's watch list.
func (w *worker) unwatch(queue string, x int64) {
	w.watch[queue] = slices.DeleteFunc(w.watch[queue], func(v int64) bool { return v == x })
	if len(w.watch[queue]) == 0 {
		delete(w.watch, queue)
	}
}

// forced records that the ticks for the ended transactions were forced
// (k of them made): those transactions leave the watch.
func (w *worker) forced(ended map[string][]int64, k int64) {
	for q, xs := range ended {
		for _, x := range xs {
			w.unwatch(q, x)
		}
	}
	if k > 0 {
		w.st.update(func(s *DatabaseStats) { s.RaceTicks += k })
	}
}

// watchTicks updates the watch lists after the ticks just made (queues
// and tick ids, parallel).
func (w *worker) watchTicks(ctx context.Context, conn *pgx.Conn, queues []string, ids []int64, self int64) error {
	if len(queues) == 0 {
		return nil
	}
	var own any
	if self > 0 {
		own = self
	}
	rows, err := conn.Query(ctx, sqlTickXip, queues, ids, own)
	if err != nil {
		return fmt.Errorf("ticker: read tick snapshots: %w", err)
	}
	type tickXip struct {
		moved    int64
		maxCount int64
		xip      []int64
	}
	got := map[string]tickXip{}
	var (
		name string
		tx   tickXip
	)
	if _, err := pgx.ForEachRow(rows, []any{&name, &tx.moved, &tx.maxCount, &tx.xip}, func() error {
		got[name] = tx
		return nil
	}); err != nil {
		return fmt.Errorf("ticker: read tick snapshots: %w", err)
	}
	for _, q := range queues {
		tx, ok := got[q]
		if !ok {
			delete(w.watch, q) // nothing was in progress: every counted event is visible
			continue
		}
		real := tx.moved
		if force := 2*tx.maxCount + 1001; real >= force-1 { // -1: a fresh queue's sequence starts uncalled
			real = max(0, real-force)
		}
		var keep []int64
		if real > 0 {
			keep = tx.xip // any of them may hold the events counted
		} else {
			for _, x := range w.watch[q] {
				if slices.Contains(tx.xip, x) {
					keep = append(keep, x) // still running
				}
			}
		}
		if len(keep) > maxWatched {
			keep = keep[len(keep)-maxWatched:]
		}
		if len(keep) == 0 {
			delete(w.watch, q)
		} else {
			w.watch[q] = keep
		}
	}
	return nil
}
