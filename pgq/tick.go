package pgq

import (
	"context"
	"fmt"
)

// Ticker runs pgq.ticker(): one tick for every queue whose thresholds are
// met. It returns how many queues ticked. Never run two in parallel on one
// database (the ticker package guarantees that).
func Ticker(ctx context.Context, db DB) (int64, error) {
	var n int64
	if err := db.QueryRow(ctx, "select pgq.ticker()").Scan(&n); err != nil {
		return 0, opErr("ticker", "", "", err)
	}
	return n, nil
}

// ForceTick makes the next ticker run tick queue regardless of its
// thresholds; it returns the queue's latest tick id.
func ForceTick(ctx context.Context, db DB, queue string) (int64, error) {
	if err := ValidateName("queue", queue); err != nil {
		return 0, err
	}
	var id *int64
	if err := db.QueryRow(ctx, "select pgq.force_tick($1)", queue).Scan(&id); err != nil {
		return 0, opErr("force tick", queue, "", err)
	}
	if id == nil {
		return 0, fmt.Errorf("pgq: force tick %s: %w", queue, ErrQueueNotFound)
	}
	return *id, nil
}

// Tick forces a tick on queue now: force_tick and ticker in separate
// transactions (ticker must see force_tick's change). db must not be a
// transaction. It returns the new tick id. With a ticker running on the
// database, use ForceTick and let the ticker make the tick: it may take
// the forced tick first, and Tick then fails.
func Tick(ctx context.Context, db DB, queue string) (int64, error) {
	if _, err := ForceTick(ctx, db, queue); err != nil {
		return 0, err
	}
	var id *int64
	if err := db.QueryRow(ctx, "select pgq.ticker($1)", queue).Scan(&id); err != nil {
		return 0, opErr("tick", queue, "", err)
	}
	if id == nil {
		return 0, fmt.Errorf("pgq: tick %s: no tick made (the queue's ticker is paused or external, or a ticker running meanwhile took the forced tick): %w", queue, ErrInvalidArgument)
	}
	return *id, nil
}

// MaintRetryEvents moves due events from the retry queue back into their
// queues, calling pgq.maint_retry_events() until it returns 0. It returns
// the number moved.
func MaintRetryEvents(ctx context.Context, db DB) (int64, error) {
	var total int64
	for {
		var n int64
		if err := db.QueryRow(ctx, "select pgq.maint_retry_events()").Scan(&n); err != nil {
			return total, opErr("maint retry events", "", "", err)
		}
		total += n
		if n == 0 {
			return total, nil
		}
		if err := ctx.Err(); err != nil {
			return total, err
		}
	}
}

// MaintOp is one row of pgq.maint_operations().
type MaintOp struct {
	Func string // function name, or "vacuum"
	Arg  *string
}

// MaintOperations lists the maintenance operations due now.
func MaintOperations(ctx context.Context, db DB) ([]MaintOp, error) {
	rows, err := db.Query(ctx, "select func_name, func_arg from pgq.maint_operations()")
	if err != nil {
		return nil, opErr("maint operations", "", "", err)
	}
	defer rows.Close()
	var ops []MaintOp
	for rows.Next() {
		var op MaintOp
		if err := rows.Scan(&op.Func, &op.Arg); err != nil {
			return nil, opErr("maint operations", "", "", err)
		}
		ops = append(ops, op)
	}
	if err := rows.Err(); err != nil {
		return nil, opErr("maint operations", "", "", err)
	}
	return ops, nil
}
