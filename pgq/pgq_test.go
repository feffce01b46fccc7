package pgq_test

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

func ids(evs []*pgq.Event) []int64 {
	out := make([]int64, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

func TestEventsInvisibleUntilTickAfterCommit(t *testing.T) {
	t.Parallel()
	e := setup(t)
	tx, err := e.pool.Begin(e.ctx)
	require.NoError(t, err)
	id, err := pgq.InsertEvent(e.ctx, tx, e.queue, pgq.EventData{Data: pgq.T("x")})
	require.NoError(t, err)

	// A tick while the producer's transaction is open does not include it.
	e.tick(t)
	info := e.next(t)
	require.Empty(t, e.events(t, info, pgq.ReadOptions{}))
	_, err = pgq.FinishBatch(e.ctx, e.pool, info.ID)
	require.NoError(t, err)

	require.NoError(t, tx.Commit(e.ctx))
	// Committed but not yet ticked: no batch.
	b, err := pgq.NextBatch(e.ctx, e.pool, e.queue, e.cons)
	require.NoError(t, err)
	require.Nil(t, b)

	e.tick(t)
	info = e.next(t)
	require.Equal(t, []int64{id}, ids(e.events(t, info, pgq.ReadOptions{})))
}

func TestRolledBackInsertNeverAppears(t *testing.T) {
	t.Parallel()
	e := setup(t)
	tx, err := e.pool.Begin(e.ctx)
	require.NoError(t, err)
	_, err = pgq.InsertEvent(e.ctx, tx, e.queue, pgq.EventData{Data: pgq.T("gone")})
	require.NoError(t, err)
	_, err = pgq.InsertEvents(e.ctx, tx, e.queue, slices.Values([]pgq.EventData{{Data: pgq.T("gone too")}}))
	require.NoError(t, err)
	require.NoError(t, tx.Rollback(e.ctx))
	kept, err := pgq.InsertEvent(e.ctx, e.pool, e.queue, pgq.EventData{Data: pgq.T("kept")})
	require.NoError(t, err)
	e.tick(t)
	evs := e.events(t, e.next(t), pgq.ReadOptions{FetchSize: 10})
	require.Equal(t, []int64{kept}, ids(evs))
}

func TestNullEmptyUnicodeAndLargePayloads(t *testing.T) {
	t.Parallel()
	e := setup(t)
	big := strings.Repeat("ü€𝄞x", 1<<20/10) // ~1 MiB of multi-byte text
	in := []pgq.EventData{
		{},
		{Type: pgq.T(""), Data: pgq.T(""), Extra1: pgq.T(""), Extra2: pgq.T(""), Extra3: pgq.T(""), Extra4: pgq.T("")},
		{Type: pgq.T("ünï"), Data: pgq.T("日本語 'quoted' \\ back; -- comment"), Extra4: pgq.T("e4")},
		{Type: pgq.T("big"), Data: pgq.T(big)},
	}
	for _, ev := range in {
		_, err := pgq.InsertEvent(e.ctx, e.pool, e.queue, ev)
		require.NoError(t, err)
	}
	e.tick(t)
	info := e.next(t)
	for _, fetch := range []int{0, 2} {
		evs := e.events(t, info, pgq.ReadOptions{FetchSize: fetch})
		require.Len(t, evs, len(in))
		for i := range in {
			require.Equal(t, in[i], evs[i].EventData, "event %d, fetch %d", i, fetch)
			require.Zero(t, evs[i].Retry)
			require.NotZero(t, evs[i].TxID)
		}
	}
}

func TestOversizedPayloadRejectedBeforeSQL(t *testing.T) {
	t.Parallel()
	e := setup(t)
	huge := pgq.EventData{Data: pgq.T(strings.Repeat("x", pgq.MaxPayload+1))}
	_, err := pgq.InsertEvent(e.ctx, e.pool, e.queue, huge)
	require.ErrorIs(t, err, pgq.ErrInvalidArgument)
	tx, err := e.pool.Begin(e.ctx)
	require.NoError(t, err)
	defer tx.Rollback(e.ctx)
	_, err = pgq.InsertEvents(e.ctx, tx, e.queue, slices.Values([]pgq.EventData{{Data: pgq.T("ok")}, huge}))
	require.ErrorIs(t, err, pgq.ErrInvalidArgument)
}

func TestSameBatchUntilFinished(t *testing.T) {
	t.Parallel()
	e := setup(t)
	_, err := pgq.InsertEvent(e.ctx, e.pool, e.queue, pgq.EventData{Data: pgq.T("a")})
	require.NoError(t, err)
	e.tick(t)
	first := e.next(t)
	e.tick(t)
	again := e.next(t)
	require.Equal(t, *first, *again)

	ok, err := pgq.FinishBatch(e.ctx, e.pool, first.ID)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = pgq.FinishBatch(e.ctx, e.pool, first.ID)
	require.NoError(t, err)
	require.False(t, ok, "finishing an unknown batch is reported")

	after := e.next(t)
	require.NotEqual(t, first.ID, after.ID)
	require.Equal(t, first.TickID, after.PrevTickID)
}

// rawRows reads the event tables directly, the way a consumer cannot.
func rawRows(t *testing.T, e *env) []map[string]any {
	t.Helper()
	rows, err := e.pool.Query(e.ctx, `select ev_id, ev_time, ev_txid, ev_owner, ev_retry, ev_type, ev_data,
		ev_extra1, ev_extra2, ev_extra3, ev_extra4 from pgq.event_template order by ev_id`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowToMap)
	require.NoError(t, err)
	return out
}

func TestCopyRowsIdenticalToInsertEvent(t *testing.T) {
	t.Parallel()
	e := setup(t)
	evs := []pgq.EventData{
		{Type: pgq.T("t"), Data: pgq.T("d1"), Extra1: pgq.T("x"), Extra3: pgq.T("")},
		{Data: pgq.T("d2 'q' \\ \t\n")},
	}
	tx, err := e.pool.Begin(e.ctx)
	require.NoError(t, err)
	for _, ev := range evs {
		_, err := pgq.InsertEvent(e.ctx, tx, e.queue, ev)
		require.NoError(t, err)
	}
	n, err := pgq.InsertEvents(e.ctx, tx, e.queue, slices.Values(evs))
	require.NoError(t, err)
	require.EqualValues(t, 2, n)
	require.NoError(t, tx.Commit(e.ctx))

	rows := rawRows(t, e)
	require.Len(t, rows, 4)
	for i := range 2 {
		a, b := rows[i], rows[i+2]
		require.Equal(t, a["ev_id"].(int64)+2, b["ev_id"], "ids come from the same sequence")
		for _, col := range []string{"ev_time", "ev_txid", "ev_owner", "ev_retry", "ev_type", "ev_data", "ev_extra1", "ev_extra2", "ev_extra3", "ev_extra4"} {
			require.Equal(t, a[col], b[col], "column %s of row %d", col, i)
		}
	}

	// And a consumer sees the same events.
	e.tick(t)
	got := e.events(t, e.next(t), pgq.ReadOptions{FetchSize: 3})
	require.Len(t, got, 4)
	for i := range 2 {
		require.Equal(t, got[i].EventData, got[i+2].EventData)
		require.Equal(t, got[i].Time, got[i+2].Time)
		require.Equal(t, got[i].TxID, got[i+2].TxID)
	}
}

// TestInsertEventIDs: the ids InsertEvent returns in one transaction are
// the ids of the delivered events, in order. (It replaces the test of the
// removed InsertEventsPipelined, with the same assertions.)
func TestInsertEventIDs(t *testing.T) {
	t.Parallel()
	e := setup(t)
	tx, err := e.pool.Begin(e.ctx)
	require.NoError(t, err)
	var got []int64
	for _, ev := range []pgq.EventData{{Data: pgq.T("1")}, {Data: pgq.T("2")}} {
		id, err := pgq.InsertEvent(e.ctx, tx, e.queue, ev)
		require.NoError(t, err)
		got = append(got, id)
	}
	require.NoError(t, tx.Commit(e.ctx))
	require.Len(t, got, 2)
	e.tick(t)
	require.Equal(t, got, ids(e.events(t, e.next(t), pgq.ReadOptions{})))
}

func TestRetriesComeBackWithRetryCount(t *testing.T) {
	t.Parallel()
	e := setup(t)
	var evIDs []int64
	for i := range 4 {
		id, err := pgq.InsertEvent(e.ctx, e.pool, e.queue, pgq.EventData{Type: pgq.T("t"), Data: pgq.T(string(rune('a' + i))), Extra2: pgq.T("x2")})
		require.NoError(t, err)
		evIDs = append(evIDs, id)
	}
	e.tick(t)
	info := e.next(t)
	// Three ways to retry: event_retry by delay, by time, and the raw O(1) path via tags.
	require.NoError(t, pgq.RetryEvent(e.ctx, e.pool, info.ID, evIDs[0], 0))
	require.NoError(t, pgq.RetryEventAt(e.ctx, e.pool, info.ID, evIDs[1], time.Now().Add(-time.Second)))
	b := pgq.NewBatch(e.pool, e.queue, e.cons, *info, pgq.ReadOptions{FetchSize: 2})
	evs, err := b.All(e.ctx)
	require.NoError(t, err)
	evs[2].TagRetry(0)
	evs[3].TagRetry(time.Hour)
	evs[3].TagDone() // undone: evs[3] is done
	require.Equal(t, 1, b.RetryCount())

	tx, err := e.pool.Begin(e.ctx)
	require.NoError(t, err)
	ok, err := b.Finish(e.ctx, tx)
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, tx.Commit(e.ctx))

	moved, err := pgq.MaintRetryEvents(e.ctx, e.pool)
	require.NoError(t, err)
	require.EqualValues(t, 3, moved)
	e.tick(t)
	again := e.events(t, e.next(t), pgq.ReadOptions{})
	require.Equal(t, evIDs[:3], ids(again))
	for i, ev := range again {
		require.EqualValues(t, 1, ev.Retry)
		require.Equal(t, evs[i].EventData, ev.EventData)
		require.True(t, ev.Time.Equal(evs[i].Time))
	}
}

func TestBatchRetry(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for range 3 {
		_, err := pgq.InsertEvent(e.ctx, e.pool, e.queue, pgq.EventData{Data: pgq.T("x")})
		require.NoError(t, err)
	}
	e.tick(t)
	info := e.next(t)
	n, err := pgq.BatchRetry(e.ctx, e.pool, info.ID, 0)
	require.NoError(t, err)
	require.Equal(t, 3, n)
	_, err = pgq.FinishBatch(e.ctx, e.pool, info.ID)
	require.NoError(t, err)
	_, err = pgq.BatchRetry(e.ctx, e.pool, info.ID, 0)
	require.ErrorIs(t, err, pgq.ErrBatchNotFound)

	moved, err := pgq.MaintRetryEvents(e.ctx, e.pool)
	require.NoError(t, err)
	require.EqualValues(t, 3, moved)
	e.tick(t)
	require.Len(t, e.events(t, e.next(t), pgq.ReadOptions{}), 3)
}

func TestFilterServerSide(t *testing.T) {
	t.Parallel()
	e := setup(t)
	hostile := `a'b\c; drop table x; --`
	targets := []string{"n1", "n2", hostile, "n1", "ünï", ""}
	for _, tg := range targets {
		_, err := pgq.InsertEvent(e.ctx, e.pool, e.queue, pgq.EventData{Type: pgq.T("copy"), Extra1: pgq.T(tg)})
		require.NoError(t, err)
	}
	_, err := pgq.InsertEvent(e.ctx, e.pool, e.queue, pgq.EventData{Type: pgq.T("other")})
	require.NoError(t, err)
	e.tick(t)
	info := e.next(t)
	extra1 := func(evs []*pgq.Event) []string {
		var out []string
		for _, ev := range evs {
			out = append(out, ev.Extra1.String)
		}
		return out
	}
	cases := []struct {
		name string
		f    pgq.Filter
		want []string
	}{
		{"eq", pgq.Eq(pgq.FieldExtra1, "n1"), []string{"n1", "n1"}},
		{"hostile", pgq.Eq(pgq.FieldExtra1, hostile), []string{hostile}},
		{"in", pgq.In(pgq.FieldExtra1, "n2", "ünï", ""), []string{"n2", "ünï", ""}},
		{"empty set", pgq.In(pgq.FieldExtra1), nil},
		{"null", pgq.IsNull(pgq.FieldExtra1), []string{""}},
		{"prefix", pgq.HasPrefix(pgq.FieldExtra1, "a'b\\"), []string{hostile}},
		{"and/not", pgq.And(pgq.Eq(pgq.FieldType, "copy"), pgq.Not(pgq.HasPrefix(pgq.FieldExtra1, "n"))), []string{hostile, "ünï", ""}},
		{"or", pgq.Or(pgq.Eq(pgq.FieldExtra1, "n2"), pgq.Eq(pgq.FieldType, "other")), []string{"n2", ""}},
	}
	for _, c := range cases {
		for _, fetch := range []int{0, 2} {
			got := e.events(t, info, pgq.ReadOptions{FetchSize: fetch, Filter: c.f})
			require.Equal(t, c.want, extra1(got), "%s fetch %d (%s)", c.name, fetch, c.f)
		}
	}

	bad := pgq.Eq("ev_id; drop", "x")
	require.ErrorIs(t, bad.Err(), pgq.ErrInvalidArgument)
	_, err = pgq.NewBatch(e.pool, e.queue, e.cons, *info, pgq.ReadOptions{Filter: bad}).All(e.ctx)
	require.ErrorIs(t, err, pgq.ErrInvalidArgument)
	require.Error(t, pgq.Eq(pgq.FieldExtra1, "nul\x00byte").Err())
}

func TestErrors(t *testing.T) {
	t.Parallel()
	e := setup(t)
	_, err := pgq.NextBatch(e.ctx, e.pool, e.queue, "nobody")
	require.ErrorIs(t, err, pgq.ErrNotRegistered)
	require.Contains(t, err.Error(), "q/nobody")
	var pe *pgconn.PgError
	require.True(t, errors.As(err, &pe), "the PostgreSQL error stays reachable")

	_, err = pgq.InsertEvent(e.ctx, e.pool, "missing", pgq.EventData{})
	require.ErrorIs(t, err, pgq.ErrQueueNotFound)
	_, err = pgq.RegisterConsumer(e.ctx, e.pool, "missing", "c")
	require.ErrorIs(t, err, pgq.ErrQueueNotFound)
	require.ErrorIs(t, pgq.DropQueue(e.ctx, e.pool, "missing", false), pgq.ErrQueueNotFound)
	_, err = pgq.GetQueueInfo(e.ctx, e.pool, "missing")
	require.ErrorIs(t, err, pgq.ErrQueueNotFound)
	_, err = pgq.GetConsumerInfo(e.ctx, e.pool, e.queue, "nobody")
	require.ErrorIs(t, err, pgq.ErrNotRegistered)
	ok, err := pgq.UnregisterConsumer(e.ctx, e.pool, e.queue, "nobody")
	require.NoError(t, err)
	require.False(t, ok)
	require.Error(t, pgq.DropQueue(e.ctx, e.pool, e.queue, false), "consumers still attached")

	for _, name := range []string{"", strings.Repeat("x", pgq.MaxNameLen+1), "tab\tname"} {
		_, err = pgq.CreateQueue(e.ctx, e.pool, name)
		require.ErrorIs(t, err, pgq.ErrInvalidName)
		_, err = pgq.NextBatch(e.ctx, e.pool, e.queue, name)
		require.ErrorIs(t, err, pgq.ErrInvalidName)
	}
	_, err = pgq.NextBatchCustom(e.ctx, e.pool, e.queue, e.cons, pgq.BatchOptions{MinCount: -1})
	require.ErrorIs(t, err, pgq.ErrInvalidArgument)

	plain := cluster.NewPlainDB(t)
	_, err = pgq.Version(e.ctx, plain.Pool)
	require.ErrorIs(t, err, pgq.ErrNoExtension)
	require.Contains(t, err.Error(), "postgresql-15-pgq3")
	require.ErrorIs(t, pgq.CheckExtension(e.ctx, plain.Pool), pgq.ErrNoExtension)
	require.NoError(t, pgq.CheckExtension(e.ctx, e.pool))
}

func TestNoTicks(t *testing.T) {
	t.Parallel()
	e := setup(t)
	// A queue whose only tick is gone: create one with external ticker and no ticks.
	_, err := pgq.CreateQueue(e.ctx, e.pool, "q2")
	require.NoError(t, err)
	_, err = e.pool.Exec(e.ctx, "delete from pgq.tick where tick_queue = (select queue_id from pgq.queue where queue_name = 'q2')")
	require.NoError(t, err)
	_, err = pgq.RegisterConsumer(e.ctx, e.pool, "q2", "c")
	require.ErrorIs(t, err, pgq.ErrNoTicks)
}

func TestQueueAndConsumerAdmin(t *testing.T) {
	t.Parallel()
	e := setup(t)
	require.NoError(t, pgq.SetQueueConfig(e.ctx, e.pool, e.queue, pgq.QueueConfig{
		TickerMaxCount:   pgq.Ptr(7),
		TickerMaxLag:     pgq.Ptr(250 * time.Millisecond),
		TickerIdlePeriod: pgq.Ptr(90 * time.Second),
		RotationPeriod:   pgq.Ptr(time.Hour),
		TickerPaused:     pgq.Ptr(true),
	}))
	qi, err := pgq.GetQueueInfo(e.ctx, e.pool, e.queue)
	require.NoError(t, err)
	require.Equal(t, 7, qi.TickerMaxCount)
	require.Equal(t, 250*time.Millisecond, qi.TickerMaxLag)
	require.Equal(t, 90*time.Second, qi.TickerIdlePeriod)
	require.Equal(t, time.Hour, qi.RotationPeriod)
	require.True(t, qi.TickerPaused)
	require.Equal(t, 3, qi.NTables)
	_, err = pgq.Tick(e.ctx, e.pool, e.queue)
	require.ErrorContains(t, err, "paused", "paused queue does not tick")
	require.NoError(t, pgq.SetQueueConfig(e.ctx, e.pool, e.queue, pgq.QueueConfig{TickerPaused: pgq.Ptr(false)}))
	require.NoError(t, pgq.SetQueueConfig(e.ctx, e.pool, e.queue, pgq.QueueConfig{DisableInsert: pgq.Ptr(true)}))
	_, err = pgq.InsertEvent(e.ctx, e.pool, e.queue, pgq.EventData{})
	require.ErrorContains(t, err, "disallowed")
	require.NoError(t, pgq.SetQueueConfig(e.ctx, e.pool, e.queue, pgq.QueueConfig{DisableInsert: pgq.Ptr(false)}))
	require.ErrorIs(t, pgq.SetQueueConfig(e.ctx, e.pool, e.queue, pgq.QueueConfig{TickerMaxCount: pgq.Ptr(0)}), pgq.ErrInvalidArgument)

	created, err := pgq.CreateQueue(e.ctx, e.pool, e.queue)
	require.NoError(t, err)
	require.False(t, created)
	qs, err := pgq.ListQueues(e.ctx, e.pool)
	require.NoError(t, err)
	require.Len(t, qs, 1)

	t1 := e.tick(t)
	_, err = pgq.InsertEvent(e.ctx, e.pool, e.queue, pgq.EventData{Data: pgq.T("x")})
	require.NoError(t, err)
	e.tick(t)
	ci, err := pgq.GetConsumerInfo(e.ctx, e.pool, e.queue, e.cons)
	require.NoError(t, err)
	require.Positive(t, ci.PendingEvents, "an estimate from the event sequence (force_tick inflates it)")
	require.Zero(t, ci.CurrentBatch)

	info := e.next(t)
	ci, err = pgq.GetConsumerInfo(e.ctx, e.pool, e.queue, e.cons)
	require.NoError(t, err)
	require.Equal(t, info.ID, ci.CurrentBatch)
	_, err = pgq.FinishBatch(e.ctx, e.pool, info.ID)
	require.NoError(t, err)

	// Rewind to t1: the event comes again.
	require.NoError(t, pgq.RegisterConsumerAt(e.ctx, e.pool, e.queue, e.cons, t1))
	evs := e.events(t, e.next(t), pgq.ReadOptions{})
	require.Len(t, evs, 1)
	require.ErrorIs(t, pgq.RegisterConsumerAt(e.ctx, e.pool, e.queue, e.cons, 0), pgq.ErrInvalidArgument)
	// A tick the queue does not have: its own sentinel, the server's
	// error still reachable.
	err = pgq.RegisterConsumerAt(e.ctx, e.pool, e.queue, e.cons, 1<<40)
	require.ErrorIs(t, err, pgq.ErrTickNotFound)
	require.ErrorContains(t, err, "cannot reposition, tick not found")

	again, err := pgq.RegisterConsumer(e.ctx, e.pool, e.queue, e.cons)
	require.NoError(t, err)
	require.False(t, again)
	cs, err := pgq.ListConsumers(e.ctx, e.pool, "")
	require.NoError(t, err)
	require.Len(t, cs, 1)
	ok, err := pgq.UnregisterConsumer(e.ctx, e.pool, e.queue, e.cons)
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, pgq.DropQueue(e.ctx, e.pool, e.queue, false))
}

// Not parallel: the heap measurement must not see other tests' allocations.
func TestStreamingBoundedMemory(t *testing.T) {
	e := setup(t)
	const n = 200_000
	payload := strings.Repeat("p", 1000) // 200 MB of events in all
	tx, err := e.pool.Begin(e.ctx)
	require.NoError(t, err)
	_, err = pgq.InsertEvents(e.ctx, tx, e.queue, func(yield func(pgq.EventData) bool) {
		for range n {
			if !yield(pgq.EventData{Data: pgq.T(payload)}) {
				return
			}
		}
	})
	require.NoError(t, err)
	require.NoError(t, tx.Commit(e.ctx))
	e.tick(t)
	info := e.next(t)

	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak uint64
	count := 0
	b := pgq.NewBatch(e.pool, e.queue, e.cons, *info, pgq.ReadOptions{FetchSize: 500})
	for ev, err := range b.Events(context.Background()) {
		require.NoError(t, err)
		require.Len(t, ev.Data.String, 1000)
		count++
		if count%20_000 == 0 {
			runtime.GC() // live heap: what streaming retains
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > base && ms.HeapAlloc-base > peak {
				peak = ms.HeapAlloc - base
			}
		}
	}
	require.Equal(t, n, count)
	require.Equal(t, n, b.Seen())
	// 200 MB streamed; the live heap may only hold about one fetch.
	require.Less(t, peak, uint64(16<<20), "heap grew by %d MiB while streaming", peak>>20)
	t.Logf("streamed %d events (%d MiB), heap growth peak %d MiB", n, n*1000>>20, peak>>20)
}
