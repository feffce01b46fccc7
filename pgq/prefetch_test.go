package pgq_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
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

// readSQLs records the read statements a pool sends.
type readSQLs struct {
	mu   sync.Mutex
	sqls []string
}

func (r *readSQLs) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if strings.HasPrefix(d.SQL, "with p as materialized (") {
		r.mu.Lock()
		r.sqls = append(r.sqls, d.SQL)
		r.mu.Unlock()
	}
	return ctx
}
func (r *readSQLs) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (r *readSQLs) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.sqls
	r.sqls = nil
	return s
}

// A read names the event tables its hint (the consumer's previous batch)
// spanned, and only those. With a hint naming a table the
// batch does not span and not the one it does, the read finds the table
// missing and reads again naming every table; a hint naming a table the
// queue does not have is not used. The events are right either way.
func TestReadHint(t *testing.T) {
	t.Parallel()
	e := setup(t)
	tr := &readSQLs{}
	pcfg, err := pgxpool.ParseConfig(e.db.DSN)
	require.NoError(t, err)
	pcfg.ConnConfig.Tracer = tr
	pool, err := pgxpool.NewWithConfig(e.ctx, pcfg)
	require.NoError(t, err)
	defer pool.Close()

	var hint pgq.ReadHint
	var spanned string // the tables the first batch spans, as the read names them
	var cur int
	require.NoError(t, pool.QueryRow(e.ctx, "select queue_cur_table from pgq.queue where queue_name = $1", e.queue).Scan(&cur))
	for i, h := range []func() pgq.ReadHint{
		func() pgq.ReadHint { return pgq.ReadHint{} }, // first batch: all tables
		func() pgq.ReadHint { return hint },           // the first batch's
		func() pgq.ReadHint { return pgq.HintNaming((cur + 1) % 3) },
		func() pgq.ReadHint { return pgq.HintNaming(7) }, // the queue has 3 tables
	} {
		_, err := pgq.InsertEvent(e.ctx, e.pool, e.queue, pgq.EventData{Data: pgq.T(fmt.Sprint(i))})
		require.NoError(t, err)
		e.tick(t)
		info := e.next(t)
		b := pgq.NewBatch(pool, e.queue, e.cons, *info, pgq.ReadOptions{Hint: h()})
		got, err := b.All(e.ctx)
		require.NoError(t, err)
		want, err := pgq.GetBatchEvents(e.ctx, e.pool, info.ID)
		require.NoError(t, err)
		require.Equal(t, keys(want), keys(got), "batch %d", i)
		sqls := tr.take()
		all := "<@ array[0,1,2]::int4[]"
		switch i {
		case 0:
			require.Len(t, sqls, 1)
			require.Contains(t, sqls[0], all)
			hint = b.ReadHint()
			require.False(t, hint.IsZero())
			rp, err := pgq.ReadPlanOf(e.ctx, e.pool, e.queue, e.cons, *info)
			require.NoError(t, err)
			var nums []string
			for _, name := range rp.Tables {
				nums = append(nums, name[strings.LastIndex(name, "_")+1:])
			}
			spanned = strings.Join(nums, ",")
		case 1:
			require.Len(t, sqls, 1)
			require.Contains(t, sqls[0], "<@ array["+spanned+"]::int4[]", "named the tables the last batch spanned")
		case 2:
			require.Len(t, sqls, 2, "read again")
			require.Contains(t, sqls[0], fmt.Sprintf("<@ array[%d]::int4[]", (cur+1)%3))
			require.Contains(t, sqls[1], all)
		case 3:
			require.Len(t, sqls, 1, "a hint naming no table of the queue is not used")
			require.Contains(t, sqls[0], all)
		}
		_, err = pgq.FinishBatch(e.ctx, e.pool, info.ID)
		require.NoError(t, err)
	}
}
