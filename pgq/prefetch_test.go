package pgq_test

import (
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

// A read sent ahead (QueuePrefetch, after the statement opening the batch
// in the same round trip) yields what pgq.get_batch_events does for the
// batch it was sent for; given to a Batch of another batch, its rows are
// dropped and that batch reads its own events; released before it is
// read, it frees the connection; released while a Batch reads it, it
// refuses (the connection is busy) and the read goes on whole.
func TestPrefetch(t *testing.T) {
	t.Parallel()
	e := setup(t)
	_, err := pgq.RegisterConsumer(e.ctx, e.pool, e.queue, "c2")
	require.NoError(t, err)
	for _, d := range []string{"a", "b", "c"} {
		_, err := pgq.InsertEvent(e.ctx, e.pool, e.queue, pgq.EventData{Data: pgq.T(d)})
		require.NoError(t, err)
	}
	e.tick(t)
	// c2's batch: the "like" batch (same queue) and the other batch.
	other, err := pgq.NextBatch(e.ctx, e.pool, e.queue, "c2")
	require.NoError(t, err)
	require.NotNil(t, other)
	_, err = pgq.InsertEvent(e.ctx, e.pool, e.queue, pgq.EventData{Data: pgq.T("later")})
	require.NoError(t, err)
	e.tick(t)

	like := pgq.NewBatch(e.pool, e.queue, e.cons, *other, pgq.ReadOptions{}) // c's reads, in the form of a batch of the queue
	conn, err := e.pool.Acquire(e.ctx)
	require.NoError(t, err)
	defer conn.Release()
	send := func() (*pgq.BatchInfo, *pgq.Prefetch) {
		pb := &pgx.Batch{}
		readNext, err := pgq.QueueNextBatch(pb, e.queue, e.cons, pgq.BatchOptions{})
		require.NoError(t, err)
		require.True(t, like.QueuePrefetch(pb))
		res := conn.SendBatch(e.ctx, pb)
		info, err := readNext(res)
		require.NoError(t, err)
		require.NotNil(t, info)
		return info, pgq.NewPrefetch(res, nil)
	}
	want := func(id int64) []evKey {
		evs, err := pgq.GetBatchEvents(e.ctx, e.pool, id)
		require.NoError(t, err)
		return keys(evs)
	}

	// Its own batch: read from the rows sent ahead.
	info, pf := send()
	got, err := pgq.NewBatch(conn, e.queue, e.cons, *info, pgq.ReadOptions{Prefetch: pf}).All(e.ctx)
	require.NoError(t, err)
	require.Equal(t, want(info.ID), keys(got))
	require.NoError(t, pf.Release())
	require.Equal(t, 3, len(got))

	// Another batch: the rows are not its own.
	pb := &pgx.Batch{}
	require.True(t, like.QueuePrefetch(pb))
	pf = pgq.NewPrefetch(conn.SendBatch(e.ctx, pb), nil)
	got, err = pgq.NewBatch(conn, e.queue, "c2", *other, pgq.ReadOptions{Prefetch: pf}).All(e.ctx)
	require.NoError(t, err)
	require.Equal(t, want(other.ID), keys(got))

	// Released unread: the connection is free.
	pb = &pgx.Batch{}
	require.True(t, like.QueuePrefetch(pb))
	released := 0
	pf = pgq.NewPrefetch(conn.SendBatch(e.ctx, pb), func() { released++ })
	require.NoError(t, pf.Release())
	require.Equal(t, 1, released)
	var one int
	require.NoError(t, conn.QueryRow(e.ctx, "select 1").Scan(&one))

	// Released while being read: refused, and the read completes.
	pb = &pgx.Batch{}
	require.True(t, like.QueuePrefetch(pb))
	pf = pgq.NewPrefetch(conn.SendBatch(e.ctx, pb), func() { released++ })
	n := 0
	for ev, err := range pgq.NewBatch(conn, e.queue, e.cons, *info, pgq.ReadOptions{Prefetch: pf}).Events(e.ctx) {
		require.NoError(t, err)
		require.NotNil(t, ev)
		if n == 0 {
			require.ErrorIs(t, pf.Release(), pgq.ErrPrefetchReading)
		}
		n++
	}
	require.Equal(t, 3, n)
	require.Equal(t, 2, released)
	require.NoError(t, pf.Release())
	require.Equal(t, 2, released, "onClose runs once")
}
