package ticker_test

import (
	"slices"
	"testing"
	"time"

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
	dsn, role := adminDSN(t, ctx, db, "ticker")
	lag, hour := 100*time.Millisecond, time.Hour
	createQueue(t, ctx, db.Pool, "aq", pgq.QueueConfig{TickerMaxLag: &lag, TickerIdlePeriod: &hour})
	_, err := pgq.RegisterConsumer(ctx, db.Pool, "aq", "c")
	require.NoError(t, err)
	cfg := fast(dsn)
	cfg.RetryPeriod = hour
	r := start(t, cfg)
	r.waitState(t, db.Name, ticker.StateTicking)

	id := insert(t, ctx, db.Pool, "aq", "x")
	// The ticker ticks the event (ticker_max_lag 100 ms); the consumer
	// tags it for a retry in 500 ms, and it comes back (RetryPeriod is an
	// hour).
	holds := func(evs []*pgq.Event) bool {
		return slices.ContainsFunc(evs, func(e *pgq.Event) bool { return e.ID == id })
	}
	require.Eventually(t, func() bool {
		return holds(consumeOnce(t, ctx, db.Pool, "aq", "c", func(e *pgq.Event) { e.TagRetry(500 * time.Millisecond) }))
	}, 30*time.Second, 5*time.Millisecond, "no tick: %+v", r.stats(db.Name))
	require.Eventually(t, func() bool {
		return holds(consumeOnce(t, ctx, db.Pool, "aq", "c", nil))
	}, 30*time.Second, 10*time.Millisecond, "retried event not back")
	st := r.stats(db.Name)
	require.Zero(t, st.Errors, "last error: %s", st.LastError)
	require.Positive(t, st.RetryEvents)
	var rolname string
	require.NoError(t, db.Pool.QueryRow(ctx, "select usename from pg_stat_activity where datname = current_database() and usename = $1 limit 1", role).Scan(&rolname))
}
