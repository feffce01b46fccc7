package pgq

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// RegisterConsumer subscribes consumer to queue at the latest tick; it
// reports false when the consumer was already registered (its position is
// kept). The queue needs at least one tick ([ErrNoTicks] otherwise).
// A consumer sees only events ticked after its registration: register
// before producing.
func RegisterConsumer(ctx context.Context, db DB, queue, consumer string) (bool, error) {
	if err := validateQC(queue, consumer); err != nil {
		return false, err
	}
	var n int
	err := db.QueryRow(ctx, "select pgq.register_consumer($1, $2)", queue, consumer).Scan(&n)
	if _, inTx := db.(pgx.Tx); err != nil && !inTx && isConsumerNameRace(err) {
		// pgq.register_consumer inserts a consumer name it has not seen
		// after looking for it: two first registrations of one name (on
		// different queues) race, and the loser fails on the name's
		// unique index. The name exists now; once more succeeds.
		err = db.QueryRow(ctx, "select pgq.register_consumer($1, $2)", queue, consumer).Scan(&n)
	}
	if err != nil {
		return false, opErr("register consumer", queue, consumer, err)
	}
	return n == 1, nil
}

// isConsumerNameRace reports the unique violation of pgq.consumer's name
// that two concurrent first registrations of one name cause.
func isConsumerNameRace(err error) bool {
	pe, ok := errors.AsType[*pgconn.PgError](err)
	return ok && pe.Code == "23505" && pe.ConstraintName == "consumer_name_uq"
}

// RegisterConsumerAt (re)positions consumer on queue at tickID, registering
// it if needed. An open batch is dropped. This is Skytools' rewind.
func RegisterConsumerAt(ctx context.Context, db DB, queue, consumer string, tickID int64) error {
	if err := validateQC(queue, consumer); err != nil {
		return err
	}
	if tickID <= 0 {
		return fmt.Errorf("pgq: register consumer %s/%s at tick %d: %w", queue, consumer, tickID, ErrInvalidArgument)
	}
	if _, err := db.Exec(ctx, "select pgq.register_consumer_at($1, $2, $3)", queue, consumer, tickID); err != nil {
		return opErr(fmt.Sprintf("register consumer at tick %d", tickID), queue, consumer, err)
	}
	return nil
}

// UnregisterConsumer removes consumer from queue with its retry events; it
// reports false when it was not registered.
func UnregisterConsumer(ctx context.Context, db DB, queue, consumer string) (bool, error) {
	if err := validateQC(queue, consumer); err != nil {
		return false, err
	}
	var n int
	err := db.QueryRow(ctx, "select pgq.unregister_consumer($1, $2)", queue, consumer).Scan(&n)
	if err != nil {
		err = opErr("unregister consumer", queue, consumer, err)
		if isNotRegistered(err) {
			return false, nil
		}
		return false, err
	}
	return n > 0, nil
}

// ConsumerInfo is one row of pgq.get_consumer_info().
type ConsumerInfo struct {
	Queue         string
	Name          string
	Lag           time.Duration // age of the last finished tick
	LastSeen      time.Duration // time since the consumer last finished a batch
	LastTick      int64
	CurrentBatch  int64 // 0 when no batch is open
	NextTick      int64 // 0 when no batch is open
	PendingEvents int64 // estimate from the event id sequence of ticked, unconsumed events; force_tick inflates it, unticked events are not counted
}

const sqlConsumerInfo = `select queue_name, consumer_name, lag, last_seen, last_tick,
	coalesce(current_batch, 0), coalesce(next_tick, 0), coalesce(pending_events, 0)
	from pgq.get_consumer_info($1, $2)`

// GetConsumerInfo returns the info of one consumer ([ErrNotRegistered] if
// absent, [ErrQueueNotFound] if the queue is).
func GetConsumerInfo(ctx context.Context, db DB, queue, consumer string) (ConsumerInfo, error) {
	if err := validateQC(queue, consumer); err != nil {
		return ConsumerInfo{}, err
	}
	cs, err := consumerInfo(ctx, db, &queue, &consumer)
	if err != nil {
		return ConsumerInfo{}, opErr("consumer info", queue, consumer, err)
	}
	if len(cs) == 0 {
		return ConsumerInfo{}, notRegistered(ctx, db, "consumer info", queue, consumer)
	}
	return cs[0], nil
}

// notRegistered reports a consumer missing from queue as ErrQueueNotFound
// when the queue itself is missing, ErrNotRegistered otherwise.
func notRegistered(ctx context.Context, db DB, op, queue, consumer string) error {
	var exists bool
	if err := db.QueryRow(ctx, "select exists (select 1 from pgq.queue where queue_name = $1)", queue).Scan(&exists); err != nil {
		return opErr(op, queue, consumer, err)
	}
	if !exists {
		return fmt.Errorf("pgq: %s %s/%s: %w", op, queue, consumer, ErrQueueNotFound)
	}
	return fmt.Errorf("pgq: %s %s/%s: %w", op, queue, consumer, ErrNotRegistered)
}

// ListConsumers returns the consumers of queue, or of every queue when
// queue is "".
func ListConsumers(ctx context.Context, db DB, queue string) ([]ConsumerInfo, error) {
	var q *string
	if queue != "" {
		if err := ValidateName("queue", queue); err != nil {
			return nil, err
		}
		q = &queue
	}
	cs, err := consumerInfo(ctx, db, q, nil)
	if err != nil {
		return nil, opErr("list consumers", queue, "", err)
	}
	return cs, nil
}

func consumerInfo(ctx context.Context, db DB, queue, consumer *string) ([]ConsumerInfo, error) {
	rows, err := db.Query(ctx, sqlConsumerInfo, queue, consumer)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ConsumerInfo
	for rows.Next() {
		var c ConsumerInfo
		var lag, seen pgInterval
		if err := rows.Scan(&c.Queue, &c.Name, &lag, &seen, &c.LastTick, &c.CurrentBatch, &c.NextTick, &c.PendingEvents); err != nil {
			return nil, err
		}
		c.Lag, c.LastSeen = lag.d, seen.d
		out = append(out, c)
	}
	return out, rows.Err()
}
