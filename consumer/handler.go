package consumer

import (
	"context"

	"github.com/pgq-go/pgq/pgq"
)

// BatchHandler processes one batch (Skytools process_batch). Every event
// is done by default; tag events with Event.TagRetry to send them to the
// retry queue. Returning nil finishes the batch (retries and finish_batch
// in one round trip, then commit). Returning an error, or panicking,
// leaves the batch open: it is processed again, as a fresh *pgq.Batch,
// after a backoff.
//
// Read the events with b.Events(ctx) (streamed, LazyFetch at a time) or
// b.All(ctx). ctx is the context given to Run: when it is cancelled the
// handler should return soon; if it still returns nil the batch is
// finished, otherwise it is left for the next run.
type BatchHandler interface {
	ProcessBatch(ctx context.Context, b *pgq.Batch) error
}

// BatchHandlerFunc adapts a function to BatchHandler.
type BatchHandlerFunc func(ctx context.Context, b *pgq.Batch) error

// ProcessBatch calls f(ctx, b).
func (f BatchHandlerFunc) ProcessBatch(ctx context.Context, b *pgq.Batch) error { return f(ctx, b) }

// EventHandler processes one event (Skytools process_event). The event is
// done unless the handler calls ev.TagRetry. An error fails the whole
// batch, which is processed again.
type EventHandler interface {
	ProcessEvent(ctx context.Context, ev *pgq.Event) error
}

// EventHandlerFunc adapts a function to EventHandler.
type EventHandlerFunc func(ctx context.Context, ev *pgq.Event) error

// ProcessEvent calls f(ctx, ev).
func (f EventHandlerFunc) ProcessEvent(ctx context.Context, ev *pgq.Event) error { return f(ctx, ev) }

// Events adapts an EventHandler to a BatchHandler that streams the batch
// and calls h for each event in ev_id order. The first error (from h or
// from reading) stops the batch and is returned.
func Events(h EventHandler) BatchHandler {
	return BatchHandlerFunc(func(ctx context.Context, b *pgq.Batch) error {
		for ev, err := range b.Events(ctx) {
			if err != nil {
				return err
			}
			if err := h.ProcessEvent(ctx, ev); err != nil {
				return err
			}
		}
		return nil
	})
}
