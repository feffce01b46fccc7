package pgq_test

import (
	"slices"
	"testing"
	"time"

	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

// MoveEvents copies events into another queue keeping their payload and
// ev_time (queue_mover's bulk_insert_events with the time field); the ids
// are the new queue's.
func TestMoveEventsKeepsTime(t *testing.T) {
	t.Parallel()
	e := setup(t)
	in := []pgq.EventData{
		{Type: pgq.T("I:id"), Data: pgq.T("id=1&v=a"), Extra1: pgq.T("public.t"), Extra4: pgq.T("x")},
		{Type: pgq.T("U:id"), Data: pgq.T("id=1&v=b")},
		{Type: pgq.T("t")}, // NULL data and extras
	}
	for _, ev := range in {
		_, err := pgq.InsertEvent(e.ctx, e.pool, e.queue, ev)
		require.NoError(t, err)
	}
	e.tick(t)
	src := e.drain(t)
	require.Len(t, src, len(in))
	_, err := pgq.CreateQueue(e.ctx, e.pool, "q2")
	require.NoError(t, err)
	_, err = pgq.RegisterConsumer(e.ctx, e.pool, "q2", "c")
	require.NoError(t, err)
	tx, err := e.pool.Begin(e.ctx)
	require.NoError(t, err)
	var now time.Time
	require.NoError(t, tx.QueryRow(e.ctx, "select now()").Scan(&now))
	require.True(t, now.After(src[0].Time), "the moving transaction is later than the events")
	n, err := pgq.MoveEvents(e.ctx, tx, "q2", slices.Values(src))
	require.NoError(t, err)
	require.EqualValues(t, len(in), n)
	require.NoError(t, tx.Commit(e.ctx))

	_, err = pgq.Tick(e.ctx, e.pool, "q2")
	require.NoError(t, err)
	info, err := pgq.NextBatch(e.ctx, e.pool, "q2", "c")
	require.NoError(t, err)
	require.NotNil(t, info)
	moved, err := pgq.NewBatch(e.pool, "q2", "c", *info, pgq.ReadOptions{}).All(e.ctx)
	require.NoError(t, err)
	require.Len(t, moved, len(in))
	for i, m := range moved {
		require.Equal(t, src[i].EventData, m.EventData, "event %d's payload", i)
		require.True(t, src[i].Time.Equal(m.Time), "event %d keeps its time: %v, moved %v", i, src[i].Time, m.Time)
		require.NotEqual(t, src[i].TxID, m.TxID, "event %d is the moving transaction's", i)
	}

	// Bad input: nothing written, clear error.
	tx, err = e.pool.Begin(e.ctx)
	require.NoError(t, err)
	defer tx.Rollback(e.ctx)
	_, err = pgq.MoveEvents(e.ctx, tx, "", slices.Values(src))
	require.ErrorIs(t, err, pgq.ErrInvalidName)
}
