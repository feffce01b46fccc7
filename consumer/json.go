package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/pgq-go/pgq/pgq"
)

// ErrDecode is wrapped by the error a JSON handler returns for an event
// whose ev_data does not decode into the handler's type. The error also
// wraps encoding/json's own (e.g. *json.SyntaxError,
// *json.UnmarshalTypeError) and names the event id, its type and the
// batch id.
var ErrDecode = errors.New("consumer: cannot decode event data")

// JSON adapts a function taking a typed value to a BatchHandler: it streams
// the batch and, for each event in ev_id order, decodes ev_data as JSON
// into a fresh T (encoding/json's Unmarshal: unknown fields are ignored)
// and calls f with the event and the value. Producers write such events
// with pgq.JSONEvent. A NULL ev_data decodes as JSON null: T keeps its zero
// value (a nil pointer for a pointer T).
//
// As with Events, the event is done unless f calls ev.TagRetry, and the
// first error from f or from reading stops the batch and is returned.
//
// An event that does not decode fails the batch too: the error wraps
// ErrDecode, the batch stays unfinished and the consumer processes it
// again after its backoff, logging the error (with Hooks.OnError seeing
// it) every time. No event is lost, but the queue waits until someone
// fixes the data or the code: a producer bug shows up as a stuck, loudly
// failing consumer rather than as missing events. To skip or set aside
// undecodable events instead, decode in an EventHandler and decide there,
// for example by sending the event to the retry queue with a long delay
// (it comes back with ev.Retry incremented; a consumer may copy it to a
// table of its own once ev.Retry passes a limit):
//
//	consumer.Events(consumer.EventHandlerFunc(func(ctx context.Context, ev *pgq.Event) error {
//		var o Order
//		if err := json.Unmarshal([]byte(ev.Data.String), &o); err != nil {
//			log.Warn("undecodable event set aside", "id", ev.ID, "err", err)
//			ev.TagRetry(24 * time.Hour)
//			return nil
//		}
//		return handle(ctx, o)
//	}))
func JSON[T any](f func(ctx context.Context, ev *pgq.Event, v T) error) BatchHandler {
	return BatchHandlerFunc(func(ctx context.Context, b *pgq.Batch) error {
		for ev, err := range b.Events(ctx) {
			if err != nil {
				return err
			}
			var v T
			if ev.Data.Valid {
				if err := json.Unmarshal([]byte(ev.Data.String), &v); err != nil {
					return fmt.Errorf("%w: event %d (type %q) of batch %d into %T: %w",
						ErrDecode, ev.ID, ev.Type.String, b.ID(), v, err)
				}
			}
			if err := f(ctx, ev, v); err != nil {
				return err
			}
		}
		return nil
	})
}
