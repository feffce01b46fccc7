package pgq

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// Text is a nullable text value: NULL (Valid false) is kept apart from "".
type Text = pgtype.Text

// T returns a non-NULL Text holding s.
func T(s string) Text { return Text{String: s, Valid: true} }

// Null is the NULL Text value.
var Null = Text{}

// EventData is what a producer puts into an event; every field may be NULL.
type EventData struct {
	Type   Text
	Data   Text
	Extra1 Text
	Extra2 Text
	Extra3 Text
	Extra4 Text
}

// NewEvent returns an event of type typ carrying data in ev_data; the
// extra fields are NULL. Set them on the result when needed:
//
//	ev := pgq.NewEvent("order.created", `{"id":42}`)
//	ev.Extra1 = pgq.T("public.orders")
func NewEvent(typ, data string) EventData {
	return EventData{Type: T(typ), Data: T(data)}
}

// JSONEvent returns an event of type typ whose ev_data is v encoded with
// encoding/json; the extra fields are NULL. consumer.JSON decodes such
// events back into a typed value. The error is json.Marshal's, wrapped.
func JSONEvent(typ string, v any) (EventData, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return EventData{}, fmt.Errorf("pgq: json event %q: %w", typ, err)
	}
	return EventData{Type: T(typ), Data: T(string(b))}, nil
}

// MaxPayload bounds the total size of an event's text fields accepted by
// the insert functions (PostgreSQL itself allows up to 1 GB per value).
const MaxPayload = 64 << 20

func (d *EventData) size() int {
	return len(d.Type.String) + len(d.Data.String) + len(d.Extra1.String) +
		len(d.Extra2.String) + len(d.Extra3.String) + len(d.Extra4.String)
}

// Event is one event of a batch, as returned by pgq.get_batch_events.
//
// Its fields are read-only data and may be read from any goroutine. The
// tagging methods (TagRetry, TagRetryAt, TagDone, RetryAt) are safe for
// concurrent use on the events of one Batch: a handler may hand events to
// worker goroutines that tag them. For an Event built by hand, not read
// from a Batch, they are not synchronised.
type Event struct {
	ID    int64
	Time  time.Time
	TxID  int64
	Retry int32 // ev_retry: earlier delivery attempts of this event (NULL reads as 0)
	EventData

	batch   *Batch
	retryAt time.Time // zero: done (the default)
	idOnly  bool      // from Batch.Retries past RetryTagBudget: ID and retry time only
}

// TagRetry sends the event to the retry queue: it comes back to this
// consumer only, after delay, with Retry incremented. Events are done by
// default; the tag takes effect when the batch is finished.
func (e *Event) TagRetry(delay time.Duration) { e.TagRetryAt(time.Now().Add(delay)) }

// TagRetryAt is TagRetry with an absolute time.
func (e *Event) TagRetryAt(t time.Time) {
	if t.IsZero() {
		t = time.Now()
	}
	if b := e.batch; b != nil {
		b.mu.Lock()
		defer b.mu.Unlock()
		e.retryAt = t
		b.tagRetry(e)
		return
	}
	e.retryAt = t
}

// TagDone undoes TagRetry: the event is done when the batch finishes.
func (e *Event) TagDone() {
	if b := e.batch; b != nil {
		b.mu.Lock()
		defer b.mu.Unlock()
	}
	if e.retryAt.IsZero() {
		return
	}
	e.retryAt = time.Time{}
	if e.batch != nil {
		e.batch.untagRetry(e)
	}
}

// RetryAt reports the retry time set by TagRetry, and whether one is set.
func (e *Event) RetryAt() (time.Time, bool) {
	if b := e.batch; b != nil {
		b.mu.Lock()
		defer b.mu.Unlock()
	}
	return e.retryAt, !e.retryAt.IsZero()
}
