package ticker_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

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
	hour := time.Hour
	createQueue(t, ctx, db.Pool, "rq", pgq.QueueConfig{TickerMaxLag: &hour, TickerIdlePeriod: &hour})
	_, err := pgq.RegisterConsumer(ctx, db.Pool, "rq", "c")
	require.NoError(t, err)
	cfg := fast(db.DSN)
	cfg.RetryPeriod = time.Hour
	r := start(t, cfg)
	r.waitRuns(t, db.Name, 2) // the start's retry run is behind it

	id := insert(t, ctx, db.Pool, "rq", "again")
	tickedByTicker(t, ctx, db.Pool, "rq")
	info, err := pgq.NextBatch(ctx, db.Pool, "rq", "c")
	require.NoError(t, err)
	require.NotNil(t, info)
	require.NoError(t, pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		b := pgq.NewBatch(tx, "rq", "c", *info, pgq.ReadOptions{})
		evs, err := b.All(ctx)
		require.NoError(t, err)
		require.Len(t, evs, 1)
		evs[0].TagRetry(2 * time.Second)
		_, err = b.Finish(ctx, tx)
		return err
	}))
	var due time.Time
	require.NoError(t, db.Pool.QueryRow(ctx, "select ev_retry_after from pgq.retry_queue where ev_id = $1", id).Scan(&due))

	// The consumer keeps looking; the event comes back in a batch whose
	// end tick is at or after its retry time, and soon after it.
	var back *pgq.BatchInfo
	require.Eventually(t, func() bool {
		info, err := pgq.NextBatch(ctx, db.Pool, "rq", "c")
		require.NoError(t, err)
		if info == nil {
			return false
		}
		evs, err := pgq.NewBatch(db.Pool, "rq", "c", *info, pgq.ReadOptions{}).All(ctx)
		require.NoError(t, err)
		_, err = pgq.FinishBatch(ctx, db.Pool, info.ID)
		require.NoError(t, err)
		for _, ev := range evs {
			if ev.ID == id {
				require.Equal(t, int32(1), ev.Retry)
				back = info
				return true
			}
		}
		return false
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
	hour := time.Hour
	createQueue(t, ctx, db.Pool, "rt", pgq.QueueConfig{TickerMaxLag: &hour, TickerIdlePeriod: &hour})
	_, err := pgq.RegisterConsumer(ctx, db.Pool, "rt", "c")
	require.NoError(t, err)
	cfg := fast(db.DSN)
	cfg.RetryPeriod = time.Hour
	r := start(t, cfg)
	r.waitRuns(t, db.Name, 2)

	const n = 25
	for i := range n {
		insert(t, ctx, db.Pool, "rt", "again "+strconv.Itoa(i))
	}
	tickedByTicker(t, ctx, db.Pool, "rt")
	info, err := pgq.NextBatch(ctx, db.Pool, "rt", "c")
	require.NoError(t, err)
	require.NotNil(t, info)
	at := time.Now().Add(time.Second)
	require.NoError(t, pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		b := pgq.NewBatch(tx, "rt", "c", *info, pgq.ReadOptions{})
		evs, err := b.All(ctx)
		require.NoError(t, err)
		require.Len(t, evs, n)
		for _, ev := range evs {
			ev.TagRetryAt(at)
		}
		_, err = b.Finish(ctx, tx)
		return err
	}))
	var back []int
	require.Eventually(t, func() bool {
		info, err := pgq.NextBatch(ctx, db.Pool, "rt", "c")
		require.NoError(t, err)
		if info == nil {
			return false
		}
		evs, err := pgq.NewBatch(db.Pool, "rt", "c", *info, pgq.ReadOptions{}).All(ctx)
		require.NoError(t, err)
		_, err = pgq.FinishBatch(ctx, db.Pool, info.ID)
		require.NoError(t, err)
		if len(evs) > 0 {
			back = append(back, len(evs))
		}
		total := 0
		for _, k := range back {
			total += k
		}
		return total >= n
	}, 60*time.Second, 10*time.Millisecond, "retried events not back")
	require.Equal(t, []int{n}, back, "events per batch")
}
