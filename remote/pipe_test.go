package remote_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/remote"
	"github.com/stretchr/testify/require"
)

// pipeHandler applies each event as a row of applied through the flow's
// Pipe, like copyHandler does with one round trip per event; it reports,
// per batch, how many statements were still queued when it returned.
func pipeHandler(queuedAtReturn func(events, queued int)) remote.Handler {
	return remote.HandlerFunc(func(ctx context.Context, b *pgq.Batch, tx pgx.Tx) error {
		p := remote.Pipeline(tx)
		n := 0
		for ev, err := range b.Events(ctx) {
			if err != nil {
				return err
			}
			n++
			if strings.HasPrefix(ev.Data.String, "retry") && ev.Retry == 0 {
				ev.TagRetry(0)
				continue
			}
			if err := p.Exec(ctx, "insert into applied (ev_id, data, retry) values ($1, $2, $3)",
				ev.ID, ev.Data.String, ev.Retry); err != nil {
				return err
			}
		}
		if queuedAtReturn != nil {
			queuedAtReturn(n, p.Len())
		}
		return nil
	})
}

// The handler's statements are queued, not sent one by one, and are
// applied with the batch, exactly once: for a RemoteConsumer, a
// SerialConsumer, and a flow whose destination is its source pool (the
// destination transaction is then a savepoint).
func TestPipelineAppliesWithTheBatch(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"remote", "serial", "shared-pool"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			e := setup(t, cluster, cluster)
			dst := e.dst
			if kind == "shared-pool" {
				_, err := e.src.Pool.Exec(e.ctx, appliedDDL)
				require.NoError(t, err)
				dst = e.src
			}
			var mu sync.Mutex
			var events, queued int
			h := pipeHandler(func(ev, q int) {
				mu.Lock()
				defer mu.Unlock()
				events += ev
				queued += q
			})
			run := func(ctx context.Context) error {
				var r interface{ Run(context.Context) error }
				var err error
				if kind == "serial" {
					r, err = remote.NewSerial(e.src.Pool, dst.Pool, e.cfg(), h)
				} else {
					r, err = remote.New(e.src.Pool, dst.Pool, e.cfg(), h)
				}
				if err != nil {
					return err
				}
				return r.Run(ctx)
			}
			stop := pgtest.Background(t, e.ctx, run)
			e.produce(t, 0, 120, plain)
			require.Eventually(t, e.pump(t, dst.Pool, 120), 30*time.Second, 20*time.Millisecond)
			require.NoError(t, stop())
			requireExactlyOnce(t, e.ctx, dst.Pool, 120)
			mu.Lock()
			defer mu.Unlock()
			require.Equal(t, 120, events)
			require.Equal(t, 120, queued, "every statement was still queued when the handler returned: none cost a round trip of its own")
		})
	}
}

// Statements given to the destination transaction run after those queued
// before them: the transaction sends the queue first.
func TestPipelineKeepsOrder(t *testing.T) {
	t.Parallel()
	e := setup(t, cluster, cluster)
	type seen struct{ count, afterUpdate int }
	got := make(chan seen, 1)
	h := remote.HandlerFunc(func(ctx context.Context, b *pgq.Batch, tx pgx.Tx) error {
		p := remote.Pipeline(tx)
		evs, err := b.All(ctx)
		if err != nil || len(evs) == 0 {
			return err
		}
		for _, ev := range evs {
			if err := p.Exec(ctx, "insert into applied (ev_id, data) values ($1, $2)", ev.ID, ev.Data.String); err != nil {
				return err
			}
		}
		var s seen
		if err := tx.QueryRow(ctx, "select count(*) from applied").Scan(&s.count); err != nil {
			return err
		}
		if err := p.Exec(ctx, "update applied set retry = 7"); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, "select ev_id from applied where retry = 7")
		if err != nil {
			return err
		}
		for rows.Next() {
			s.afterUpdate++
		}
		if err := rows.Err(); err != nil {
			return err
		}
		// Still queued when the handler returns: sent before the record.
		if err := p.Exec(ctx, "update applied set retry = 8 where ev_id = $1", evs[0].ID); err != nil {
			return err
		}
		select {
		case got <- s:
		default:
		}
		return nil
	})
	rc, err := remote.New(e.src.Pool, e.dst.Pool, e.cfg(), h)
	require.NoError(t, err)
	e.produce(t, 0, 5, plain)
	stop := pgtest.Background(t, e.ctx, rc.Run)
	require.Eventually(t, e.pump(t, e.dst.Pool, 5), 30*time.Second, 20*time.Millisecond)
	require.NoError(t, stop())
	s := <-got
	require.Equal(t, seen{count: 5, afterUpdate: 5}, s, "the queries saw the statements queued before them")
	var last int
	require.NoError(t, e.dst.Pool.QueryRow(e.ctx, "select count(*) from applied where retry = 8").Scan(&last))
	require.Equal(t, 1, last, "the statement queued last was sent with the batch")
}

// A queued statement that fails fails the batch, whether the handler saw
// the error or not: nothing of the batch is applied or recorded, the error
// names the statement, and the batch is applied exactly once after the
// cause is gone.
func TestPipelineErrorFailsBatch(t *testing.T) {
	t.Parallel()
	e := setup(t, cluster, cluster)
	_, err := e.dst.Pool.Exec(e.ctx, "create unique index on applied (data)")
	require.NoError(t, err)
	_, err = e.dst.Pool.Exec(e.ctx, "insert into applied (ev_id, data) values (-1, 'row-3')")
	require.NoError(t, err)

	errs := make(chan error, 100)
	cfg := e.cfg()
	cfg.Consumer.Hooks.OnError = func(ei consumer.ErrorInfo) { errs <- ei.Err }
	rc, err := remote.New(e.src.Pool, e.dst.Pool, cfg, pipeHandler(nil))
	require.NoError(t, err)
	e.produce(t, 0, 10, plain)
	_, err = pgq.Tick(e.ctx, e.src.Pool, "q")
	require.NoError(t, err)
	stop := pgtest.Background(t, e.ctx, rc.Run)
	var first error
	select {
	case first = <-errs:
	case <-e.ctx.Done():
		t.Fatal("no batch failure")
	}
	require.ErrorContains(t, first, "pipelined statement 4")
	require.ErrorContains(t, first, "insert into applied")
	var pgErr *pgconn.PgError
	require.True(t, errors.As(first, &pgErr), "the server's error is wrapped: %v", first)
	require.Equal(t, "23505", pgErr.Code)
	last, err := remote.LastBatch(e.ctx, e.dst.Pool, "copier", "")
	require.NoError(t, err)
	require.Zero(t, last, "the failed batch was not recorded")

	_, err = e.dst.Pool.Exec(e.ctx, "delete from applied where ev_id = -1")
	require.NoError(t, err)
	require.Eventually(t, e.pump(t, e.dst.Pool, 10), 30*time.Second, 20*time.Millisecond)
	require.NoError(t, stop())
	requireExactlyOnce(t, e.ctx, e.dst.Pool, 10)
}

// Outside a flow, a Pipe sends its queue when it holds PipeBudget bytes
// and on Flush; after a failure every call returns the first error.
func TestPipelineBudgetAndFlush(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := cluster.NewPlainDB(t)
	_, err := db.Pool.Exec(ctx, "create table big (id int primary key, data text)")
	require.NoError(t, err)
	tx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	p := remote.Pipeline(tx)
	chunk := strings.Repeat("x", remote.PipeBudget/4)
	for i := range 3 {
		require.NoError(t, p.Exec(ctx, "insert into big values ($1, $2)", i, chunk))
		require.Equal(t, i+1, p.Len(), "below the budget: queued")
	}
	require.NoError(t, p.Exec(ctx, "insert into big values ($1, $2)", 3, chunk))
	require.Zero(t, p.Len(), "at the budget: sent")
	var n int
	require.NoError(t, tx.QueryRow(ctx, "select count(*) from big").Scan(&n))
	require.Equal(t, 4, n)

	require.NoError(t, p.Exec(ctx, "insert into big values ($1, 'y')", 4))
	require.NoError(t, p.Exec(ctx, "insert into big values ($1, 'dup')", 0))
	require.NoError(t, p.Exec(ctx, "insert into big values ($1, 'z')", 5))
	err = p.Flush(ctx)
	require.ErrorContains(t, err, "pipelined statement 6")
	require.ErrorContains(t, err, "duplicate key")
	require.Equal(t, err, p.Exec(ctx, "select 1"), "sticky")
	require.Equal(t, err, p.Flush(ctx), "sticky")
}

// A flow's pipe sends chunks of its queue in the background while the
// handler goes on (the destination works while the handler reads): with a
// batch of several chunks, statements were sent before the handler
// returned, a query mid-batch sees every statement queued before it, and
// the batch applies exactly once. A statement failing in a chunk sent in
// the background fails the batch, named, with nothing applied or recorded.
func TestPipelineSendsChunksInBackground(t *testing.T) {
	t.Parallel()
	e := setup(t, cluster, cluster)
	_, err := e.dst.Pool.Exec(e.ctx, "create unique index on applied (data)")
	require.NoError(t, err)
	const n = 40
	pad := strings.Repeat("p", 8<<10) // 40 × 8 KiB: several chunks
	big := func(i int) string { return fmt.Sprintf("row-%d", i) }
	e.produce(t, 0, n, big)
	_, err = e.dst.Pool.Exec(e.ctx, "insert into applied (ev_id, data) values (-1, 'row-3')") // fails statement 4
	require.NoError(t, err)

	type seen struct{ queuedAtReturn, countAtHalf int }
	got := make(chan seen, 10)
	h := remote.HandlerFunc(func(ctx context.Context, b *pgq.Batch, tx pgx.Tx) error {
		p := remote.Pipeline(tx)
		var s seen
		i := 0
		for ev, err := range b.Events(ctx) {
			if err != nil {
				return err
			}
			if err := p.Exec(ctx, "insert into applied (ev_id, data, retry) values ($1, $2, length($3))",
				ev.ID, ev.Data.String, pad); err != nil {
				return err
			}
			if i++; i == n/2 {
				if err := tx.QueryRow(ctx, "select count(*) from applied where ev_id > 0").Scan(&s.countAtHalf); err != nil {
					return err
				}
			}
		}
		s.queuedAtReturn = p.Len()
		if i > 0 {
			got <- s
		}
		return nil
	})
	errs := make(chan error, 100)
	cfg := e.cfg()
	cfg.Consumer.Hooks.OnError = func(ei consumer.ErrorInfo) { errs <- ei.Err }
	rc, err := remote.New(e.src.Pool, e.dst.Pool, cfg, h)
	require.NoError(t, err)
	_, err = pgq.Tick(e.ctx, e.src.Pool, "q")
	require.NoError(t, err)
	stop := pgtest.Background(t, e.ctx, rc.Run)

	var first error
	select {
	case first = <-errs:
	case <-e.ctx.Done():
		t.Fatal("no batch failure")
	}
	require.ErrorContains(t, first, "pipelined statement 4 ")
	var pgErr *pgconn.PgError
	require.True(t, errors.As(first, &pgErr), "the server's error is wrapped: %v", first)
	require.Equal(t, "23505", pgErr.Code)
	last, err := remote.LastBatch(e.ctx, e.dst.Pool, "copier", "")
	require.NoError(t, err)
	require.Zero(t, last, "the failed batch was not recorded")
	var applied int
	require.NoError(t, e.dst.Pool.QueryRow(e.ctx, "select count(*) from applied where ev_id > 0").Scan(&applied))
	require.Zero(t, applied, "nothing of the failed batch is applied")

	for len(got) > 0 {
		<-got // the failed attempts'
	}
	_, err = e.dst.Pool.Exec(e.ctx, "delete from applied where ev_id = -1")
	require.NoError(t, err)
	require.Eventually(t, e.pump(t, e.dst.Pool, n), 30*time.Second, 20*time.Millisecond)
	require.NoError(t, stop())
	requireExactlyOnce(t, e.ctx, e.dst.Pool, n)
	var s seen
	for len(got) > 0 {
		s = <-got
	}
	require.Equal(t, n/2, s.countAtHalf, "the query saw every statement queued before it")
	require.Less(t, s.queuedAtReturn, n/2, "chunks were sent while the handler ran")
	var padded int
	require.NoError(t, e.dst.Pool.QueryRow(e.ctx, "select count(*) from applied where retry = $1", len(pad)).Scan(&padded))
	require.Equal(t, n, padded)
}

// A streaming pipe (the flow's, on a destination connection of its own)
// takes any mix of statements: texts seen for the first time while chunks
// are outstanding, more distinct texts than it prepares (the rest go
// unprepared), named arguments; everything applies once, in order, and
// the statements it prepared are gone when it ends.
func TestPipelineStreamsStatements(t *testing.T) {
	t.Parallel()
	e := setup(t, cluster, cluster)
	const n = 600
	e.produce(t, 0, n, plain)
	type seen struct{ events, leftPrepared int }
	got := make(chan seen, 10)
	pad := strings.Repeat("x", 200)
	h := remote.HandlerFunc(func(ctx context.Context, b *pgq.Batch, tx pgx.Tx) error {
		p := remote.Pipeline(tx)
		i := 0
		for ev, err := range b.Events(ctx) {
			if err != nil {
				return err
			}
			switch {
			case i%7 == 3: // named arguments
				err = p.Exec(ctx, "insert into applied (ev_id, data, retry) values (@id, @data, length(@pad))",
					pgx.NamedArgs{"id": ev.ID, "data": ev.Data.String, "pad": pad})
			default: // 50 distinct texts, new ones coming all along
				err = p.Exec(ctx, fmt.Sprintf("insert into applied (ev_id, data, retry) values ($1, $2, length($3)) -- %d", i%50),
					ev.ID, ev.Data.String, pad)
			}
			if err != nil {
				return err
			}
			if i%100 == 99 { // in order: the row inserted last is there
				if err := p.Exec(ctx, "update applied set retry = -retry where ev_id = $1", ev.ID); err != nil {
					return err
				}
			}
			i++
		}
		if i == 0 {
			return nil
		}
		var left int
		if err := tx.QueryRow(ctx, "select count(*) from pg_prepared_statements where name like 'pgq_go_pipe_%'").Scan(&left); err != nil {
			return err
		}
		got <- seen{i, left}
		return nil
	})
	rc, err := remote.New(e.src.Pool, e.dst.Pool, e.cfg(), h)
	require.NoError(t, err)
	stop := pgtest.Background(t, e.ctx, rc.Run)
	require.Eventually(t, e.pump(t, e.dst.Pool, n), 30*time.Second, 20*time.Millisecond)
	require.NoError(t, stop())
	requireExactlyOnce(t, e.ctx, e.dst.Pool, n)
	s := <-got
	require.Equal(t, seen{n, 0}, s, "every event applied; no statement left prepared")
	var negated, padded int
	require.NoError(t, e.dst.Pool.QueryRow(e.ctx, "select count(*) filter (where retry = -200), count(*) filter (where retry = 200) from applied").Scan(&negated, &padded))
	require.Equal(t, n/100, negated, "each update ran after the insert queued before it")
	require.Equal(t, n-n/100, padded)
}
