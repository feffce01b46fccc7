package pgq_test

import (
	"testing"

	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

// TestNextBatchUpToEvents: a consumer that skipped ticks takes every ready
// tick in one batch while the event budget allows, and one tick when even
// the next tick exceeds it.
func TestNextBatchUpToEvents(t *testing.T) {
	t.Parallel()
	e := setup(t)
	// Each forced tick moves the event sequence on by about 1,000 besides
	// the events (2 × ticker_max_count + 1000), which the budgets allow for.
	require.NoError(t, pgq.SetQueueConfig(e.ctx, e.pool, e.queue, pgq.QueueConfig{TickerMaxCount: pgq.Ptr(5)}))
	round := func() int64 {
		t.Helper()
		for range 5 {
			_, err := pgq.InsertEvent(e.ctx, e.pool, e.queue, pgq.NewEvent("t", "d"))
			require.NoError(t, err)
		}
		return e.tick(t)
	}
	var first int64
	require.NoError(t, e.pool.QueryRow(e.ctx, `select sub_last_tick from pgq.subscription s join pgq.consumer c on c.co_id = s.sub_consumer
		where c.co_name = $1`, e.cons).Scan(&first))
	var last int64
	for range 3 {
		last = round()
	}

	info, err := pgq.NextBatchCustom(e.ctx, e.pool, e.queue, e.cons, pgq.BatchOptions{UpToEvents: 100_000})
	require.NoError(t, err)
	require.NotNil(t, info)
	require.Equal(t, first, info.PrevTickID)
	require.Equal(t, last, info.TickID, "one batch up to the last tick")
	require.Len(t, e.events(t, info, pgq.ReadOptions{}), 15)
	_, err = pgq.FinishBatch(e.ctx, e.pool, info.ID)
	require.NoError(t, err)

	next := round()
	round()
	info, err = pgq.NextBatchCustom(e.ctx, e.pool, e.queue, e.cons, pgq.BatchOptions{UpToEvents: 500})
	require.NoError(t, err)
	require.NotNil(t, info)
	require.Equal(t, last, info.PrevTickID)
	require.Equal(t, next, info.TickID, "the next tick alone when it exceeds the budget")
	require.Len(t, e.events(t, info, pgq.ReadOptions{}), 5)
	_, err = pgq.FinishBatch(e.ctx, e.pool, info.ID)
	require.NoError(t, err)

	info, err = pgq.NextBatchCustom(e.ctx, e.pool, e.queue, e.cons, pgq.BatchOptions{UpToEvents: 100_000})
	require.NoError(t, err)
	require.NotNil(t, info)
	require.Len(t, e.events(t, info, pgq.ReadOptions{}), 5)
	_, err = pgq.FinishBatch(e.ctx, e.pool, info.ID)
	require.NoError(t, err)
	info, err = pgq.NextBatchCustom(e.ctx, e.pool, e.queue, e.cons, pgq.BatchOptions{UpToEvents: 100_000})
	require.NoError(t, err)
	require.Nil(t, info, "no tick ready")

	_, err = pgq.NextBatchCustom(e.ctx, e.pool, e.queue, e.cons, pgq.BatchOptions{UpToEvents: 10, MinCount: 5})
	require.ErrorIs(t, err, pgq.ErrInvalidArgument)
	_, err = pgq.NextBatchCustom(e.ctx, e.pool, e.queue, e.cons, pgq.BatchOptions{UpToEvents: -1})
	require.ErrorIs(t, err, pgq.ErrInvalidArgument)
}
