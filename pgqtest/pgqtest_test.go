package pgqtest_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/pgqtest"
	"github.com/pgq-go/pgq/remote"
	"github.com/stretchr/testify/require"
)

var errBoom = errors.New("boom")

// reader is a handler that reads the whole batch, recording the ids, and
// then runs then (if set) with the events it read.
type reader struct {
	ids  []int64
	then func(evs []*pgq.Event) error
}

func (r *reader) ProcessBatch(ctx context.Context, b *pgq.Batch) error {
	r.ids = nil
	var evs []*pgq.Event
	for ev, err := range b.Events(ctx) {
		if err != nil {
			return err
		}
		r.ids = append(r.ids, ev.ID)
		evs = append(evs, ev)
	}
	if r.then != nil {
		return r.then(evs)
	}
	return nil
}

func events(n int) []pgq.EventData {
	evs := make([]pgq.EventData, n)
	for i := range evs {
		evs[i] = pgq.EventData{Type: pgq.T("t"), Data: pgq.T(fmt.Sprint(i))}
	}
	return evs
}

// info is the consumer's pgq.get_consumer_info row.
func info(t *testing.T, pool *pgxpool.Pool, q *pgqtest.Queue) pgq.ConsumerInfo {
	t.Helper()
	ci, err := pgq.GetConsumerInfo(t.Context(), pool, q.Name, q.Consumer)
	require.NoError(t, err)
	return ci
}

// retryQueued counts the queue's events waiting in pgq.retry_queue.
func retryQueued(t *testing.T, pool *pgxpool.Pool, q *pgqtest.Queue) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(t.Context(), `select count(*) from pgq.retry_queue r
		join pgq.queue qq on qq.queue_id = r.ev_queue where qq.queue_name = $1`, q.Name).Scan(&n))
	return n
}

// fatalTB records the first Fatalf and ends the goroutine calling it, as
// testing.T does; everything else goes to the real test.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// expectFatal runs fn on its own goroutine with a TB whose Fatalf is
// recorded, and returns the message; the test fails if fn did not call it.
func expectFatal(t *testing.T, fn func(tb testing.TB)) string {
	t.Helper()
	f := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	require.NotEmpty(t, f.msg, "expected a fatal test failure")
	return f.msg
}

func TestRunBatchDeliversAndFinishes(t *testing.T) {
	t.Parallel()
	pool := sharedPool(t)
	q := pgqtest.NewQueue(t, pool)
	ids := q.Insert(t, events(3)...)
	require.Len(t, ids, 3)
	tick := q.Tick(t)

	h := &reader{}
	res := q.RunBatch(t, h)
	require.NoError(t, res.Err, res)
	require.False(t, res.Panicked)
	require.Equal(t, ids, h.ids)
	require.Equal(t, ids, res.IDs())
	require.Equal(t, 3, res.Seen)
	require.Empty(t, res.Retried)
	require.Equal(t, tick, res.Batch.TickID)
	require.Equal(t, "2", res.Events[2].Data.String)
	require.NotZero(t, res.Batch.ID)

	// Finished: the consumer moved to the batch's end, no batch is open,
	// and the events are not delivered again.
	ci := info(t, pool, q)
	require.Equal(t, tick, ci.LastTick)
	require.Zero(t, ci.CurrentBatch)
	q.Tick(t)
	res = q.RunBatch(t, h)
	require.NoError(t, res.Err)
	require.Empty(t, res.Events)
	require.Empty(t, h.ids)
}

func TestRunBatchRetryAndRedeliver(t *testing.T) {
	t.Parallel()
	pool := sharedPool(t)
	q := pgqtest.NewQueue(t, pool)
	ids := q.Insert(t, events(3)...)
	q.Tick(t)

	res := q.RunBatch(t, &reader{then: func(evs []*pgq.Event) error {
		evs[1].TagRetry(time.Hour)
		return nil
	}})
	require.NoError(t, res.Err)
	require.Equal(t, []int64{ids[1]}, res.Retried)
	require.Zero(t, info(t, pool, q).CurrentBatch, "batch finished")
	require.Equal(t, 1, retryQueued(t, pool, q), "the tagged event waits in the retry queue")

	// An hour early, Redeliver brings it back, once, with Retry counted.
	require.Equal(t, 1, q.Redeliver(t))
	require.Zero(t, retryQueued(t, pool, q))
	h := &reader{}
	res = q.RunBatch(t, h)
	require.NoError(t, res.Err)
	require.Equal(t, []int64{ids[1]}, h.ids)
	require.Len(t, res.Events, 1)
	require.EqualValues(t, 1, res.Events[0].Retry)
	require.Equal(t, "1", res.Events[0].Data.String)

	require.Zero(t, q.Redeliver(t), "nothing left to redeliver")
}

func TestRunBatchHandlerErrorLeavesBatchOpen(t *testing.T) {
	t.Parallel()
	pool := sharedPool(t)
	q := pgqtest.NewQueue(t, pool)
	ids := q.Insert(t, events(2)...)
	q.Tick(t)

	res := q.RunBatch(t, &reader{then: func(evs []*pgq.Event) error {
		evs[0].TagRetry(time.Hour) // dropped with the failed attempt
		return errBoom
	}})
	require.ErrorIs(t, res.Err, errBoom)
	require.False(t, res.Panicked)
	require.Equal(t, ids, res.IDs())
	require.Equal(t, []int64{ids[0]}, res.Retried)
	require.Equal(t, res.Batch.ID, info(t, pool, q).CurrentBatch, "the batch stays open")
	require.Zero(t, retryQueued(t, pool, q), "a failed attempt retries nothing")

	// The same batch again, without a new tick; now it succeeds.
	h := &reader{}
	again := q.RunBatch(t, h)
	require.NoError(t, again.Err)
	require.Equal(t, res.Batch.ID, again.Batch.ID)
	require.Equal(t, ids, h.ids)
	require.Zero(t, info(t, pool, q).CurrentBatch)
}

func TestRunBatchPanicAndFatal(t *testing.T) {
	t.Parallel()
	pool := sharedPool(t)
	q := pgqtest.NewQueue(t, pool)
	ids := q.Insert(t, events(2)...)
	q.Tick(t)

	res := q.RunBatch(t, consumer.BatchHandlerFunc(func(context.Context, *pgq.Batch) error {
		panic("kaboom")
	}))
	require.True(t, res.Panicked)
	require.ErrorContains(t, res.Err, "kaboom")
	require.Equal(t, ids, res.IDs())
	first := res.Batch.ID
	require.Equal(t, first, info(t, pool, q).CurrentBatch)

	// An error marked consumer.Fatal stops a running consumer; here it is
	// reported like any handler error.
	res = q.RunBatch(t, consumer.BatchHandlerFunc(func(context.Context, *pgq.Batch) error {
		return consumer.Fatal(errBoom)
	}))
	require.ErrorIs(t, res.Err, errBoom)
	require.True(t, consumer.IsFatal(res.Err))
	require.False(t, res.Panicked)
	require.Equal(t, first, res.Batch.ID)
	require.Equal(t, first, info(t, pool, q).CurrentBatch)
}

// A handler may fail the test itself (t.Fatal, require): it runs on the
// test's goroutine, and the batch is left unfinished.
func TestHandlerMayFailTheTest(t *testing.T) {
	t.Parallel()
	pool := sharedPool(t)
	q := pgqtest.NewQueue(t, pool)
	ids := q.Insert(t, events(2)...)
	q.Tick(t)

	msg := expectFatal(t, func(tb testing.TB) {
		q.RunBatch(tb, consumer.BatchHandlerFunc(func(ctx context.Context, b *pgq.Batch) error {
			tb.Fatalf("handler says no to batch %d", b.ID())
			return nil
		}))
	})
	require.Contains(t, msg, "handler says no")
	batch := info(t, pool, q).CurrentBatch
	require.NotZero(t, batch, "the batch stays open")

	h := &reader{}
	res := q.RunBatch(t, h)
	require.NoError(t, res.Err)
	require.Equal(t, batch, res.Batch.ID)
	require.Equal(t, ids, h.ids)
}

func TestFailuresNameTheQueue(t *testing.T) {
	t.Parallel()
	pool := sharedPool(t)
	q := pgqtest.NewQueue(t, pool)

	called := false
	msg := expectFatal(t, func(tb testing.TB) {
		q.RunBatch(tb, consumer.BatchHandlerFunc(func(context.Context, *pgq.Batch) error {
			called = true
			return nil
		}))
	})
	require.Contains(t, msg, q.Name)
	require.Contains(t, msg, "no batch ready")
	require.False(t, called)

	// Database errors: the queue is gone (the cleanup's drop tolerates it).
	require.NoError(t, pgq.DropQueue(t.Context(), pool, q.Name, true))
	for name, fn := range map[string]func(tb testing.TB){
		"insert":   func(tb testing.TB) { q.Insert(tb, events(1)...) },
		"tick":     func(tb testing.TB) { q.Tick(tb) },
		"runbatch": func(tb testing.TB) { q.RunBatch(tb, &reader{}) },
		"remote": func(tb testing.TB) {
			q.RunRemoteBatch(tb, pool, remote.HandlerFunc(func(context.Context, *pgq.Batch, pgx.Tx) error { return nil }))
		},
	} {
		msg := expectFatal(t, fn)
		require.Contains(t, msg, q.Name, name)
		require.Contains(t, msg, "queue not found", name)
	}
}

func TestNewQueueNamesAndCleanup(t *testing.T) {
	t.Parallel()
	pool := sharedPool(t)
	var names []string
	for _, sub := range []string{"plain", "with spaces/and ünïcode 'quotes'; drop table x", strings.Repeat("long", 100)} {
		t.Run(sub, func(t *testing.T) {
			q := pgqtest.NewQueue(t, pool)
			require.True(t, strings.HasPrefix(q.Name, "pgqtest_Test"), q.Name)
			require.NoError(t, pgq.ValidateName("queue", q.Name))
			require.LessOrEqual(t, len(q.Name), 80)
			require.Equal(t, pgqtest.ConsumerName, q.Consumer)
			_, err := pgq.GetQueueInfo(t.Context(), pool, q.Name)
			require.NoError(t, err)
			require.Zero(t, info(t, pool, q).CurrentBatch)
			q.Insert(t, events(1)...)
			q.Tick(t)
			res := q.RunBatch(t, &reader{then: func(evs []*pgq.Event) error {
				evs[0].TagRetry(time.Hour)
				return nil
			}})
			require.Len(t, res.Retried, 1)
			names = append(names, q.Name)
		})
	}
	require.Len(t, names, 3)
	// Each name is unique, and each queue was dropped, with its retry
	// events, when its test ended.
	for i, name := range names {
		require.NotContains(t, names[i+1:], name)
		_, err := pgq.GetQueueInfo(t.Context(), pool, name)
		require.ErrorIs(t, err, pgq.ErrQueueNotFound)
	}
	var left int
	require.NoError(t, pool.QueryRow(t.Context(), `select count(*) from pgq.retry_queue r
		left join pgq.queue qq on qq.queue_id = r.ev_queue
		where qq.queue_id is null or qq.queue_name = any($1)`, names).Scan(&left))
	require.Zero(t, left)

	// Two queues of one test are distinct.
	a, b := pgqtest.NewQueue(t, pool), pgqtest.NewQueue(t, pool)
	require.NotEqual(t, a.Name, b.Name)
}

// Tests sharing one database, in parallel, each see only their own events.
func TestParallelQueuesAreIsolated(t *testing.T) {
	t.Parallel()
	pool := sharedPool(t)
	var mu sync.Mutex
	seen := map[string][]string{}
	for i := range 4 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			q := pgqtest.NewQueue(t, pool)
			want := fmt.Sprintf("queue %d", i)
			q.Insert(t, pgq.EventData{Data: pgq.T(want)})
			q.Tick(t)
			res := q.RunBatch(t, &reader{})
			require.NoError(t, res.Err)
			mu.Lock()
			defer mu.Unlock()
			for _, ev := range res.Events {
				seen[want] = append(seen[want], ev.Data.String)
			}
		})
	}
	t.Cleanup(func() {
		for i := range 4 {
			want := fmt.Sprintf("queue %d", i)
			require.Equal(t, []string{want}, seen[want])
		}
	})
}

func TestRunRemoteBatch(t *testing.T) {
	t.Parallel()
	pool := sharedPool(t)
	dst := cluster.NewPlainDB(t).Pool
	_, err := dst.Exec(t.Context(), "create table got (id bigint primary key, data text)")
	require.NoError(t, err)
	q := pgqtest.NewQueue(t, pool)
	ids := q.Insert(t, events(3)...)
	q.Tick(t)

	apply := func(fail bool) remote.Handler {
		return remote.HandlerFunc(func(ctx context.Context, b *pgq.Batch, tx pgx.Tx) error {
			for ev, err := range b.Events(ctx) {
				if err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, "insert into got values ($1, $2)", ev.ID, ev.Data.String); err != nil {
					return err
				}
			}
			if fail {
				return errBoom
			}
			return nil
		})
	}
	count := func() int {
		var n int
		require.NoError(t, dst.QueryRow(t.Context(), "select count(*) from got").Scan(&n))
		return n
	}

	// A failing handler's writes roll back with the batch.
	res := q.RunRemoteBatch(t, dst, apply(true))
	require.ErrorIs(t, res.Err, errBoom)
	require.Equal(t, ids, res.IDs())
	require.Zero(t, count())
	require.Equal(t, res.Batch.ID, info(t, pool, q).CurrentBatch)

	res = q.RunRemoteBatch(t, dst, apply(false))
	require.NoError(t, res.Err)
	require.Equal(t, ids, res.IDs())
	require.Equal(t, 3, count())
	require.Zero(t, info(t, pool, q).CurrentBatch)
	last, err := remote.LastBatch(t.Context(), dst, q.Consumer, q.Name)
	require.NoError(t, err)
	require.Equal(t, res.Batch.ID, last, "the batch is recorded on the destination under the queue's key")

	// Another test's queue into the same destination keeps its own position.
	q2 := pgqtest.NewQueue(t, pool)
	q2.Insert(t, pgq.EventData{Data: pgq.T("other")})
	q2.Tick(t)
	res2 := q2.RunRemoteBatch(t, dst, remote.HandlerFunc(func(ctx context.Context, b *pgq.Batch, tx pgx.Tx) error {
		evs, err := b.All(ctx)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "insert into got values ($1 + 1000000, $2)", evs[0].ID, evs[0].Data.String)
		return err
	}))
	require.NoError(t, res2.Err)
	require.Equal(t, 4, count())
	last, err = remote.LastBatch(t.Context(), dst, q.Consumer, q.Name)
	require.NoError(t, err)
	require.Equal(t, res.Batch.ID, last)
}
