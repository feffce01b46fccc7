package ticker_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

// startRetryTicker gives queue hour-long tick thresholds and a consumer
// "c", and starts a ticker whose retry maintenance runs every hour: only
// the retry schedule brings retried events back.
func startRetryTicker(t *testing.T, ctx context.Context, db *pgtest.DB, queue string) *running {
	t.Helper()
	hour := time.Hour
	createQueue(t, ctx, db.Pool, queue, pgq.QueueConfig{TickerMaxLag: &hour, TickerIdlePeriod: &hour})
	_, err := pgq.RegisterConsumer(ctx, db.Pool, queue, "c")
	require.NoError(t, err)
	cfg := fast(db.DSN)
	cfg.RetryPeriod = hour
	r := start(t, cfg)
	r.waitRuns(t, db.Name, 2) // the start's retry run is behind it
	return r
}

// TestRetryBackOnTime: an event tagged for retry in 2 s comes back to
// its consumer soon after those 2 s although retry maintenance runs every
// hour (RetryPeriod) and the queue ticks on its own only every hour
// (ticker_max_lag, ticker_idle_period): the round reads when the next
// retry is due, maintenance runs then, and the queues that got events
// back are ticked at once. Before, the event waited for RetryPeriod (30 s
// by default, as in pgqd) and then for the queue's tick thresholds.
func TestRetryBackOnTime(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	db := newDB(t)
	r := startRetryTicker(t, ctx, db, "rq")

	id := insert(t, ctx, db.Pool, "rq", "again")
	tickedByTicker(t, ctx, db.Pool, "rq")
	evs := consumeOnce(t, ctx, db.Pool, "rq", "c", func(e *pgq.Event) { e.TagRetry(2 * time.Second) })
	require.Len(t, evs, 1)
	var due time.Time
	require.NoError(t, db.Pool.QueryRow(ctx, "select ev_retry_after from pgq.retry_queue where ev_id = $1", id).Scan(&due))

	// The consumer keeps looking; the event comes back in a batch whose
	// end tick is at or after its retry time, and soon after it.
	var back *pgq.BatchInfo
	require.Eventually(t, func() bool {
		info, evs := consumeBatch(t, ctx, db.Pool, "rq", "c", nil)
		for _, ev := range evs {
			if ev.ID == id {
				require.Equal(t, int32(1), ev.Retry)
				back = info
			}
		}
		return back != nil
	}, 60*time.Second, 10*time.Millisecond, "the retried event did not come back (RetryPeriod is an hour)")
	late := back.TickTime.Sub(due)
	t.Logf("back in the tick of %v, %v after its retry time", back.TickTime.Format(time.TimeOnly), late)
	require.GreaterOrEqual(t, late, time.Duration(0), "not before its retry time")
	require.Less(t, late, 5*time.Second, "within a few tick periods of its retry time, not RetryPeriod")
	require.Positive(t, r.stats(db.Name).RetryEvents)
}

// TestRetriesComeBackTogether: 25 events due for retry at once come back
// in one batch. Retry maintenance moves 10 per call; the queues that got
// events back are ticked once the run is over, not after every 10 (which
// cut them into batches of 10).
func TestRetriesComeBackTogether(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	db := newDB(t)
	startRetryTicker(t, ctx, db, "rt")

	const n = 25
	for i := range n {
		insert(t, ctx, db.Pool, "rt", "again "+strconv.Itoa(i))
	}
	tickedByTicker(t, ctx, db.Pool, "rt")
	at := time.Now().Add(time.Second)
	evs := consumeOnce(t, ctx, db.Pool, "rt", "c", func(e *pgq.Event) { e.TagRetryAt(at) })
	require.Len(t, evs, n)
	var back []int
	total := 0
	require.Eventually(t, func() bool {
		if _, evs := consumeBatch(t, ctx, db.Pool, "rt", "c", nil); len(evs) > 0 {
			back = append(back, len(evs))
			total += len(evs)
		}
		return total >= n
	}, 60*time.Second, 10*time.Millisecond, "retried events not back")
	require.Equal(t, []int{n}, back, "events per batch")
}
