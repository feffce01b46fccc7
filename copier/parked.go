package copier

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/apply"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/route"
)

// ParkedEvent is an event a targeted copier could not apply, kept in
// pgq_go.parked_event on the database it was meant for.
type ParkedEvent struct {
	ParkID   int64
	Consumer string
	Queue    string
	ParkedAt time.Time
	Error    string
	// OrderKey is the event's order key (see Config.OrderKey); ""
	// when it has none.
	OrderKey string
	Event    pgq.Event
}

// sqlPark adds a parked row. It is a plain insert: event ids repeat (a
// rebuilt hub, a node moved to another shard), and a parked row must never
// be overwritten by another event.
const sqlPark = `insert into pgq_go.parked_event (consumer_id, queue_name, error,
	ev_id, ev_time, ev_txid, ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4, order_key)
	values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`

// park stores ev with the error that stopped it, in tx, without an order
// key.
func park(ctx context.Context, tx pgx.Tx, consumer, queue string, ev *pgq.Event, cause error) error {
	return parkKeyed(ctx, tx, consumer, queue, ev, cause, nil)
}

// parkKeyed is park recording ev's order key (nil: none).
func parkKeyed(ctx context.Context, tx pgx.Tx, consumer, queue string, ev *pgq.Event, cause error, key *string) error {
	_, err := tx.Exec(ctx, sqlPark, consumer, queue, clipError(cause.Error()), ev.ID, ev.Time, ev.TxID, ev.Retry,
		ev.Type, ev.Data, ev.Extra1, ev.Extra2, ev.Extra3, ev.Extra4, key)
	return err
}

// clipError bounds an error message stored in the database.
func clipError(msg string) string {
	if len(msg) > 8000 {
		msg = msg[:8000] + "…"
	}
	return msg
}

// ParkedFilter selects parked events. For ListParked and ReplayParked a
// zero field matches everything; PurgeParked needs Consumer or IDs, so that
// a zero filter never deletes every parked event.
type ParkedFilter struct {
	Consumer string
	IDs      []int64 // park ids
	Limit    int     // default 1000
}

const sqlListParked = `select park_id, consumer_id, queue_name, parked_at, error, coalesce(order_key, ''),
	ev_id, ev_time, coalesce(ev_txid, 0), coalesce(ev_retry, 0), ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4
	from pgq_go.parked_event
	where ($1::text is null or consumer_id = $1)
	  and ($2::bigint[] is null or park_id = any($2))
	order by park_id limit $3`

// ListParked returns parked events in park order.
func ListParked(ctx context.Context, db pgq.DB, f ParkedFilter) ([]ParkedEvent, error) {
	rows, err := db.Query(ctx, sqlListParked, nullIfEmpty(f.Consumer), nullIDs(f.IDs), limit(f.Limit))
	if err != nil {
		return nil, fmt.Errorf("copier: list parked events: %w", err)
	}
	defer rows.Close()
	var out []ParkedEvent
	for rows.Next() {
		var p ParkedEvent
		e := &p.Event
		if err := rows.Scan(&p.ParkID, &p.Consumer, &p.Queue, &p.ParkedAt, &p.Error, &p.OrderKey,
			&e.ID, &e.Time, &e.TxID, &e.Retry, &e.Type, &e.Data, &e.Extra1, &e.Extra2, &e.Extra3, &e.Extra4); err != nil {
			return nil, fmt.Errorf("copier: list parked events: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("copier: list parked events: %w", err)
	}
	return out, nil
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func nullIDs(ids []int64) any {
	if ids == nil {
		return nil
	}
	return ids
}

func limit(n int) int {
	if n <= 0 {
		return 1000
	}
	return n
}

// CountParked returns how many events are parked for consumer ("" = all).
func CountParked(ctx context.Context, db pgq.DB, consumer string) (int64, error) {
	var n int64
	err := db.QueryRow(ctx, "select count(*) from pgq_go.parked_event where ($1::text is null or consumer_id = $1)",
		nullIfEmpty(consumer)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("copier: count parked events: %w", err)
	}
	return n, nil
}

// ReplayResult reports a replay.
type ReplayResult struct {
	Replayed int
	Failed   map[int64]error // park id → why it stays parked
}

// ErrWrongNode is wrapped by the error of a parked event ReplayParked
// refuses because it is addressed (ev_extra1) to another node than the
// one replaying.
var ErrWrongNode = errors.New("copier: parked event addressed to another node")

// ErrOrderWait is wrapped by the error of a parked event ReplayParked
// refuses because an earlier event of its order key is still parked or
// held: replay (or purge) that one first.
var ErrOrderWait = errors.New("copier: an earlier event of the same order key is still parked or held")

// NodeDB is a node's database as ReplayParked takes it: a *pgxpool.Pool
// or a *pgx.Conn.
type NodeDB interface {
	pgq.DB
	Begin(ctx context.Context) (pgx.Tx, error)
}

// ReplayParked applies parked events again with applier on node's own
// database db, each in its own transaction that also removes it from the
// parked table; an event that fails again stays parked with its new error.
//
// Events are taken in park order, which is the order of each order key's
// events (see Config.OrderKey). An event is refused, and stays
// parked with its error unchanged, when it is addressed to another node
// than node (ErrWrongNode) or when an earlier event of its order key is
// still parked or held on db (ErrOrderWait), whether or not the filter
// selects that one: a key's events are never applied out of order. So
// once an event of a key fails again, the key's later events in the same
// replay are refused too. Replays serialise with the node's pull.
func ReplayParked(ctx context.Context, db NodeDB, node string, applier apply.Applier, f ParkedFilter) (ReplayResult, error) {
	res := ReplayResult{Failed: map[int64]error{}}
	if err := route.ValidateNode(node); err != nil {
		return res, fmt.Errorf("copier: replay parked events: node: %w", err)
	}
	if applier == nil {
		return res, errors.New("copier: replay parked events: no applier")
	}
	q := db
	parked, err := ListParked(ctx, q, f)
	if err != nil {
		return res, err
	}
	for _, p := range parked {
		if !p.Event.Extra1.Valid || p.Event.Extra1.String != node {
			res.Failed[p.ParkID] = fmt.Errorf("%w: park id %d (event %d, consumer %s) is addressed to %q, not node %q; not applied",
				ErrWrongNode, p.ParkID, p.Event.ID, p.Consumer, p.Event.Extra1.String, node)
			continue
		}
		if err := replayOne(ctx, db, applier, p); err != nil {
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			res.Failed[p.ParkID] = err
			if errors.Is(err, ErrOrderWait) {
				continue // not tried: keep the error that parked it
			}
			_, _ = q.Exec(ctx, "update pgq_go.parked_event set error = $2, parked_at = now() where park_id = $1",
				p.ParkID, clipError("replay: "+err.Error()))
			continue
		}
		res.Replayed++
	}
	return res, nil
}

// sqlEarlier finds what must be applied before a parked event of key.
const sqlEarlier = `select coalesce(
	(select 'park id ' || min(park_id) from pgq_go.parked_event
	  where consumer_id = $1 and order_key = $2 and park_id < $3),
	(select 'held event ' || min(ev_id) from pgq_go.held_event
	  where consumer_id = $1 and order_key = $2))`

func replayOne(ctx context.Context, db NodeDB, applier apply.Applier, p ParkedEvent) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, sqlCaptureOff); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, sqlOrderLock, p.Consumer); err != nil {
		return err
	}
	var key *string
	if err := tx.QueryRow(ctx, "delete from pgq_go.parked_event where park_id = $1 returning order_key", p.ParkID).Scan(&key); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("parked event %d is gone (replayed or purged concurrently)", p.ParkID)
		}
		return err
	}
	if key != nil {
		var earlier *string
		if err := tx.QueryRow(ctx, sqlEarlier, p.Consumer, *key, p.ParkID).Scan(&earlier); err != nil {
			return err
		}
		if earlier != nil {
			return fmt.Errorf("%w: park id %d (event %d) waits for %s of order key %s",
				ErrOrderWait, p.ParkID, p.Event.ID, *earlier, *key)
		}
	}
	ev := p.Event
	if err := applier.Apply(ctx, tx, &ev); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// PurgeParked deletes parked events for good and returns how many.
// Purging a key's earliest parked event lets ReplayParked take the next.
func PurgeParked(ctx context.Context, db pgq.DB, f ParkedFilter) (int64, error) {
	if f.Consumer == "" && f.IDs == nil {
		return 0, errors.New("copier: purge parked events: name a consumer or ids (refusing to purge everything implicitly)")
	}
	tag, err := db.Exec(ctx, `delete from pgq_go.parked_event
		where ($1::text is null or consumer_id = $1) and ($2::bigint[] is null or park_id = any($2))`,
		nullIfEmpty(f.Consumer), nullIDs(f.IDs))
	if err != nil {
		return 0, fmt.Errorf("copier: purge parked events: %w", err)
	}
	return tag.RowsAffected(), nil
}
