package main

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

// subscriptions is every (queue, consumer, last tick, batch) of pgq plus
// every consumer and queue name: what an admin command must not change by
// mistake.
func subscriptions(t *testing.T, ctx context.Context, db *pgtest.DB) []string {
	t.Helper()
	rows, err := db.Pool.Query(ctx, `
		select format('%s/%s tick=%s batch=%s', q.queue_name, c.co_name, s.sub_last_tick, s.sub_batch)
		  from pgq.subscription s
		  join pgq.queue q on q.queue_id = s.sub_queue
		  join pgq.consumer c on c.co_id = s.sub_consumer
		union all
		select 'consumer ' || co_name from pgq.consumer
		union all
		select 'queue ' || queue_name from pgq.queue
		order by 1`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}

// TestConsumerAdminNeverRegisters: rewind (pgq.register_consumer_at, which
// registers whatever it is given) and unregister on an unknown consumer or
// queue exit 1 with a message naming both, and change nothing.
func TestConsumerAdminNeverRegisters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := cluster.NewDB(t)
	_, err := pgq.CreateQueue(ctx, db.Pool, "q")
	require.NoError(t, err)
	_, err = pgq.RegisterConsumer(ctx, db.Pool, "q", "c")
	require.NoError(t, err)
	info, err := pgq.GetQueueInfo(ctx, db.Pool, "q")
	require.NoError(t, err)
	tick := itoa(info.LastTickID)
	before := subscriptions(t, ctx, db)

	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"consumer", "rewind", "q", "typo", "--tick", tick}, "consumer typo is not registered on queue q"},
		{[]string{"consumer", "rewind", "nope", "c", "--tick", tick}, "queue nope not found"},
		{[]string{"consumer", "unregister", "nope", "c"}, "queue nope not found"},
		{[]string{"queue", "config", "nope", "--ticker-max-lag", "1"}, "set queue config nope: queue not found"},
	} {
		code, out, errOut := pgqctl(t, append(tc.args, "--dsn", db.DSN)...)
		require.Equal(t, 1, code, "%q: stdout %s", tc.args, out)
		require.Contains(t, errOut, tc.msg, "%q", tc.args)
		require.Empty(t, out, "%q", tc.args)
		require.Equal(t, before, subscriptions(t, ctx, db), "%q changed pgq.subscription or pgq.consumer", tc.args)
	}
	code, out, errOut := pgqctl(t, "consumer", "rewind", "q", "typo", "--tick", tick, "--dsn", db.DSN)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "only 'pgqctl consumer register' registers", out)
}

// TestConsumerRewindRacingUnregister: an unregister that commits between
// rewind's check and its repositioning must not turn the rewind into a
// registration. The unregister holds its locks in an open transaction, the
// rewind checks (the consumer is still there) and blocks behind it; then
// the unregister commits.
func TestConsumerRewindRacingUnregister(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := cluster.NewDB(t)
	_, err := pgq.CreateQueue(ctx, db.Pool, "q")
	require.NoError(t, err)
	_, err = pgq.RegisterConsumer(ctx, db.Pool, "q", "c")
	require.NoError(t, err)
	info, err := pgq.GetQueueInfo(ctx, db.Pool, "q")
	require.NoError(t, err)

	unreg, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer unreg.Rollback(context.Background())
	removed, err := pgq.UnregisterConsumer(ctx, unreg, "q", "c")
	require.NoError(t, err)
	require.True(t, removed)

	var (
		wg          sync.WaitGroup
		code        int
		out, errOut string
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		code, out, errOut = runCaptured(ctx, "consumer", "rewind", "q", "c", "--tick", itoa(info.LastTickID), "--dsn", db.DSN)
	}()
	// The rewind waits for the unregister's row locks.
	require.Eventually(t, func() bool {
		var waiting int
		require.NoError(t, db.Pool.QueryRow(ctx, `select count(*) from pg_stat_activity
			where datname = current_database() and wait_event_type = 'Lock'`).Scan(&waiting))
		return waiting > 0
	}, 30*time.Second, 10*time.Millisecond, "rewind blocked behind the unregister")
	require.NoError(t, unreg.Commit(ctx))
	wg.Wait()

	require.Equal(t, 1, code, "stdout: %s\nstderr: %s", out, errOut)
	require.Contains(t, errOut, "consumer c is not registered on queue q")
	require.Equal(t, []string{"queue q"}, subscriptions(t, ctx, db), "no subscription or consumer created")
}

// runCaptured is pgqctl for a goroutine other than the test's: no t.
func runCaptured(ctx context.Context, args ...string) (code int, stdout, stderr string) {
	var out, errOut strings.Builder
	code = run(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}
