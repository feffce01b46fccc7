package pgq

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// RetryEvent puts one event of an open batch into the retry queue with
// pgq.event_retry (which rescans the batch: prefer Event.TagRetry and
// Batch.Finish for many events).
func RetryEvent(ctx context.Context, db DB, batchID, eventID int64, delay time.Duration) error {
	if delay < 0 {
		return fmt.Errorf("pgq: retry event %d: negative delay: %w", eventID, ErrInvalidArgument)
	}
	if _, err := db.Exec(ctx, "select pgq.event_retry($1, $2, $3::int4)", batchID, eventID, int32(delay.Round(time.Second)/time.Second)); err != nil {
		return opErr(fmt.Sprintf("retry event %d of batch %d", eventID, batchID), "", "", err)
	}
	return nil
}

// RetryEventAt is RetryEvent with an absolute retry time.
func RetryEventAt(ctx context.Context, db DB, batchID, eventID int64, at time.Time) error {
	if _, err := db.Exec(ctx, "select pgq.event_retry($1, $2, $3::timestamptz)", batchID, eventID, at); err != nil {
		return opErr(fmt.Sprintf("retry event %d of batch %d", eventID, batchID), "", "", err)
	}
	return nil
}

const sqlRetryRaw = "select pgq.event_retry_raw($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"

// RetryEventRaw inserts ev into the consumer's retry queue directly with
// pgq.event_retry_raw (O(1)); ev.Retry is incremented in the stored copy.
func RetryEventRaw(ctx context.Context, db DB, queue, consumer string, ev *Event, at time.Time) error {
	if err := validateQC(queue, consumer); err != nil {
		return err
	}
	_, err := db.Exec(ctx, sqlRetryRaw, retryRawArgs(queue, consumer, ev, at)...)
	if err != nil {
		return opErr(fmt.Sprintf("retry event %d", ev.ID), queue, consumer, err)
	}
	return nil
}

// QueueRetryRaw queues RetryEventRaw on a pipeline.
func QueueRetryRaw(pb *pgx.Batch, queue, consumer string, ev *Event, at time.Time) {
	pb.Queue(sqlRetryRaw, retryRawArgs(queue, consumer, ev, at)...)
}

func retryRawArgs(queue, consumer string, ev *Event, at time.Time) []any {
	return []any{queue, consumer, at, ev.ID, ev.Time, ev.Retry + 1,
		ev.Type, ev.Data, ev.Extra1, ev.Extra2, ev.Extra3, ev.Extra4}
}

// BatchRetry puts every event of an open batch into the retry queue.
// It returns the number of events moved.
func BatchRetry(ctx context.Context, db DB, batchID int64, delay time.Duration) (int, error) {
	if delay < 0 {
		return 0, fmt.Errorf("pgq: batch retry %d: negative delay: %w", batchID, ErrInvalidArgument)
	}
	var n int
	if err := db.QueryRow(ctx, "select pgq.batch_retry($1, $2)", batchID, int32(delay.Round(time.Second)/time.Second)).Scan(&n); err != nil {
		return 0, opErr(fmt.Sprintf("batch retry %d", batchID), "", "", err)
	}
	return n, nil
}

// GetBatchEvents returns every event of an open batch.
func GetBatchEvents(ctx context.Context, db DB, batchID int64) ([]*Event, error) {
	b := &Batch{Info: BatchInfo{ID: batchID}, db: db}
	return b.All(ctx)
}
