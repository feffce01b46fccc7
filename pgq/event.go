package pgq

import (
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

// MaxPayload bounds the total size of an event's text fields accepted by
// the insert functions (PostgreSQL itself allows up to 1 GB per value).
const MaxPayload = 64 << 20

func (d *EventData) size() int {
	return len(d.Type.String) + len(d.Data.String) + len(d.Extra1.String) +
		len(d.Extra2.String) + len(d.Extra3.String) + len(d.Extra4.String)
}

// Event is one event of a batch, as returned by pgq.get_batch_events.
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
	e.retryAt = t
	if e.batch != nil {
		e.batch.tagRetry(e)
	}
}

// TagDone undoes TagRetry: the event is done when the batch finishes.
func (e *Event) TagDone() {
	if e.retryAt.IsZero() {
		return
	}
	e.retryAt = time.Time{}
	if e.batch != nil {
		e.batch.untagRetry(e)
	}
}

// RetryAt reports the retry time set by TagRetry, and whether one is set.
func (e *Event) RetryAt() (time.Time, bool) { return e.retryAt, !e.retryAt.IsZero() }
