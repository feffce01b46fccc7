package pgq_test

import (
	"testing"

	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

func TestNewEvent(t *testing.T) {
	require.Equal(t, pgq.EventData{Type: pgq.T("created"), Data: pgq.T("42")}, pgq.NewEvent("created", "42"))
	// Empty strings are values, not NULL.
	require.Equal(t, pgq.EventData{Type: pgq.T(""), Data: pgq.T("")}, pgq.NewEvent("", ""))
}

func TestJSONEvent(t *testing.T) {
	ev, err := pgq.JSONEvent("order", struct {
		ID   int    `json:"id"`
		Note string `json:"note"`
	}{42, "it's <fine>"})
	require.NoError(t, err)
	require.Equal(t, pgq.EventData{Type: pgq.T("order"), Data: pgq.T(`{"id":42,"note":"it's \u003cfine\u003e"}`)}, ev)

	ev, err = pgq.JSONEvent("nil", nil)
	require.NoError(t, err)
	require.Equal(t, pgq.T("null"), ev.Data)

	_, err = pgq.JSONEvent("bad", make(chan int))
	require.ErrorContains(t, err, `pgq: json event "bad"`)
	require.ErrorContains(t, err, "unsupported type")
}

// TestJSONEventRoundTrip: a JSON event inserted and read back carries the
// same text.
func TestJSONEventRoundTrip(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ev, err := pgq.JSONEvent("order", map[string]any{"id": 7, "items": []string{"a", "b"}})
	require.NoError(t, err)
	_, err = pgq.InsertEvent(e.ctx, e.pool, e.queue, ev)
	require.NoError(t, err)
	e.tick(t)
	got := e.events(t, e.next(t), pgq.ReadOptions{})
	require.Len(t, got, 1)
	require.Equal(t, ev, got[0].EventData)
	require.JSONEq(t, `{"id":7,"items":["a","b"]}`, got[0].Data.String)
}
