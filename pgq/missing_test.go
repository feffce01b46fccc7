package pgq_test

import (
	"testing"

	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

// TestMissingQueueIsNotNotRegistered: PgQ says "Not subscriber to queue"
// for a missing queue too; the client must report the queue as missing
// (ErrQueueNotFound, naming queue and consumer), and keep ErrNotRegistered
// for an existing queue with an unknown consumer.
func TestMissingQueueIsNotNotRegistered(t *testing.T) {
	t.Parallel()
	e := setup(t)

	_, err := pgq.NextBatch(e.ctx, e.pool, "missing", e.cons)
	require.ErrorIs(t, err, pgq.ErrQueueNotFound)
	require.NotErrorIs(t, err, pgq.ErrNotRegistered)
	require.ErrorContains(t, err, "missing/c")

	tx, err := e.pool.Begin(e.ctx)
	require.NoError(t, err)
	_, err = pgq.NextBatch(e.ctx, tx, "missing", e.cons)
	require.ErrorIs(t, err, pgq.ErrQueueNotFound, "inside a transaction too")
	require.NotErrorIs(t, err, pgq.ErrNotRegistered)
	require.NoError(t, tx.Rollback(e.ctx))

	_, err = pgq.GetConsumerInfo(e.ctx, e.pool, "missing", e.cons)
	require.ErrorIs(t, err, pgq.ErrQueueNotFound)
	require.NotErrorIs(t, err, pgq.ErrNotRegistered)
	require.ErrorContains(t, err, "missing/c")

	// An existing queue with an unknown consumer is "not registered".
	_, err = pgq.NextBatch(e.ctx, e.pool, e.queue, "nobody")
	require.ErrorIs(t, err, pgq.ErrNotRegistered)
	require.NotErrorIs(t, err, pgq.ErrQueueNotFound)
	_, err = pgq.GetConsumerInfo(e.ctx, e.pool, e.queue, "nobody")
	require.ErrorIs(t, err, pgq.ErrNotRegistered)
	require.NotErrorIs(t, err, pgq.ErrQueueNotFound)

	// The normal path still works through the same statement.
	_, err = pgq.InsertEvent(e.ctx, e.pool, e.queue, pgq.EventData{Data: pgq.T("x")})
	require.NoError(t, err)
	e.tick(t)
	require.Len(t, e.events(t, e.next(t), pgq.ReadOptions{}), 1)
}
