package consumer_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

type order struct {
	ID    int      `json:"id"`
	Items []string `json:"items"`
}

// decoded is one call of a JSON handler.
type decoded[T any] struct {
	id int64
	v  T
}

// decodedLog records what a JSON handler is called with.
type decodedLog[T any] struct {
	mu  sync.Mutex
	got []decoded[T]
}

func (l *decodedLog[T]) handle(_ context.Context, ev *pgq.Event, v T) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, decoded[T]{ev.ID, v})
	return nil
}

func (l *decodedLog[T]) snapshot() []decoded[T] {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]decoded[T](nil), l.got...)
}

// TestJSON: every event reaches the function decoded, in ev_id order, a
// NULL ev_data as the zero value; the batch is finished.
func TestJSON(t *testing.T) {
	t.Parallel()
	e := setup(t)
	want := []order{{ID: 1, Items: []string{"bolt"}}, {ID: 2}, {}, {ID: 4, Items: []string{"nut", "washer"}}}
	ids := e.Produce(t, len(want), func(i int) pgq.EventData {
		if i == 2 {
			return pgq.EventData{Type: pgq.T("order")} // NULL ev_data
		}
		ev, err := pgq.JSONEvent("order", want[i])
		require.NoError(t, err)
		return ev
	})
	e.Tick(t)

	var log decodedLog[order]
	batches := make(chan consumer.BatchStats, 10)
	cfg := e.cfg(t)
	cfg.Hooks.OnBatch = func(s consumer.BatchStats) {
		if s.Events > 0 {
			batches <- s
		}
	}
	e.start(t, cfg, consumer.JSON(log.handle))
	select {
	case s := <-batches:
		require.Equal(t, len(want), s.Events)
		require.Equal(t, 1, s.Attempts)
	case <-time.After(30 * time.Second):
		t.Fatal("the batch was not finished")
	}
	got := log.snapshot()
	require.Len(t, got, len(want))
	for i, d := range got {
		require.Equal(t, ids[i], d.id)
		require.Equal(t, want[i], d.v, "event %d", i)
	}
}

// TestJSONPointer: with a pointer type, each event gets its own value and
// a NULL ev_data gives nil.
func TestJSONPointer(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.Produce(t, 3, func(i int) pgq.EventData {
		if i == 1 {
			return pgq.EventData{Type: pgq.T("order")}
		}
		return pgq.NewEvent("order", fmt.Sprintf(`{"id":%d}`, i))
	})
	e.Tick(t)
	info, err := pgq.NextBatch(e.Ctx, e.Pool, e.Queue, e.Consumer)
	require.NoError(t, err)
	require.NotNil(t, info)
	var log decodedLog[*order]
	h := consumer.JSON(log.handle)
	require.NoError(t, h.ProcessBatch(e.Ctx, pgq.NewBatch(e.Pool, e.Queue, e.Consumer, *info, pgq.ReadOptions{})))
	got := log.snapshot()
	require.Len(t, got, 3)
	require.Equal(t, &order{ID: 0}, got[0].v)
	require.Nil(t, got[1].v)
	require.Equal(t, &order{ID: 2}, got[2].v)
	require.NotSame(t, got[0].v, got[2].v)
}

// TestJSONDecodeError: an event that does not decode fails the batch with
// an error wrapping ErrDecode and json's own error, naming the event and
// the batch; the events after it are not handled, and a consumer retries
// the batch (never finishing it) instead of skipping the event.
func TestJSONDecodeError(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, data string
		jsonErr    any
	}{
		{"syntax", `{"id": 2,`, new(*json.SyntaxError)},
		{"type", `{"id": "two"}`, new(*json.UnmarshalTypeError)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := setup(t)
			ids := e.Produce(t, 3, func(i int) pgq.EventData {
				if i == 1 {
					return pgq.NewEvent("order", tc.data)
				}
				return pgq.NewEvent("order", fmt.Sprintf(`{"id":%d}`, i))
			})
			e.Tick(t)

			// One pass, by hand.
			info, err := pgq.NextBatch(e.Ctx, e.Pool, e.Queue, e.Consumer)
			require.NoError(t, err)
			require.NotNil(t, info)
			var log decodedLog[order]
			err = consumer.JSON(log.handle).ProcessBatch(e.Ctx, pgq.NewBatch(e.Pool, e.Queue, e.Consumer, *info, pgq.ReadOptions{}))
			require.ErrorIs(t, err, consumer.ErrDecode)
			require.ErrorAs(t, err, tc.jsonErr)
			require.ErrorContains(t, err, fmt.Sprintf("event %d (type \"order\") of batch %d into consumer_test.order", ids[1], info.ID))
			require.Len(t, log.snapshot(), 1, "only the event before the bad one was handled")

			// A consumer: the same batch again and again, never finished.
			var mu sync.Mutex
			var errs []consumer.ErrorInfo
			var finished []consumer.BatchStats
			cfg := e.cfg(t)
			cfg.Hooks.OnError = func(ei consumer.ErrorInfo) {
				mu.Lock()
				errs = append(errs, ei)
				mu.Unlock()
			}
			cfg.Hooks.OnBatch = func(s consumer.BatchStats) {
				mu.Lock()
				finished = append(finished, s)
				mu.Unlock()
			}
			stop := e.start(t, cfg, consumer.JSON(log.handle))
			require.Eventually(t, func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(errs) >= 3
			}, 30*time.Second, 10*time.Millisecond, "the batch was not retried")
			require.NoError(t, stop())
			mu.Lock()
			defer mu.Unlock()
			for i, ei := range errs {
				require.ErrorIs(t, ei.Err, consumer.ErrDecode)
				require.Equal(t, info.ID, ei.BatchID, "attempt %d: the same batch", i+1)
				require.Equal(t, i+1, ei.Attempt)
			}
			require.Empty(t, finished, "a batch with an undecodable event was finished")
			for _, d := range log.snapshot() {
				require.Equal(t, ids[0], d.id, "an event after the bad one was handled")
			}
			ci := e.Info(t)
			require.Equal(t, info.ID, ci.CurrentBatch, "the batch is still open")
			require.Equal(t, info.PrevTickID, ci.LastTick, "the consumer did not move")
		})
	}
}

// TestJSONHandlerError: f's error is returned unchanged (not ErrDecode)
// and its TagRetry is honoured when it returns nil.
func TestJSONHandlerError(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.Produce(t, 2, func(i int) pgq.EventData { return pgq.NewEvent("order", fmt.Sprintf(`{"id":%d}`, i)) })
	e.Tick(t)
	info, err := pgq.NextBatch(e.Ctx, e.Pool, e.Queue, e.Consumer)
	require.NoError(t, err)
	require.NotNil(t, info)
	boom := errors.New("boom")
	b := pgq.NewBatch(e.Pool, e.Queue, e.Consumer, *info, pgq.ReadOptions{})
	err = consumer.JSON(func(_ context.Context, ev *pgq.Event, o order) error {
		if o.ID == 1 {
			return boom
		}
		ev.TagRetry(time.Minute)
		return nil
	}).ProcessBatch(e.Ctx, b)
	require.ErrorIs(t, err, boom)
	require.NotErrorIs(t, err, consumer.ErrDecode)
	require.Equal(t, 1, b.RetryCount(), "event 0 tagged before event 1 failed")
}
