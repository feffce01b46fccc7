package local_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/local"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

// TestAppliesBatchesAndTracksTicks: every batch is applied once, and the
// file holds each batch's end tick before the next batch is processed
// (the next batch always finds its start tick there), empty batches
// included.
func TestAppliesBatchesAndTracksTicks(t *testing.T) {
	t.Parallel()
	e := setup(t)
	var mu sync.Mutex
	var wrong []string
	a := &applier{dst: e.dst.Pool, by: "go", before: func(ctx context.Context, b *pgq.Batch) error {
		if got, err := os.ReadFile(e.file); err != nil || string(got) != strconv.FormatInt(b.Info.PrevTickID, 10) {
			mu.Lock()
			wrong = append(wrong, fmt.Sprintf("batch %d..%d found the file at %q (%v)", b.Info.PrevTickID, b.Info.TickID, got, err))
			mu.Unlock()
		}
		return nil
	}}
	var errs counter
	cfg := e.cfg(t)
	cfg.Consumer.Hooks.OnError = func(consumer.ErrorInfo) { errs.inc() }
	e.start(t, cfg, a)

	first := e.Produce(t, 3, nil)
	t2 := e.Tick(t)
	second := e.Produce(t, 2, nil)
	t3 := e.Tick(t)
	t4 := e.Tick(t) // an empty batch
	e.waitQueueTick(t, t4)

	require.Equal(t, t4, e.fileTick(t))
	e.requireExactlyOnce(t, first, second)
	var ends []int64
	a.mu.Lock()
	for _, b := range a.batches {
		ends = append(ends, b.TickID)
	}
	a.mu.Unlock()
	require.Equal(t, []int64{t2, t3, t4}, ends, "one batch per tick, in order")
	mu.Lock()
	require.Empty(t, wrong)
	mu.Unlock()
	require.Zero(t, errs.get())
	_, err := os.Stat(e.file + ".new")
	require.ErrorIs(t, err, os.ErrNotExist, "no temporary file left behind")
}

// TestSkipsBatchAppliedBeforeCrash: a process applied a batch, wrote its
// end tick to the file and died before finish_batch. The next run
// finishes that batch (same batch id) without handing it to the handler,
// and goes on with the next one.
func TestSkipsBatchAppliedBeforeCrash(t *testing.T) {
	t.Parallel()
	e := setup(t)
	first := e.Produce(t, 3, nil)
	t2 := e.Tick(t)
	second := e.Produce(t, 2, nil)
	t3 := e.Tick(t)

	// The dead process: batch opened (and committed), applied, file written.
	open, err := pgq.NextBatch(e.Ctx, e.Pool, e.Queue, e.Consumer)
	require.NoError(t, err)
	require.Equal(t, t2, open.TickID)
	for _, id := range first {
		_, err := e.dst.Pool.Exec(e.Ctx, "insert into applied values ($1, $2, 'dead')", id, t2)
		require.NoError(t, err)
	}
	e.writeTick(t, t2)

	a := &applier{dst: e.dst.Pool, by: "go"}
	var finished batchLog
	var errs counter
	cfg := e.cfg(t)
	cfg.Consumer.Hooks.OnBatch = finished.add
	cfg.Consumer.Hooks.OnError = func(consumer.ErrorInfo) { errs.inc() }
	e.start(t, cfg, a)
	e.waitQueueTick(t, t3)

	e.requireExactlyOnce(t, first, second)
	require.NotContains(t, a.batchIDs(), open.ID, "the applied batch is not applied again")
	require.Equal(t, open.ID, finished.ids()[0], "the open batch is finished, not dropped")
	require.Zero(t, errs.get(), "a normal restart is no error")
	require.Equal(t, t3, e.fileTick(t))
}

// TestTwoInstancesOneFile: two instances on one tracking file get the same
// batch; the advisory lock lets one apply it while the other waits, and
// the other then finds the file at the batch's end tick and skips it.
func TestTwoInstancesOneFile(t *testing.T) {
	t.Parallel()
	e := setup(t)
	var (
		calls   counter
		entered = make(chan int64, 1)
		release = make(chan struct{})
		first   atomic.Bool
	)
	// The first batch handed to either instance waits for release.
	hold := func(ctx context.Context, b *pgq.Batch) error {
		calls.inc()
		if first.CompareAndSwap(false, true) {
			entered <- b.ID()
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
	for range 2 {
		e.start(t, e.cfg(t), &applier{dst: e.dst.Pool, by: "go", before: hold})
	}
	require.Eventually(t, func() bool { return e.Info(t).LastTick > 0 && fileExists(e.file) }, 30*time.Second, 5*time.Millisecond)

	ids := e.Produce(t, 5, nil)
	t2 := e.Tick(t)
	var held int64
	select {
	case held = <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("no instance took the batch")
	}
	// The other instance has the same batch and waits for the lock.
	require.Eventually(t, func() bool {
		var waiting int
		require.NoError(t, e.Pool.QueryRow(e.Ctx,
			"select count(*) from pg_locks where locktype = 'advisory' and not granted and database = (select oid from pg_database where datname = current_database())").Scan(&waiting))
		return waiting == 1
	}, 30*time.Second, 5*time.Millisecond, "the second instance waits on the lock")
	require.Equal(t, held, e.Info(t).CurrentBatch)
	close(release)

	e.waitQueueTick(t, t2)
	t3 := e.Tick(t)
	e.waitQueueTick(t, t3)
	e.requireExactlyOnce(t, ids)
	require.Equal(t, 2, calls.get(), "batches t1..t2 and t2..t3, each applied by one instance")
	require.Equal(t, t3, e.fileTick(t))
}

func fileExists(name string) bool {
	_, err := os.Stat(name)
	return err == nil
}

// TestReconcileOnStart: Run brings the queue and the file together before
// the first batch, as Skytools' check_queue does.
func TestReconcileOnStart(t *testing.T) {
	t.Parallel()
	type result struct {
		want []int64 // events the local consumer applies
		last int64   // the tick it ends at (queue and file)
	}
	cases := []struct {
		name string
		// before prepares the queue and the file before Run.
		before func(t *testing.T, e *env) result
		// after, when set, runs once Run has started, with what before
		// returned, and produces what comes next.
		after func(t *testing.T, e *env, r result) result
	}{{
		name: "ticks agree",
		before: func(t *testing.T, e *env) result {
			e.writeTick(t, e.Info(t).LastTick)
			ids := e.Produce(t, 2, nil)
			return result{ids, e.Tick(t)}
		},
	}, {
		name: "not registered, file: registered at the file's tick",
		before: func(t *testing.T, e *env) result {
			unregister(t, e)
			e.Produce(t, 2, nil)
			t2 := e.Tick(t)
			ids := e.Produce(t, 3, nil)
			t3 := e.Tick(t)
			e.writeTick(t, t2)
			return result{ids, t3}
		},
	}, {
		name: "not registered, no file: registered at the queue's latest tick",
		before: func(t *testing.T, e *env) result {
			unregister(t, e)
			e.Produce(t, 2, nil) // before the registration: never seen
			e.Tick(t)
			return result{}
		},
		after: func(t *testing.T, e *env, _ result) result {
			require.Eventually(t, func() bool {
				_, err := pgq.GetConsumerInfo(e.Ctx, e.Pool, e.Queue, e.Consumer)
				return err == nil
			}, 30*time.Second, 5*time.Millisecond)
			ids := e.Produce(t, 3, nil)
			return result{ids, e.Tick(t)}
		},
	}, {
		name: "registered, no file: the file gets the queue's tick",
		before: func(t *testing.T, e *env) result {
			return result{last: e.Info(t).LastTick}
		},
		after: func(t *testing.T, e *env, r result) result {
			require.Eventually(t, func() bool { return fileExists(e.file) }, 30*time.Second, 5*time.Millisecond)
			require.Equal(t, r.last, e.fileTick(t))
			ids := e.Produce(t, 3, nil)
			return result{ids, e.Tick(t)}
		},
	}, {
		name: "file behind the queue: rewound, events delivered again",
		before: func(t *testing.T, e *env) result {
			e.Produce(t, 2, nil)
			t2 := e.Tick(t)
			ids := e.Produce(t, 3, nil)
			t3 := e.Tick(t)
			e.consumeQueue(t) // the queue is at t3
			e.writeTick(t, t2)
			return result{ids, t3}
		},
	}, {
		name: "file ahead of the queue: moved forward, events in between skipped",
		before: func(t *testing.T, e *env) result {
			e.Produce(t, 2, nil)
			t2 := e.Tick(t)
			ids := e.Produce(t, 3, nil)
			t3 := e.Tick(t)
			e.writeTick(t, t2) // the queue is at t1
			return result{ids, t3}
		},
	}, {
		name: "file ahead of an open batch's end: moved forward, batch dropped",
		before: func(t *testing.T, e *env) result {
			e.Produce(t, 2, nil)
			e.Tick(t)
			e.Produce(t, 2, nil)
			t3 := e.Tick(t)
			open, err := pgq.NextBatch(e.Ctx, e.Pool, e.Queue, e.Consumer) // ends at t2
			require.NoError(t, err)
			require.NotNil(t, open)
			e.writeTick(t, t3)
			ids := e.Produce(t, 3, nil)
			return result{ids, e.Tick(t)}
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := setup(t)
			r := tc.before(t, e)
			e.start(t, e.cfg(t), &applier{dst: e.dst.Pool, by: "go"})
			if tc.after != nil {
				r = tc.after(t, e, r)
			}
			e.waitDone(t, r.last)
			e.requireExactlyOnce(t, r.want)
			require.Equal(t, r.last, e.fileTick(t))
		})
	}
}

func unregister(t *testing.T, e *env) {
	t.Helper()
	ok, err := pgq.UnregisterConsumer(e.Ctx, e.Pool, e.Queue, e.Consumer)
	require.NoError(t, err)
	require.True(t, ok)
}

// TestFileBehindWhileRunning: the file is replaced by an older one while
// the consumer runs. The next batch neither starts nor ends at the file's
// tick: the consumer is moved to the file's tick (the step fails once, as
// Skytools' "Lost position"), and the events after it are applied again.
func TestFileBehindWhileRunning(t *testing.T) {
	t.Parallel()
	e := setup(t)
	var mu sync.Mutex
	var errs []error
	cfg := e.cfg(t)
	cfg.Consumer.Hooks.OnError = func(ei consumer.ErrorInfo) { mu.Lock(); errs = append(errs, ei.Err); mu.Unlock() }
	e.start(t, cfg, &applier{dst: e.dst.Pool, by: "go"})

	t1 := e.Info(t).LastTick
	first := e.Produce(t, 2, nil)
	t2 := e.Tick(t)
	e.waitQueueTick(t, t2)
	e.writeTick(t, t1) // restored from an old backup
	second := e.Produce(t, 3, nil)
	t3 := e.Tick(t)
	e.waitQueueTick(t, t3)

	require.Equal(t, slices.Sorted(slices.Values(slices.Concat(first, first, second))), e.applied(t),
		"the first batch is applied again: the file says it was not")
	require.Equal(t, t3, e.fileTick(t))
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, errs, 1)
	require.ErrorContains(t, errs[0], fmt.Sprintf("covers ticks %d..%d, but tracking file %s holds tick %d: consumer moved to tick %d",
		t2, t3, e.file, t1, t1))
}

// TestRetryRefused: tagging an event for retry stops Run with
// ErrRetryQueue naming queue and consumer; the batch is not recorded.
func TestRetryRefused(t *testing.T) {
	t.Parallel()
	e := setup(t)
	t1 := e.Info(t).LastTick
	e.Produce(t, 2, nil)
	e.Tick(t)
	lc, err := local.New(e.Pool, e.cfg(t), local.HandlerFunc(func(ctx context.Context, b *pgq.Batch) error {
		evs, err := b.All(ctx)
		if err != nil {
			return err
		}
		evs[1].TagRetry(time.Minute)
		return nil
	}))
	require.NoError(t, err)
	err = lc.Run(e.Ctx)
	require.ErrorIs(t, err, local.ErrRetryQueue)
	require.ErrorContains(t, err, "q/c batch")
	require.Equal(t, t1, e.fileTick(t), "the batch is not recorded")
	info := e.Info(t)
	require.Equal(t, t1, info.LastTick)
	require.NotZero(t, info.CurrentBatch, "the batch stays open")
}

// TestHandlerErrorRetriesBatch: a failed handler records nothing; the
// same batch is processed again and then recorded.
func TestHandlerErrorRetriesBatch(t *testing.T) {
	t.Parallel()
	e := setup(t)
	var calls counter
	a := &applier{dst: e.dst.Pool, by: "go", before: func(ctx context.Context, b *pgq.Batch) error {
		calls.inc()
		if calls.get() == 1 {
			return fmt.Errorf("destination unavailable")
		}
		return nil
	}}
	e.start(t, e.cfg(t), a)
	ids := e.Produce(t, 3, nil)
	t2 := e.Tick(t)
	e.waitQueueTick(t, t2)
	e.requireExactlyOnce(t, ids)
	require.Equal(t, 2, calls.get())
	require.Equal(t, t2, e.fileTick(t))
}

// TestEventsAdapter: Events (Skytools process_local_event) calls the
// per-event handler in ev_id order; its error fails the whole batch,
// which is then processed again from its first event.
func TestEventsAdapter(t *testing.T) {
	t.Parallel()
	e := setup(t)
	var mu sync.Mutex
	var got []int64
	failed := false
	h := local.Events(consumer.EventHandlerFunc(func(ctx context.Context, ev *pgq.Event) error {
		mu.Lock()
		defer mu.Unlock()
		if len(got) == 2 && !failed {
			failed = true
			got = nil
			return fmt.Errorf("third event fails once")
		}
		got = append(got, ev.ID)
		return nil
	}))
	e.start(t, e.cfg(t), h)
	ids := e.Produce(t, 4, nil)
	t2 := e.Tick(t)
	e.waitDone(t, t2)
	mu.Lock()
	defer mu.Unlock()
	require.True(t, failed)
	require.Equal(t, ids, got)
}
