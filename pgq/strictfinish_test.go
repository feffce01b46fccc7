package pgq_test

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

// retryRows counts the events waiting in pgq.retry_queue.
func retryRows(t *testing.T, e *env) int {
	t.Helper()
	var n int
	require.NoError(t, e.pool.QueryRow(e.ctx, "select count(*) from pgq.retry_queue").Scan(&n))
	return n
}

// strictRound reads info's events in a transaction on its own connection,
// tags them with tag, then sends the strict finish, a commit and the next
// batch's statement in one pipeline, as the consumer does. It returns the
// next batch, the transaction status, the finish's error and the commit's.
func strictRound(t *testing.T, e *env, info *pgq.BatchInfo, before func(), tag func(*pgq.Batch, []*pgq.Event)) (next *pgq.BatchInfo, txStatus byte, finishErr, commitErr error) {
	t.Helper()
	conn, err := e.pool.Acquire(e.ctx)
	require.NoError(t, err)
	defer conn.Release()
	tx, err := conn.Begin(e.ctx)
	require.NoError(t, err)
	b := pgq.NewBatch(tx, e.queue, e.cons, *info, pgq.ReadOptions{})
	evs, err := b.All(e.ctx)
	require.NoError(t, err)
	tag(b, evs)
	if before != nil {
		before()
	}
	pb := &pgx.Batch{}
	readFinish := b.QueueFinishStrict(pb)
	pb.Queue("commit")
	readNext, err := pgq.QueueNextBatch(pb, e.queue, e.cons, pgq.BatchOptions{})
	require.NoError(t, err)
	res := conn.SendBatch(e.ctx, pb)
	finishErr = readFinish(res)
	_, commitErr = res.Exec()
	next, nextErr := readNext(res)
	if finishErr == nil && commitErr == nil {
		require.NoError(t, nextErr, "the next batch is asked in a transaction of its own")
	} else {
		require.Error(t, nextErr, "the server skips what follows a failed statement")
	}
	res.Close()
	txStatus = conn.Conn().PgConn().TxStatus()
	if txStatus != 'I' {
		require.NoError(t, tx.Rollback(e.ctx))
	}
	return next, txStatus, finishErr, commitErr
}

// TestQueueFinishStrict: the strict finish, a commit and the next batch's
// statement go in one round trip. A finished batch commits its retries and
// the next batch opens; a batch PgQ no longer knows (finished elsewhere)
// fails with ErrBatchNotFound and neither the commit nor the next
// statement runs, so its retries are rolled back with it; a retry by id that finds fewer events
// than tagged fails the same way, with its own message.
func TestQueueFinishStrict(t *testing.T) {
	t.Parallel()
	e := setup(t)
	insert := func(data string) {
		_, err := pgq.InsertEvent(e.ctx, e.pool, e.queue, pgq.EventData{Data: pgq.T(data)})
		require.NoError(t, err)
	}

	// Finished: retries committed, the next batch opened after the commit.
	insert("a")
	insert("b")
	e.tick(t)
	first := e.next(t)
	insert("c")
	e.tick(t)
	next, st, ferr, cerr := strictRound(t, e, first, nil, func(b *pgq.Batch, evs []*pgq.Event) {
		require.Len(t, evs, 2)
		evs[0].TagRetry(time.Hour)
		b.TagRetryID(evs[1].ID, time.Now().Add(time.Hour)) // retried by id, on the server
	})
	require.NoError(t, ferr)
	require.NoError(t, cerr)
	require.EqualValues(t, 'I', st)
	require.NotNil(t, next, "the next batch opens in the same round trip")
	require.Equal(t, first.TickID, next.PrevTickID)
	require.Equal(t, 2, retryRows(t, e))
	got := e.events(t, next, pgq.ReadOptions{})
	require.Len(t, got, 1)
	require.Equal(t, "c", got[0].Data.String)

	// Finished elsewhere meanwhile: nothing of this round commits.
	again, st, ferr, cerr := strictRound(t, e, next, func() {
		ok, err := pgq.FinishBatch(e.ctx, e.pool, next.ID)
		require.NoError(t, err)
		require.True(t, ok)
	}, func(b *pgq.Batch, evs []*pgq.Event) { evs[0].TagRetry(time.Hour) })
	require.ErrorIs(t, ferr, pgq.ErrBatchNotFound)
	require.Error(t, cerr, "the commit runs only after a finished batch")
	require.EqualValues(t, 'E', st, "the transaction is left failed, for the caller to roll back")
	require.Nil(t, again)
	require.Equal(t, 2, retryRows(t, e), "the failed round's retry was rolled back")

	// A retry by id that does not find its event: the round fails, with
	// the counts, and is not mistaken for an unknown batch.
	insert("d")
	e.tick(t)
	third := e.next(t)
	again, st, ferr, cerr = strictRound(t, e, third, nil, func(b *pgq.Batch, evs []*pgq.Event) {
		evs[0].TagRetry(time.Hour)
		b.TagRetryID(evs[0].ID+1000, time.Now()) // no such event in the batch
	})
	require.Error(t, ferr)
	require.NotErrorIs(t, ferr, pgq.ErrBatchNotFound)
	require.ErrorContains(t, ferr, "0 tagged events found in the batch, 1 expected")
	require.ErrorContains(t, ferr, "retry events of batch")
	require.Error(t, cerr)
	require.EqualValues(t, 'E', st)
	require.Nil(t, again)
	require.Equal(t, 2, retryRows(t, e))
	require.Equal(t, third.ID, e.next(t).ID, "the batch is still open")
}
