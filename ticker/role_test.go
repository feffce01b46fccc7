package ticker_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/ticker"
	"github.com/stretchr/testify/require"
)

// TestTickerAsPgqAdmin: the ticker runs as a role that is only a member of
// pgq_admin (no superuser, no table owner): its round statement (the
// thresholds' pre-check reads the event sequences, the tick and retry
// tables), the retry run and maintenance work, without errors.
func TestTickerAsPgqAdmin(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	db := newDB(t)
	role := fmt.Sprintf("ticker_%d", os.Getpid())
	_, err := db.Pool.Exec(ctx, "create role "+role+" login in role pgq_admin")
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = db.Pool.Exec(context.Background(), "drop owned by "+role)
		_, _ = db.Pool.Exec(context.Background(), "drop role if exists "+role)
	})
	lag, hour := 100*time.Millisecond, time.Hour
	createQueue(t, ctx, db.Pool, "aq", pgq.QueueConfig{TickerMaxLag: &lag, TickerIdlePeriod: &hour})
	_, err = pgq.RegisterConsumer(ctx, db.Pool, "aq", "c")
	require.NoError(t, err)
	cfg := fast(strings.Replace(db.DSN, "user=postgres", "user="+role, 1))
	require.NotEqual(t, db.DSN, cfg.Servers[0].ConnString)
	cfg.RetryPeriod = hour
	r := start(t, cfg)
	r.waitState(t, db.Name, ticker.StateTicking)

	id := insert(t, ctx, db.Pool, "aq", "x")
	var info *pgq.BatchInfo
	require.Eventually(t, func() bool {
		info, err = pgq.NextBatch(ctx, db.Pool, "aq", "c")
		require.NoError(t, err)
		return info != nil
	}, 30*time.Second, 5*time.Millisecond, "no tick: %+v", r.stats(db.Name))
	// Read until the event shows up; tag it for a retry in 500 ms.
	for {
		var tagged bool
		require.NoError(t, pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
			b := pgq.NewBatch(tx, "aq", "c", *info, pgq.ReadOptions{})
			evs, err := b.All(ctx)
			if err != nil {
				return err
			}
			for _, ev := range evs {
				if ev.ID == id {
					ev.TagRetry(500 * time.Millisecond)
					tagged = true
				}
			}
			_, err = b.Finish(ctx, tx)
			return err
		}))
		if tagged {
			break
		}
		require.Eventually(t, func() bool {
			info, err = pgq.NextBatch(ctx, db.Pool, "aq", "c")
			require.NoError(t, err)
			return info != nil
		}, 30*time.Second, 5*time.Millisecond)
	}
	// The retry comes back (RetryPeriod is an hour).
	require.Eventually(t, func() bool {
		info, err := pgq.NextBatch(ctx, db.Pool, "aq", "c")
		require.NoError(t, err)
		if info == nil {
			return false
		}
		evs, err := pgq.NewBatch(db.Pool, "aq", "c", *info, pgq.ReadOptions{}).All(ctx)
		require.NoError(t, err)
		_, err = pgq.FinishBatch(ctx, db.Pool, info.ID)
		require.NoError(t, err)
		for _, ev := range evs {
			if ev.ID == id {
				return true
			}
		}
		return false
	}, 30*time.Second, 10*time.Millisecond, "retried event not back")
	st := r.stats(db.Name)
	require.Zero(t, st.Errors, "last error: %s", st.LastError)
	require.Positive(t, st.RetryEvents)
	var rolname string
	require.NoError(t, db.Pool.QueryRow(ctx, "select usename from pg_stat_activity where datname = current_database() and usename = $1 limit 1", role).Scan(&rolname))
}
