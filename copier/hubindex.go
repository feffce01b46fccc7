package copier

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgq-go/pgq/pgq"
)

// Target index: with RoutingShared every node's pull reads the one hub
// queue with the filter ev_extra1 = <node>. PgQ indexes its event tables
// by ev_txid only, so each pull scans every row of the batch and keeps its
// own: N pulls scan N times the rows (measured at N = 64: 1.3 ms per pull
// batch, most of the hub's CPU). An index on (ev_extra1, ev_txid) lets the
// batch query, which ANDs the filter with the batch's txid range, read
// only the node's rows. PgQ truncates its event tables on rotation and
// never drops them, so an index made once lasts the queue's life.

// targetIndexName is the index's name on one event table ("event_5_0" →
// "event_5_0_pgq_go_target"); PgQ's table names are short.
func targetIndexName(table string) string { return table + "_pgq_go_target" }

// ErrHubIndexPrivilege means the role may not create the target index
// on the hub queue's event tables (only their owner, usually the role
// that installed pgq, may): pulls still work, each scanning the whole
// batch. IndexHubQueue as the owner (pgqctl copy hub-index) fixes it.
var ErrHubIndexPrivilege = errors.New("copier: not the owner of the hub queue's event tables")

// IndexHubQueue creates the target index on every event table of the
// shared hub queue (see Config.Routing) where it is missing, and reports
// how many it created. It is idempotent and serialised with Setup's own
// call; a role that does not own the tables gets ErrHubIndexPrivilege.
// Setup calls it for RoutingShared, and only logs that error. Building an
// index locks its table against inserts (relays wait) for the build: on a
// fresh queue that is instant; on a hub holding a large backlog, run it
// when a pause of the relays is acceptable.
func IndexHubQueue(ctx context.Context, hub interface {
	pgq.DB
	Begin(context.Context) (pgx.Tx, error)
}, queue string) (int, error) {
	if err := pgq.ValidateName("queue", queue); err != nil {
		return 0, err
	}
	var exists bool
	if err := hub.QueryRow(ctx, "select exists (select 1 from pgq.queue where queue_name = $1)", queue).Scan(&exists); err != nil {
		return 0, fmt.Errorf("copier: index hub queue %s: %w", queue, err)
	}
	if !exists {
		return 0, fmt.Errorf("copier: index hub queue %s: %w", queue, pgq.ErrQueueNotFound)
	}
	tx, err := hub.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	missing, err := missingTargetIndexes(ctx, tx, queue)
	if err != nil || len(missing) == 0 {
		return 0, err
	}
	if _, err := tx.Exec(ctx, "select pg_advisory_xact_lock(hashtextextended('pgq_go.queue:' || $1, 0))", queue); err != nil {
		return 0, err
	}
	// Another copier may have made them while this one waited.
	if missing, err = missingTargetIndexes(ctx, tx, queue); err != nil || len(missing) == 0 {
		return 0, err
	}
	for _, t := range missing {
		// The table name comes from pgq.queue and the index name from it;
		// both are quoted.
		sql := fmt.Sprintf("create index if not exists %s on %s (ev_extra1, ev_txid)",
			pgx.Identifier{targetIndexName(t.name)}.Sanitize(), pgx.Identifier{t.schema, t.name}.Sanitize())
		if _, err := tx.Exec(ctx, sql); err != nil {
			if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == "42501" {
				return 0, fmt.Errorf("%w: queue %s, table %s.%s: %s", ErrHubIndexPrivilege, queue, t.schema, t.name, pgErr.Message)
			}
			return 0, fmt.Errorf("copier: queue %s: index %s.%s: %w", queue, t.schema, t.name, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, err
	}
	return len(missing), nil
}

type eventTable struct{ schema, name string }

// missingTargetIndexes lists the queue's event tables without the target
// index. PgQ names them <queue_data_pfx>_<i>, i < queue_ntables.
func missingTargetIndexes(ctx context.Context, db pgq.DB, queue string) ([]eventTable, error) {
	rows, err := db.Query(ctx, `select n.nspname, c.relname
		from pgq.queue q
		cross join generate_series(0, q.queue_ntables - 1) i
		join pg_class c on c.oid = to_regclass(q.queue_data_pfx || '_' || i)
		join pg_namespace n on n.oid = c.relnamespace
		where q.queue_name = $1
		  and not exists (select 1 from pg_index x join pg_class ic on ic.oid = x.indexrelid
			where x.indrelid = c.oid and ic.relname = c.relname || '_pgq_go_target')
		order by i`, queue)
	if err != nil {
		return nil, fmt.Errorf("copier: queue %s: event tables: %w", queue, err)
	}
	var out []eventTable
	var t eventTable
	_, err = pgx.ForEachRow(rows, []any{&t.schema, &t.name}, func() error {
		out = append(out, t)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("copier: queue %s: event tables: %w", queue, err)
	}
	return out, nil
}
