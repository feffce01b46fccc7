package consumer_test

import (
	"context"
	"errors"
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

// nextBatchTracer counts the next-batch statements a pool sends alone and
// inside pipelines.
type nextBatchTracer struct {
	mu                 sync.Mutex
	alone, inPipelines int
	begins             int // begin statements sent alone
}

func (tr *nextBatchTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if strings.Contains(d.SQL, "pgq.next_batch_custom(") {
		tr.alone++
	}
	if strings.HasPrefix(strings.ToLower(d.SQL), "begin") {
		tr.begins++
	}
	return ctx
}
func (tr *nextBatchTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (tr *nextBatchTracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}
func (tr *nextBatchTracer) TraceBatchQuery(_ context.Context, _ *pgx.Conn, d pgx.TraceBatchQueryData) {
	if strings.Contains(d.SQL, "pgq.next_batch_custom(") {
		tr.mu.Lock()
		tr.inPipelines++
		tr.mu.Unlock()
	}
}
func (tr *nextBatchTracer) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

func (tr *nextBatchTracer) counts() (alone, inPipelines int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.alone, tr.inPipelines
}

// TestNextBatchRidesOnCommit: with batches waiting, a consumer asks for the
// next one in the round trip that finishes and commits the last one, not
// in a statement of its own, and begins the batch's transaction in the
// round trip that reads its events (issue 13 goal 1: two round trips less
// per batch).
func TestNextBatchRidesOnCommit(t *testing.T) {
	t.Parallel()
	e := setup(t)
	const batches = 20
	var want []int64
	for i := range batches {
		id, err := pgq.InsertEvent(e.Ctx, e.Pool, e.Queue, pgq.EventData{Data: pgq.T(string(rune('a' + i)))})
		require.NoError(t, err)
		want = append(want, id)
		e.Tick(t)
	}

	tr := &nextBatchTracer{}
	pcfg, err := pgxpool.ParseConfig(e.DB.DSN)
	require.NoError(t, err)
	pcfg.ConnConfig.Tracer = tr
	pool, err := pgxpool.NewWithConfig(e.Ctx, pcfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)

	var mu sync.Mutex
	var aloneAt []int // standalone next-batch statements sent before each batch's handler
	col := &collector{before: func(context.Context, *pgq.Batch) error {
		alone, _ := tr.counts()
		mu.Lock()
		aloneAt = append(aloneAt, alone)
		mu.Unlock()
		return nil
	}}
	startOn(t, e.Ctx, pool, e.cfg(t), col)
	col.waitIDs(t, want, 30*time.Second)

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, aloneAt, batches)
	require.Equal(t, 1, aloneAt[0], "the first batch is asked alone")
	require.Equal(t, aloneAt[0], aloneAt[batches-1],
		"every later batch was opened in the previous batch's commit round trip (standalone asks before each batch: %v)", aloneAt)
	_, piped := tr.counts()
	require.GreaterOrEqual(t, piped, batches-1)
	tr.mu.Lock()
	require.Zero(t, tr.begins, "no begin in a round trip of its own")
	tr.mu.Unlock()
}

// TestFinishOfRepositionedBatch: a batch that PgQ no longer knows when the
// consumer finishes it (finished elsewhere, as after a repositioning) is
// dropped with a warning and nothing of its round commits, not its retries
// either; the consumer goes on with the next batch.
func TestFinishOfRepositionedBatch(t *testing.T) {
	t.Parallel()
	e := setup(t)
	first, err := pgq.InsertEvent(e.Ctx, e.Pool, e.Queue, pgq.EventData{Data: pgq.T("a")})
	require.NoError(t, err)
	e.Tick(t)
	var once sync.Once
	var batchID int64
	col := &collector{before: func(_ context.Context, b *pgq.Batch) error {
		batchID = b.ID()
		return nil
	}}
	col.each = func(ev *pgq.Event) {
		once.Do(func() { // after the batch was read
			ev.TagRetry(time.Hour)                             // must not reach the retry queue
			ok, err := pgq.FinishBatch(e.Ctx, e.Pool, batchID) // elsewhere, meanwhile
			require.NoError(t, err)
			require.True(t, ok)
		})
	}
	startOn(t, e.Ctx, e.Pool, e.cfg(t), col)
	col.waitIDs(t, []int64{first}, 30*time.Second)

	second, err := pgq.InsertEvent(e.Ctx, e.Pool, e.Queue, pgq.EventData{Data: pgq.T("b")})
	require.NoError(t, err)
	e.Tick(t)
	col.waitIDs(t, []int64{second}, 30*time.Second)
	var retried int
	require.NoError(t, e.Pool.QueryRow(e.Ctx, "select count(*) from pgq.retry_queue").Scan(&retried))
	require.Zero(t, retried, "the dropped batch's retry was rolled back")
}

// TestBatchDBIsTheFinishTransaction: what a handler writes through
// Batch.DB commits with the batch's finish and only then, whether its
// first statement is a write, the read of the events or a savepoint, and
// whether it writes at all: a failed attempt's writes roll back, and the
// batch's writes are there once per event.
func TestBatchDBIsTheFinishTransaction(t *testing.T) {
	t.Parallel()
	e := setup(t)
	_, err := e.Pool.Exec(e.Ctx, "create table applied (ev_id int8, attempt int)")
	require.NoError(t, err)
	var want []int64
	for i := range 4 { // one batch per way of starting
		id, err := pgq.InsertEvent(e.Ctx, e.Pool, e.Queue, pgq.EventData{Data: pgq.T(string(rune('a' + i)))})
		require.NoError(t, err)
		want = append(want, id)
		e.Tick(t)
	}

	var mu sync.Mutex
	attempts := map[int64]int{}
	h := consumer.BatchHandlerFunc(func(ctx context.Context, b *pgq.Batch) error {
		mu.Lock()
		attempts[b.ID()]++
		attempt := attempts[b.ID()]
		way := len(attempts) - 1
		mu.Unlock()
		db := b.DB()
		write := func(db pgq.DB, id int64) error {
			_, err := db.Exec(ctx, "insert into applied values ($1, $2)", id, attempt)
			return err
		}
		switch way {
		case 0: // a write first, then the read
			if err := write(db, -b.ID()); err != nil {
				return err
			}
		case 2: // a savepoint first
			sp, err := db.(pgx.Tx).Begin(ctx)
			if err != nil {
				return err
			}
			if err := write(sp, -b.ID()); err != nil {
				return err
			}
			if err := sp.Commit(ctx); err != nil {
				return err
			}
		case 3: // nothing read or written on the first attempt
			if attempt == 1 {
				return errors.New("first attempt fails")
			}
		}
		evs, err := b.All(ctx)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if err := write(db, ev.ID); err != nil {
				return err
			}
		}
		if attempt == 1 {
			return errors.New("first attempt fails after writing")
		}
		return nil
	})
	startOn(t, e.Ctx, e.Pool, e.cfg(t), h)
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, e.Pool.QueryRow(e.Ctx, "select count(*) from pgq.subscription where sub_batch is null and sub_last_tick = (select max(tick_id) from pgq.tick)").Scan(&n))
		return n == 1
	}, 30*time.Second, 10*time.Millisecond, "the consumer finishes every batch")

	rows, err := e.Pool.Query(e.Ctx, "select ev_id, attempt from applied where ev_id > 0 order by ev_id")
	require.NoError(t, err)
	type row struct{ ID, Attempt int64 }
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	require.NoError(t, err)
	var ids []int64
	for _, r := range got {
		require.EqualValues(t, 2, r.Attempt, "only the finished attempt's writes are kept: %v", got)
		ids = append(ids, r.ID)
	}
	require.Equal(t, want, ids)
	var marks int
	require.NoError(t, e.Pool.QueryRow(e.Ctx, "select count(*) from applied where ev_id < 0 and attempt = 2").Scan(&marks))
	require.Equal(t, 2, marks, "the first writes of ways 0 and 2, once each")
	var failed int
	require.NoError(t, e.Pool.QueryRow(e.Ctx, "select count(*) from applied where attempt = 1").Scan(&failed))
	require.Zero(t, failed)
}
