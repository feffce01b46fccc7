package consumer_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

// nextBatchTracer counts the next-batch statements a pool sends alone and
// inside pipelines.
type nextBatchTracer struct {
	mu                 sync.Mutex
	alone, inPipelines int
}

func (tr *nextBatchTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if strings.Contains(d.SQL, "pgq.next_batch_custom(") {
		tr.mu.Lock()
		tr.alone++
		tr.mu.Unlock()
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
// in a statement of its own (issue 13 goal 1: a round trip less per batch).
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
