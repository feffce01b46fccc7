package ticker_test

import (
	"testing"
	"time"

	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/ticker"
	"github.com/stretchr/testify/require"
)

// TestTickAtDueTime: a round that finds a queue with new events whose
// last tick is younger than its ticker_max_lag schedules the next round
// for when that lag is reached, instead of leaving the events for the
// next TickPeriod (an hour here). The only round before it is the one a
// tick request makes, right after the queue's last tick; an attempt whose
// requested round came too late to prove that (a busy machine) is made
// again.
func TestTickAtDueTime(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	db := newDB(t)
	lag, hour := time.Second, time.Hour
	createQueue(t, ctx, db.Pool, "dq", pgq.QueueConfig{TickerMaxLag: &lag, TickerIdlePeriod: &hour, TickerMaxCount: pgq.Ptr(1000)})
	cfg := fast(db.DSN)
	cfg.TickPeriod = time.Hour
	r := start(t, cfg)
	r.waitState(t, db.Name, ticker.StateTicking)

	for attempt := 1; ; attempt++ {
		last := tickedByTicker(t, ctx, db.Pool, "dq").ID
		t0 := time.Now() // the tick is older
		insert(t, ctx, db.Pool, "dq", "e")
		runs := r.stats(db.Name).TickRuns
		require.NoError(t, pgq.RequestTick(ctx, db.Pool, "dq"))
		require.Eventually(t, func() bool { return r.stats(db.Name).TickRuns > runs }, 30*time.Second, time.Millisecond)
		early := time.Since(t0) < lag-200*time.Millisecond // the requested round ran before the queue was due
		var ts []tickRow
		require.Eventually(t, func() bool {
			ts = ticks(t, ctx, db.Pool, "dq")
			return ts[len(ts)-1].ID > last
		}, 30*time.Second, 5*time.Millisecond, "no tick: the events wait for the next TickPeriod")
		prev, next := ts[len(ts)-2], ts[len(ts)-1]
		require.Equal(t, last, prev.ID)
		gap := next.Time.Sub(prev.Time)
		t.Logf("attempt %d: ticked %v after the last tick (ticker_max_lag %v), requested round early: %v", attempt, gap, lag, early)
		require.GreaterOrEqual(t, gap, lag, "PgQ's threshold holds")
		require.Less(t, gap, lag+5*time.Second)
		if early {
			return
		}
		require.Less(t, attempt, 5, "the requested round never came before the queue was due")
	}
}
