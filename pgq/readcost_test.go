package pgq_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

// The next-batch and read statements are planned once per connection, not
// per call:
// after PostgreSQL's five custom plans it runs a generic one. (Its first
// version carried UpToEvents' lateral, which the planner folded away for
// a null budget; the custom plan was then always cheaper, and every batch
// paid about 0.3 ms of planning.)
func TestNextBatchPlanIsCached(t *testing.T) {
	t.Parallel()
	for _, o := range []pgq.BatchOptions{{}, {UpToEvents: 1000}} {
		t.Run(fmt.Sprintf("%+v", o), func(t *testing.T) {
			t.Parallel()
			nextBatchPlans(t, o)
		})
	}
}

func nextBatchPlans(t *testing.T, o pgq.BatchOptions) {
	e := setup(t)
	conn, err := e.pool.Acquire(e.ctx)
	require.NoError(t, err)
	defer conn.Release()
	for i := range 14 { // 14: if the reads split between two texts, one runs at least 7 times
		_, err := pgq.InsertEvent(e.ctx, e.pool, e.queue, pgq.EventData{Type: pgq.T("t"), Data: pgq.T(strconv.Itoa(i))})
		require.NoError(t, err)
		e.tick(t)
		info, err := pgq.NextBatchCustom(e.ctx, conn, e.queue, e.cons, o)
		require.NoError(t, err)
		require.NotNil(t, info)
		evs, err := pgq.NewBatch(conn, e.queue, e.cons, *info, pgq.ReadOptions{}).All(e.ctx)
		require.NoError(t, err)
		require.Len(t, evs, 1)
		_, err = pgq.FinishBatch(e.ctx, conn, info.ID)
		require.NoError(t, err)
	}
	var generic, custom int64
	require.NoError(t, conn.QueryRow(e.ctx, `select generic_plans, custom_plans from pg_prepared_statements
		where statement like 'select b.batch_id, %'`).Scan(&generic, &custom))
	require.Positive(t, generic, "generic plans (custom plans: %d)", custom)
	require.LessOrEqual(t, custom, int64(5))
	// The same for the statement reading the events (planned again on
	// every call while its parameters were visible to the planner): one
	// text per queue and filter.
	rows, err := conn.Query(e.ctx, `select generic_plans, custom_plans from pg_prepared_statements
		where statement like 'with p as materialized (%'`)
	require.NoError(t, err)
	checked := 0
	for rows.Next() {
		require.NoError(t, rows.Scan(&generic, &custom))
		if generic+custom > 5 {
			require.Positive(t, generic, "read: generic plans (custom plans: %d)", custom)
			require.LessOrEqual(t, custom, int64(5))
			checked++
		}
	}
	require.NoError(t, rows.Err())
	require.Positive(t, checked, "a read statement ran more than five times")
}

// fetchCounter counts the FETCH statements sent through a pool.
type fetchCounter struct {
	mu      sync.Mutex
	fetches []string
}

func (c *fetchCounter) see(sql string) {
	if strings.HasPrefix(sql, "fetch ") {
		c.mu.Lock()
		c.fetches = append(c.fetches, sql)
		c.mu.Unlock()
	}
}

func (c *fetchCounter) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.fetches
	c.fetches = nil
	return f
}

func (c *fetchCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	c.see(d.SQL)
	return ctx
}
func (c *fetchCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (c *fetchCounter) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}
func (c *fetchCounter) TraceBatchQuery(_ context.Context, _ *pgx.Conn, d pgx.TraceBatchQueryData) {
	c.see(d.SQL)
}
func (c *fetchCounter) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// A batch from NextBatch is read with one prepared statement, no cursor.
// A batch read through the cursor (BatchInfo made by hand, without
// NextBatch's read plan) is fetched whole in one fetch when the event
// sequence says how big it is; buffered, FetchSize events at a time; a
// batch bigger than its estimate is read whole all the same, in order.
func TestStreamingReadsBatchInOneFetch(t *testing.T) {
	t.Parallel()
	e := setup(t)
	var want []string
	evs := make([]pgq.EventData, 1000)
	for i := range evs {
		want = append(want, strconv.Itoa(i))
		evs[i] = pgq.EventData{Type: pgq.T("t"), Data: pgq.T(want[i])}
	}
	tx, err := e.pool.Begin(e.ctx)
	require.NoError(t, err)
	_, err = pgq.InsertEvents(e.ctx, tx, e.queue, slices.Values(evs))
	require.NoError(t, err)
	require.NoError(t, tx.Commit(e.ctx))
	e.tick(t)
	info := e.next(t)

	counter := &fetchCounter{}
	cfg, err := pgxpool.ParseConfig(e.db.DSN)
	require.NoError(t, err)
	cfg.ConnConfig.Tracer = counter
	pool, err := pgxpool.NewWithConfig(e.ctx, cfg)
	require.NoError(t, err)
	defer pool.Close()

	read := func(info pgq.BatchInfo, buffered bool) []string {
		b := pgq.NewBatch(pool, e.queue, e.cons, info, pgq.ReadOptions{FetchSize: 100})
		if buffered {
			b.BufferFetches()
		}
		var got []string
		for ev, err := range b.Events(e.ctx) {
			require.NoError(t, err)
			got = append(got, ev.Data.String)
		}
		return got
	}
	require.Equal(t, want, read(*info, false))
	require.Empty(t, counter.take(), "planned: one statement, no cursor")

	byHand := pgq.BatchInfo{ID: info.ID, TickID: info.TickID, PrevTickID: info.PrevTickID,
		EventSeq: info.EventSeq, PrevEventSeq: info.PrevEventSeq}
	require.Equal(t, want, read(byHand, false))
	f := counter.take()
	require.Len(t, f, 1, "streamed: one fetch for the whole batch: %q", f)
	require.Regexp(t, `^fetch [0-9]+ from `, f[0])
	n, _ := strconv.Atoi(strings.Fields(f[0])[1])
	require.Greater(t, n, 1000, "the first fetch asks for more than the batch holds, so it knows it has it all")

	require.Equal(t, want, read(*info, true))
	require.Len(t, counter.take(), 11, "buffered: FetchSize at a time (10 full fetches, then an empty one)")

	low := byHand
	low.EventSeq = low.PrevEventSeq + 250 // the estimate is a hint
	require.Equal(t, want, read(low, false))
	f = counter.take()
	require.Equal(t, "fetch 251 from", f[0][:len("fetch 251 from")])
	require.Len(t, f, 1+8, "251, then 100 at a time until one comes back short")
}
