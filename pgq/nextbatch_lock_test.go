package pgq_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

// TestNextBatchLockComesFirst: NextBatch serialises instances of one
// consumer with an advisory lock taken before next_batch_custom runs. Under
// every plan the server may choose (custom and generic, as the plan cache
// switches after five executions), a call that has to wait for the lock
// must not have allocated a batch yet: otherwise two instances can each
// allocate one over the same ticks.
func TestNextBatchLockComesFirst(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
		t.Run(mode, func(t *testing.T) {
			e := setup(t)
			e.tick(t)
			pc, err := pgxpool.ParseConfig(e.db.DSN)
			require.NoError(t, err)
			pc.ConnConfig.RuntimeParams["plan_cache_mode"] = mode
			pool, err := pgxpool.NewWithConfig(e.ctx, pc)
			require.NoError(t, err)
			t.Cleanup(pool.Close)
			// Warm the statement up past the plan cache's five custom plans.
			for range 6 {
				_, err := pgq.NextBatch(e.ctx, pool, "q", "nobody-"+mode)
				require.Error(t, err)
			}
			holder, err := e.pool.Begin(e.ctx)
			require.NoError(t, err)
			defer holder.Rollback(context.Background())
			_, err = holder.Exec(e.ctx, "select pg_advisory_xact_lock(hashtextextended('pgq.next_batch:' || $1 || '/' || $2, 0))", e.queue, e.cons)
			require.NoError(t, err)

			got := make(chan *pgq.BatchInfo, 1)
			go func() {
				info, _ := pgq.NextBatch(e.ctx, pool, e.queue, e.cons)
				got <- info
			}()
			require.Eventually(t, func() bool {
				var n int
				require.NoError(t, e.pool.QueryRow(e.ctx, `select count(*) from pg_stat_activity
					where datname = current_database() and wait_event_type = 'Lock' and wait_event = 'advisory'`).Scan(&n))
				return n > 0
			}, 30*time.Second, 5*time.Millisecond, "NextBatch waits for the lock")
			// Had next_batch_custom run already, its update would hold the
			// subscription row (uncommitted, so only its lock shows).
			probe, err := e.pool.Begin(e.ctx)
			require.NoError(t, err)
			_, err = probe.Exec(e.ctx, `select 1 from pgq.subscription s join pgq.consumer c on c.co_id = s.sub_consumer
				where c.co_name = $1 for update of s nowait`, e.cons)
			require.NoError(t, probe.Rollback(e.ctx))
			require.NoError(t, err, "no batch allocated before the lock is held")
			require.NoError(t, holder.Commit(e.ctx))
			select {
			case info := <-got:
				require.NotNil(t, info)
			case <-time.After(30 * time.Second):
				t.Fatal("NextBatch did not return")
			}
		})
	}
}
