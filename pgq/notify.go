package pgq

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
)

// NotifyChannel is the LISTEN/NOTIFY channel on which the ticker package
// announces a new tick of queue, and on which the consumer package waits:
// "pgq_tick." followed by the queue name, or by a hash of it when the name
// would not fit PostgreSQL's 63-byte identifier limit. The payload is the
// tick id. This is the only definition of the channel name.
func NotifyChannel(queue string) string {
	const prefix = "pgq_tick."
	if len(prefix)+len(queue) <= 63 {
		return prefix + queue
	}
	sum := sha256.Sum256([]byte(queue))
	return prefix + "h:" + hex.EncodeToString(sum[:16])
}

// TickRequestChannel is the channel on which producers ask the ticker
// package for a round now instead of at its next period: the ticker
// LISTENs on it in every database it ticks and, on a notification, runs
// pgq.ticker() on that database soon (requests within 25 ms, or
// TickPeriod/8 if shorter, share a round), which
// still ticks only the queues whose thresholds (ticker_max_count,
// ticker_max_lag) are met. The payload is not read. route.Sender and the
// copier's relays send it with their rows.
const TickRequestChannel = "pgq_go.tick"

// RequestTick asks the ticker for a round, in the transaction db runs in
// (NOTIFY is delivered at commit): see TickRequestChannel.
func RequestTick(ctx context.Context, db DB, queue string) error {
	if _, err := db.Exec(ctx, "select pg_notify($1, $2)", TickRequestChannel, queue); err != nil {
		return opErr("request tick", queue, "", err)
	}
	return nil
}
