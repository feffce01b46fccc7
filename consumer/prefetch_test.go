package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

// readTracer counts the reads of batch events a pool sends: in a round
// trip of their own (with the begin, or alone) or sent ahead, in the
// round trip that opens their batch.
type readTracer struct {
	mu          sync.Mutex
	own, ahead  int
	ownPerBatch []int // own reads sent before each handler call
}

func isRead(sql string) bool { return strings.HasPrefix(sql, "with p as materialized (") }

func (tr *readTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if isRead(d.SQL) {
		tr.mu.Lock()
		tr.own++
		tr.mu.Unlock()
	}
	return ctx
}
func (tr *readTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (tr *readTracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceBatchStartData) context.Context {
	opens, reads := false, 0
	for _, q := range d.Batch.QueuedQueries {
		opens = opens || strings.Contains(q.SQL, "pgq.next_batch_custom(")
		if isRead(q.SQL) {
			reads++
		}
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if opens {
		tr.ahead += reads
	} else {
		tr.own += reads
	}
	return ctx
}
func (tr *readTracer) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (tr *readTracer) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

func (tr *readTracer) counts() (own, ahead int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.own, tr.ahead
}

// tracedPool is a pool on e's database whose statements tr sees; params
// are extra run-time parameters of its connections.
func tracedPool(t *testing.T, e *env, tr pgx.QueryTracer, params map[string]string) *pgxpool.Pool {
	pcfg, err := pgxpool.ParseConfig(e.DB.DSN)
	require.NoError(t, err)
	pcfg.ConnConfig.Tracer = tr
	for k, v := range params {
		pcfg.ConnConfig.RuntimeParams[k] = v
	}
	pool, err := pgxpool.NewWithConfig(e.Ctx, pcfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// TestNextBatchEventsRideOnCommit: with batches waiting, a consumer reads
// each batch's events with no round trip of its own: the read is sent in
// the round trip that finishes the last batch and opens this one (issue
// 13 goal 1: one round trip per batch). Only the first batch is read on
// its own.
func TestNextBatchEventsRideOnCommit(t *testing.T) {
	t.Parallel()
	e := setup(t)
	const batches = 20
	var want []int64
	for i := range batches {
		for j := range 3 {
			id, err := pgq.InsertEvent(e.Ctx, e.Pool, e.Queue, pgq.EventData{Data: pgq.T(fmt.Sprintf("%d-%d", i, j))})
			require.NoError(t, err)
			want = append(want, id)
		}
		e.Tick(t)
	}
	tr := &readTracer{}
	pool := tracedPool(t, e, tr, nil)
	col := &collector{before: func(context.Context, *pgq.Batch) error {
		own, _ := tr.counts()
		tr.mu.Lock()
		tr.ownPerBatch = append(tr.ownPerBatch, own)
		tr.mu.Unlock()
		return nil
	}}
	startOn(t, e.Ctx, pool, e.cfg(t), col)
	col.waitIDs(t, want, 30*time.Second)
	require.Equal(t, want, col.ids(), "every event once, in order")

	tr.mu.Lock()
	defer tr.mu.Unlock()
	require.Len(t, tr.ownPerBatch, batches)
	require.Equal(t, 1, tr.own, "only the first batch is read in a round trip of its own")
	require.GreaterOrEqual(t, tr.ahead, batches-1, "every later batch's events were sent ahead")
}

// TestPrefetchedEventsAndBatchDB: a batch whose events were sent ahead is
// read right whatever its handler does first: read them (whole, or part,
// then again), write through Batch.DB before reading (the events sent
// ahead are dropped and read again), or write through Batch.DB while
// reading them, which fails (the connection is busy: nothing is skipped
// silently) and the batch is processed again. Every event is handled, and
// what the handler wrote commits once per event.
func TestPrefetchedEventsAndBatchDB(t *testing.T) {
	t.Parallel()
	e := setup(t)
	_, err := e.Pool.Exec(e.Ctx, "create table applied (ev_id int8 primary key)")
	require.NoError(t, err)
	const batches = 16
	var want []int64
	for i := range batches {
		for j := range 3 {
			id, err := pgq.InsertEvent(e.Ctx, e.Pool, e.Queue, pgq.EventData{Data: pgq.T(fmt.Sprintf("%d-%d", i, j))})
			require.NoError(t, err)
			want = append(want, id)
		}
		e.Tick(t)
	}
	tr := &readTracer{}
	pool := tracedPool(t, e, tr, nil)

	var mu sync.Mutex
	calls := map[int64]int{} // handler calls per batch
	var busyErrs int
	var done []int64 // events of finished attempts
	h := consumer.BatchHandlerFunc(func(ctx context.Context, b *pgq.Batch) error {
		mu.Lock()
		calls[b.ID()]++
		way := len(calls) % 4
		if calls[b.ID()] > 1 {
			way = 0 // a batch processed again is read whole first
		}
		mu.Unlock()
		db := b.DB()
		insert := func(id int64) error {
			_, err := db.Exec(ctx, "insert into applied values ($1)", id)
			return err
		}
		var got []int64
		switch way {
		case 1: // a write before reading
			if _, err := db.Exec(ctx, "select 1"); err != nil {
				return err
			}
		case 2: // part of the events, then all of them again
			for ev, err := range b.Events(ctx) {
				if err != nil {
					return err
				}
				_ = ev
				break
			}
		case 3: // a write while the events are being read
			for ev, err := range b.Events(ctx) {
				if err != nil {
					return err
				}
				if err := insert(ev.ID); err != nil {
					mu.Lock()
					if errors.Is(err, pgq.ErrPrefetchReading) {
						busyErrs++
					}
					mu.Unlock()
					return err
				}
				got = append(got, ev.ID)
			}
			mu.Lock()
			done = append(done, got...)
			mu.Unlock()
			return nil
		}
		evs, err := b.All(ctx)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if err := insert(ev.ID); err != nil {
				return err
			}
			got = append(got, ev.ID)
		}
		mu.Lock()
		done = append(done, got...)
		mu.Unlock()
		return nil
	})
	startOn(t, e.Ctx, pool, e.cfg(t), h)
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(done) >= len(want)
	}, 30*time.Second, 10*time.Millisecond)

	mu.Lock()
	defer mu.Unlock()
	slices.Sort(done)
	require.Equal(t, want, done, "every event handled once in a finished attempt")
	require.Positive(t, busyErrs, "a write while reading events sent ahead fails")
	var applied []int64
	rows, err := e.Pool.Query(e.Ctx, "select ev_id from applied order by 1")
	require.NoError(t, err)
	applied, err = pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(t, err)
	require.Equal(t, want, applied, "the finished attempts' writes, once per event")
	_, ahead := tr.counts()
	require.GreaterOrEqual(t, ahead, batches/2, "events were sent ahead")
}

// TestNextBatchFailureKeepsFinish: the statement opening the next batch
// runs after the last batch's commit, in a transaction of its own: when it
// fails (here it waits on a lock past lock_timeout), the finished batch
// stays finished and is not handled again; the consumer goes on once the
// statement can run.
func TestNextBatchFailureKeepsFinish(t *testing.T) {
	t.Parallel()
	e := setup(t)
	first, err := pgq.InsertEvent(e.Ctx, e.Pool, e.Queue, pgq.EventData{Data: pgq.T("a")})
	require.NoError(t, err)
	e.Tick(t)
	pool := tracedPool(t, e, &readTracer{}, map[string]string{"lock_timeout": "100ms"})

	// The lock next_batch takes for this consumer (pgq.NextBatchCustom),
	// held from another connection once the first batch is handled.
	hold, err := e.Pool.Begin(e.Ctx)
	require.NoError(t, err)
	defer func() { _ = hold.Rollback(context.WithoutCancel(e.Ctx)) }()
	var mu sync.Mutex
	calls := map[int64]int{}
	col := &collector{before: func(ctx context.Context, b *pgq.Batch) error {
		mu.Lock()
		defer mu.Unlock()
		calls[b.ID()]++
		if len(calls) == 1 && calls[b.ID()] == 1 {
			_, err := hold.Exec(ctx, "select pg_advisory_xact_lock(hashtextextended('pgq.next_batch:' || $1 || '/' || $2, 0))", e.Queue, e.Consumer)
			return err
		}
		return nil
	}}
	failed := make(chan struct{})
	var once sync.Once
	cfg := e.cfg(t)
	cfg.Hooks.OnError = func(ei consumer.ErrorInfo) {
		if strings.Contains(ei.Err.Error(), "lock timeout") {
			once.Do(func() { close(failed) })
		}
	}
	startOn(t, e.Ctx, pool, cfg, col)
	select {
	case <-failed: // the step after the first batch could not open the next
	case <-time.After(30 * time.Second):
		t.Fatal("next batch never timed out on the lock")
	}
	require.NoError(t, hold.Rollback(e.Ctx))
	second, err := pgq.InsertEvent(e.Ctx, e.Pool, e.Queue, pgq.EventData{Data: pgq.T("b")})
	require.NoError(t, err)
	e.Tick(t)
	col.waitIDs(t, []int64{first, second}, 30*time.Second)
	require.Equal(t, []int64{first, second}, col.ids(), "the first batch was handled once")
	mu.Lock()
	defer mu.Unlock()
	for id, n := range calls {
		require.Equal(t, 1, n, "batch %d handled once", id)
	}
}

// TestStopWithEventsSentAhead: a consumer stopped while the next batch's
// events are on their way returns, leaves no connection of the pool busy
// or in a transaction, and that batch is handled by the next run.
func TestStopWithEventsSentAhead(t *testing.T) {
	t.Parallel()
	e := setup(t)
	var want []int64
	for i := range 3 {
		id, err := pgq.InsertEvent(e.Ctx, e.Pool, e.Queue, pgq.EventData{Data: pgq.T(fmt.Sprint(i))})
		require.NoError(t, err)
		want = append(want, id)
		e.Tick(t)
	}
	tr := &readTracer{}
	pool := tracedPool(t, e, tr, nil)
	ctx, cancel := context.WithCancel(e.Ctx)
	defer cancel()
	first := &collector{}
	cfg := e.cfg(t)
	cfg.Hooks.OnBatch = func(consumer.BatchStats) { cancel() } // the second batch's events are on their way
	c, err := consumer.New(pool, cfg, first)
	require.NoError(t, err)
	require.NoError(t, c.Run(ctx))
	_, ahead := tr.counts()
	require.Positive(t, ahead)
	require.Zero(t, pool.Stat().AcquiredConns(), "no connection kept")
	evs, _ := first.snapshot()
	require.Len(t, evs, 1)

	second := &collector{}
	startOn(t, e.Ctx, pool, e.cfg(t), second)
	second.waitIDs(t, want[1:], 30*time.Second)
	require.Equal(t, want[1:], second.ids())
}

// TestEventsSentAheadInEveryExecMode: the round trip that finishes a
// batch, opens the next and sends its read works in each of pgx's query
// modes (a pool behind PgBouncer runs "exec" or the simple protocol):
// every event once, in order, the later batches' events sent ahead.
func TestEventsSentAheadInEveryExecMode(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"cache_statement", "cache_describe", "describe_exec", "exec", "simple_protocol"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			e := setup(t)
			var want []int64
			for i := range 6 {
				for j := range 2 {
					id, err := pgq.InsertEvent(e.Ctx, e.Pool, e.Queue, pgq.EventData{Data: pgq.T(fmt.Sprintf("%d-%d", i, j)),
						Extra1: pgq.T("x")})
					require.NoError(t, err)
					want = append(want, id)
				}
				e.Tick(t)
			}
			tr := &readTracer{}
			pcfg, err := pgxpool.ParseConfig(e.DB.DSN + " default_query_exec_mode=" + mode)
			require.NoError(t, err)
			pcfg.ConnConfig.Tracer = tr
			pool, err := pgxpool.NewWithConfig(e.Ctx, pcfg)
			require.NoError(t, err)
			t.Cleanup(pool.Close)
			cfg := e.cfg(t)
			cfg.Filter = pgq.Eq(pgq.FieldExtra1, "x")
			col := &collector{}
			startOn(t, e.Ctx, pool, cfg, col)
			col.waitIDs(t, want, 30*time.Second)
			require.Equal(t, want, col.ids())
			_, ahead := tr.counts()
			require.GreaterOrEqual(t, ahead, 5)
		})
	}
}

// TestFullPoolGetsConnectionBack: a consumer keeps its connection from one
// batch to the next (with the next batch's events sent ahead on it) only
// while its pool has other connections to give; on a full pool it hands
// the connection back between batches, as before, so that whoever waits
// for one gets a turn.
func TestFullPoolGetsConnectionBack(t *testing.T) {
	t.Parallel()
	for _, max := range []int{1, 2} {
		t.Run(fmt.Sprint(max), func(t *testing.T) {
			t.Parallel()
			e := setup(t)
			var want []int64
			for i := range 5 {
				id, err := pgq.InsertEvent(e.Ctx, e.Pool, e.Queue, pgq.EventData{Data: pgq.T(fmt.Sprint(i))})
				require.NoError(t, err)
				want = append(want, id)
				e.Tick(t)
			}
			tr := &readTracer{}
			pcfg, err := pgxpool.ParseConfig(e.DB.DSN + fmt.Sprintf(" pool_max_conns=%d", max))
			require.NoError(t, err)
			pcfg.ConnConfig.Tracer = tr
			pool, err := pgxpool.NewWithConfig(e.Ctx, pcfg)
			require.NoError(t, err)
			t.Cleanup(pool.Close)
			col := &collector{}
			startOn(t, e.Ctx, pool, e.cfg(t), col)
			col.waitIDs(t, want, 30*time.Second)
			require.Equal(t, want, col.ids())
			_, ahead := tr.counts()
			if max == 1 {
				require.Zero(t, ahead, "no events sent ahead on the pool's only connection")
			} else {
				require.Positive(t, ahead)
			}
		})
	}
}

// TestEventsSentAheadAcrossRotation: a read sent ahead names the event
// tables the batch before spanned; the batch after a table rotation spans
// one more, which its read finds missing: those rows are dropped and the
// batch is read again, naming every table. Every event arrives once, in
// order, and only the first batch and that one are read on their own.
func TestEventsSentAheadAcrossRotation(t *testing.T) {
	t.Parallel()
	e := setup(t)
	require.NoError(t, pgq.SetQueueConfig(e.Ctx, e.Pool, e.Queue, pgq.QueueConfig{RotationPeriod: pgq.Ptr(time.Millisecond)}))
	var want []int64
	produce := func(rounds int) {
		for range rounds {
			id, err := pgq.InsertEvent(e.Ctx, e.Pool, e.Queue, pgq.EventData{Data: pgq.T(fmt.Sprint(len(want)))})
			require.NoError(t, err)
			want = append(want, id)
			e.Tick(t)
		}
	}
	table := func() (cur int) {
		require.NoError(t, e.Pool.QueryRow(e.Ctx, "select queue_cur_table from pgq.queue where queue_name = $1", e.Queue).Scan(&cur))
		return cur
	}
	// The consumer's last tick must be newer than the queue's last
	// switch for PgQ to rotate: one batch taken by hand first.
	_, err := pgq.InsertEvent(e.Ctx, e.Pool, e.Queue, pgq.EventData{Data: pgq.T("first")})
	require.NoError(t, err)
	e.Tick(t)
	info, err := pgq.NextBatch(e.Ctx, e.Pool, e.Queue, e.Consumer)
	require.NoError(t, err)
	_, err = pgq.FinishBatch(e.Ctx, e.Pool, info.ID)
	require.NoError(t, err)
	produce(3)
	before := table()
	_, err = e.Pool.Exec(e.Ctx, "select pgq.maint_rotate_tables_step1($1)", e.Queue)
	require.NoError(t, err)
	_, err = e.Pool.Exec(e.Ctx, "select pgq.maint_rotate_tables_step2()")
	require.NoError(t, err)
	require.NotEqual(t, before, table(), "rotated")
	produce(3)

	tr := &readTracer{}
	pool := tracedPool(t, e, tr, nil)
	col := &collector{}
	startOn(t, e.Ctx, pool, e.cfg(t), col)
	col.waitIDs(t, want, 30*time.Second)
	require.Equal(t, want, col.ids())
	own, ahead := tr.counts()
	require.Equal(t, 2, own, "read on their own: the first batch, and the first one spanning the new table")
	require.Equal(t, 6, ahead, "sent with each finish: batches 2 to 6, and after the last (no batch: nothing read)")
}
