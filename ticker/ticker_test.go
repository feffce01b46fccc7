package ticker_test

import (
	"context"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/ticker"
	"github.com/stretchr/testify/require"
)

func createQueue(t *testing.T, ctx context.Context, db pgq.DB, queue string, qc pgq.QueueConfig) {
	t.Helper()
	_, err := pgq.CreateQueue(ctx, db, queue)
	require.NoError(t, err)
	require.NoError(t, pgq.SetQueueConfig(ctx, db, queue, qc))
}

// TestTickThresholds checks that the ticker ticks exactly as pgq.ticker()
// would: ticker_max_count, ticker_max_lag, ticker_idle_period, and never a
// paused queue or one with an external ticker.
func TestTickThresholds(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	db := newDB(t)
	hour := time.Hour
	createQueue(t, ctx, db.Pool, "count", pgq.QueueConfig{TickerMaxCount: pgq.Ptr(5), TickerMaxLag: &hour, TickerIdlePeriod: &hour})
	createQueue(t, ctx, db.Pool, "lag", pgq.QueueConfig{TickerMaxCount: pgq.Ptr(10000), TickerMaxLag: pgq.Ptr(300 * time.Millisecond), TickerIdlePeriod: &hour})
	createQueue(t, ctx, db.Pool, "idle", pgq.QueueConfig{TickerMaxCount: pgq.Ptr(10000), TickerMaxLag: pgq.Ptr(100 * time.Millisecond), TickerIdlePeriod: pgq.Ptr(400 * time.Millisecond)})
	createQueue(t, ctx, db.Pool, "paused", pgq.QueueConfig{TickerPaused: pgq.Ptr(true), TickerMaxLag: pgq.Ptr(time.Duration(0))})
	createQueue(t, ctx, db.Pool, "external", pgq.QueueConfig{ExternalTicker: pgq.Ptr(true), TickerMaxLag: pgq.Ptr(time.Duration(0))})
	pausedBefore := len(ticks(t, ctx, db.Pool, "paused"))
	externalBefore := len(ticks(t, ctx, db.Pool, "external"))

	r := start(t, fast(db.DSN))
	r.waitState(t, db.Name, ticker.StateTicking)
	r.waitRuns(t, db.Name, 5)

	t.Run("max_count", func(t *testing.T) {
		// A fresh queue's sequence starts uncalled (off by one); a forced
		// tick made by the running ticker sets an exact baseline.
		prev := lastTick(t, ctx, db.Pool, "count")
		_, err := pgq.ForceTick(ctx, db.Pool, "count")
		require.NoError(t, err)
		require.Eventually(t, func() bool { return lastTick(t, ctx, db.Pool, "count") > prev }, 10*time.Second, 5*time.Millisecond)
		before := len(ticks(t, ctx, db.Pool, "count"))
		for i := range 4 {
			insert(t, ctx, db.Pool, "count", strconv.Itoa(i))
		}
		r.waitRuns(t, db.Name, 10)
		require.Len(t, ticks(t, ctx, db.Pool, "count"), before, "4 events < ticker_max_count 5 and lag < max_lag: no tick")
		insert(t, ctx, db.Pool, "count", "5th")
		require.Eventually(t, func() bool { return len(ticks(t, ctx, db.Pool, "count")) == before+1 },
			10*time.Second, 5*time.Millisecond, "the 5th event must make a tick")
	})

	t.Run("max_lag", func(t *testing.T) {
		// A forced tick is made by the running ticker (never call
		// pgq.ticker in parallel with it); then one event waits for max_lag.
		prev := lastTick(t, ctx, db.Pool, "lag")
		_, err := pgq.ForceTick(ctx, db.Pool, "lag")
		require.NoError(t, err)
		require.Eventually(t, func() bool { return lastTick(t, ctx, db.Pool, "lag") > prev }, 10*time.Second, 5*time.Millisecond)
		// The tick seen may be one that was being made when force_tick ran
		// (it read the sequence before): two more rounds make the forced
		// one too, so the event below is the only thing left to tick.
		r.waitRuns(t, db.Name, 2)
		ts := ticks(t, ctx, db.Pool, "lag")
		base := ts[len(ts)-1]
		insert(t, ctx, db.Pool, "lag", "x")
		require.Eventually(t, func() bool { return lastTick(t, ctx, db.Pool, "lag") > base.ID }, 10*time.Second, 5*time.Millisecond)
		ts = ticks(t, ctx, db.Pool, "lag")
		gap := ts[len(ts)-1].Time.Sub(base.Time)
		t.Logf("max_lag 300ms: tick came %v after the previous one", gap)
		require.GreaterOrEqual(t, gap, 300*time.Millisecond)
		require.Less(t, gap, 1300*time.Millisecond)
	})

	t.Run("idle_period", func(t *testing.T) {
		// No events: ticks back off (doubling) up to ticker_idle_period.
		before := len(ticks(t, ctx, db.Pool, "idle"))
		var ts []tickRow
		require.Eventually(t, func() bool {
			ts = ticks(t, ctx, db.Pool, "idle")
			return len(ts) >= before+7
		}, 20*time.Second, 10*time.Millisecond)
		ts = ts[before:]
		var gaps []time.Duration
		for i := 1; i < len(ts); i++ {
			gaps = append(gaps, ts[i].Time.Sub(ts[i-1].Time))
		}
		t.Logf("idle tick gaps: %v", gaps)
		for _, g := range gaps {
			require.Less(t, g, 400*time.Millisecond+200*time.Millisecond, "idle ticks at most ticker_idle_period apart")
		}
		require.GreaterOrEqual(t, slices.Max(gaps), 350*time.Millisecond, "idle ticks back off to ticker_idle_period")
	})

	require.Len(t, ticks(t, ctx, db.Pool, "paused"), pausedBefore, "paused queue never ticked")
	require.Len(t, ticks(t, ctx, db.Pool, "external"), externalBefore, "external-ticker queue never ticked")
	s := r.stats(db.Name)
	require.Greater(t, s.Ticks, int64(0))
	require.Equal(t, int64(0), s.Errors, "last error: %s", s.LastError)
	require.Equal(t, db.Name, s.Database)
	require.NotEmpty(t, s.Version)
}

// TestNotify checks that every tick of a queue is announced on
// pgq.NotifyChannel(queue) with the tick id, and measures how soon after
// the insert's commit a listener wakes.
func TestNotify(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	db := newDB(t)
	long := "a_queue_with_a_name_long_enough_to_need_the_hashed_channel_form_0123456789"
	for _, q := range []string{"q", long} {
		createQueue(t, ctx, db.Pool, q, pgq.QueueConfig{TickerMaxLag: pgq.Ptr(time.Duration(0))})
	}
	cfg := fast(db.DSN)
	cfg.TickPeriod = 10 * time.Millisecond
	r := start(t, cfg)
	r.waitState(t, db.Name, ticker.StateTicking)

	listener, err := pgx.Connect(ctx, db.DSN)
	require.NoError(t, err)
	defer listener.Close(context.Background())
	for _, q := range []string{"q", long} {
		_, err = listener.Exec(ctx, "listen "+pgx.Identifier{pgq.NotifyChannel(q)}.Sanitize())
		require.NoError(t, err)
	}
	drain := func() {
		for {
			dctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			_, err := listener.WaitForNotification(dctx)
			cancel()
			if err != nil {
				return
			}
		}
	}
	wait := func(q string, after int64) (int64, time.Duration) {
		t0 := time.Now()
		for {
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			n, err := listener.WaitForNotification(wctx)
			cancel()
			require.NoError(t, err, "no NOTIFY within 5s")
			if n.Channel != pgq.NotifyChannel(q) {
				continue
			}
			id, err := strconv.ParseInt(n.Payload, 10, 64)
			require.NoError(t, err, "payload is the tick id")
			if id > after {
				return id, time.Since(t0)
			}
		}
	}

	drain()
	var lat []time.Duration
	for i := range 20 {
		before := lastTick(t, ctx, db.Pool, "q")
		insert(t, ctx, db.Pool, "q", strconv.Itoa(i))
		id, d := wait("q", before)
		// The payload names a tick of this queue; another tick may already
		// have followed it by the time we look.
		require.LessOrEqual(t, id, lastTick(t, ctx, db.Pool, "q"), "payload is a tick of the queue")
		var exists bool
		require.NoError(t, db.Pool.QueryRow(ctx, `select exists (select 1 from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue
			where q.queue_name = 'q' and t.tick_id = $1)`, id).Scan(&exists))
		require.True(t, exists, "payload %d names a tick of queue q", id)
		lat = append(lat, d)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("insert commit -> NOTIFY received (tick period 10ms, max_lag 0): p50 %v, max %v", lat[len(lat)/2], lat[len(lat)-1])
	require.Less(t, lat[len(lat)/2], 500*time.Millisecond)

	before := lastTick(t, ctx, db.Pool, long)
	insert(t, ctx, db.Pool, long, "x")
	id, _ := wait(long, before)
	require.Greater(t, id, before)
	// The worker counts a NOTIFY after its statement returns, which can be
	// after the listener already received it: wait for the count.
	require.Eventually(t, func() bool { return r.stats(db.Name).Notifies > 20 }, 10*time.Second, 5*time.Millisecond,
		"every NOTIFY received is counted")
}

// consumeOnce opens, reads and finishes one batch; nil when none is ready.
func consumeOnce(t *testing.T, ctx context.Context, pool *pgxpool.Pool, queue, cons string, tag func(*pgq.Event)) []*pgq.Event {
	t.Helper()
	_, evs := consumeBatch(t, ctx, pool, queue, cons, tag)
	return evs
}

// consumeBatch is consumeOnce returning the batch too (nil: none ready).
func consumeBatch(t *testing.T, ctx context.Context, pool *pgxpool.Pool, queue, cons string, tag func(*pgq.Event)) (*pgq.BatchInfo, []*pgq.Event) {
	t.Helper()
	info, err := pgq.NextBatch(ctx, pool, queue, cons)
	require.NoError(t, err)
	if info == nil {
		return nil, nil
	}
	b := pgq.NewBatch(pool, queue, cons, *info, pgq.ReadOptions{})
	evs, err := b.All(ctx)
	require.NoError(t, err)
	for _, e := range evs {
		if tag != nil {
			tag(e)
		}
	}
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	_, err = b.Finish(ctx, tx)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	if evs == nil {
		evs = []*pgq.Event{}
	}
	return info, evs
}

// TestRetryEventsComeBack checks retry maintenance: an event tagged for
// retry comes back to its consumer, with its retry count.
func TestRetryEventsComeBack(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	db := newDB(t)
	createQueue(t, ctx, db.Pool, "q", pgq.QueueConfig{TickerMaxLag: pgq.Ptr(time.Duration(0))})
	_, err := pgq.RegisterConsumer(ctx, db.Pool, "q", "c")
	require.NoError(t, err)
	r := start(t, fast(db.DSN))

	id := insert(t, ctx, db.Pool, "q", "again")
	var seen []*pgq.Event
	require.Eventually(t, func() bool {
		seen = append(seen, consumeOnce(t, ctx, db.Pool, "q", "c", func(e *pgq.Event) { e.TagRetry(0) })...)
		return len(seen) > 0
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, id, seen[0].ID)
	require.Equal(t, int32(0), seen[0].Retry)

	var back *pgq.Event
	require.Eventually(t, func() bool {
		for _, e := range consumeOnce(t, ctx, db.Pool, "q", "c", nil) {
			back = e
		}
		return back != nil
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, id, back.ID)
	require.Equal(t, "again", back.Data.String)
	require.Equal(t, int32(1), back.Retry)
	require.GreaterOrEqual(t, r.stats(db.Name).RetryEvents, int64(1))
}

// lockHolders lists the backends holding the ticker's advisory lock on the
// current database.
func lockHolders(t *testing.T, ctx context.Context, db pgq.DB) []int32 {
	t.Helper()
	rows, err := db.Query(ctx, `select pid from pg_locks
		where locktype = 'advisory' and granted and objsubid = 1
		  and database = (select oid from pg_database where datname = current_database())
		  and classid = ($1::int8 >> 32)::oid and objid = ($1::int8 & 4294967295)::oid`, ticker.LockKey)
	require.NoError(t, err)
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	require.NoError(t, err)
	return pids
}

// TestSingleTickerPerDatabase runs several Tickers on one database: only
// the lock holder ticks, a standby takes over when it stops or its session
// is killed.
func TestSingleTickerPerDatabase(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	db := newDB(t)
	createQueue(t, ctx, db.Pool, "q", pgq.QueueConfig{TickerMaxLag: pgq.Ptr(time.Duration(0))})

	a := start(t, fast(db.DSN))
	a.waitState(t, db.Name, ticker.StateTicking)
	b := start(t, fast(db.DSN))
	b.waitState(t, db.Name, ticker.StateStandby)
	a.waitRuns(t, db.Name, 10)
	require.Equal(t, int64(0), b.stats(db.Name).TickRuns, "the standby never ticks")
	require.Len(t, lockHolders(t, ctx, db.Pool), 1)

	// Graceful stop of the active one: the standby takes over.
	a.stop(t)
	b.waitState(t, db.Name, ticker.StateTicking)
	b.waitRuns(t, db.Name, 3)
	before := lastTick(t, ctx, db.Pool, "q")
	insert(t, ctx, db.Pool, "q", "x")
	require.Eventually(t, func() bool { return lastTick(t, ctx, db.Pool, "q") > before }, 10*time.Second, 5*time.Millisecond)

	// A third instance stands by; the active one's session dies (as when
	// its host is cut off): exactly one of them ticks afterwards.
	c := start(t, fast(db.DSN))
	c.waitState(t, db.Name, ticker.StateStandby)
	holders := lockHolders(t, ctx, db.Pool)
	require.Len(t, holders, 1)
	_, err := db.Pool.Exec(ctx, "select pg_terminate_backend($1)", holders[0])
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		h := lockHolders(t, ctx, db.Pool)
		return len(h) == 1 && h[0] != holders[0]
	}, 10*time.Second, 10*time.Millisecond, "someone takes the lock over")
	require.Eventually(t, func() bool {
		sb, sc := b.stats(db.Name).State, c.stats(db.Name).State
		return (sb == ticker.StateTicking && sc == ticker.StateStandby) || (sb == ticker.StateStandby && sc == ticker.StateTicking)
	}, 10*time.Second, 10*time.Millisecond)
	before = lastTick(t, ctx, db.Pool, "q")
	insert(t, ctx, db.Pool, "q", "y")
	require.Eventually(t, func() bool { return lastTick(t, ctx, db.Pool, "q") > before }, 10*time.Second, 5*time.Millisecond)
}

// TestConnectionLifetime checks that the ticking connection is replaced
// after ConnectionLifetime while ticking goes on.
func TestConnectionLifetime(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	db := newDB(t)
	createQueue(t, ctx, db.Pool, "q", pgq.QueueConfig{})
	cfg := fast(db.DSN)
	cfg.ConnectionLifetime = 300 * time.Millisecond
	r := start(t, cfg)
	r.waitState(t, db.Name, ticker.StateTicking)
	var first []int32
	require.Eventually(t, func() bool { first = lockHolders(t, ctx, db.Pool); return len(first) == 1 }, 10*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool {
		h := lockHolders(t, ctx, db.Pool)
		return len(h) == 1 && h[0] != first[0]
	}, 10*time.Second, 10*time.Millisecond, "the connection is recycled")
	r.waitRuns(t, db.Name, 3)
	require.Equal(t, int64(0), r.stats(db.Name).Errors)
}

// TestReload changes the database list and periods of a running Ticker.
func TestReload(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	db1, db2 := newDB(t), newDB(t)
	cfg := fast("")
	cfg.Servers = []ticker.Server{{ConnString: cluster.DSN("postgres"), Databases: []string{db1.Name}}}
	cfg.TickPeriod = time.Hour // first run ticks once, then waits
	r := start(t, cfg)
	r.waitState(t, db1.Name, ticker.StateTicking)
	require.Len(t, r.Snapshot(), 1)
	runs := r.stats(db1.Name).TickRuns
	var holder []int32
	require.Eventually(t, func() bool { holder = lockHolders(t, ctx, db1.Pool); return len(holder) == 1 }, 10*time.Second, 5*time.Millisecond)

	cfg.TickPeriod = 20 * time.Millisecond
	cfg.Servers = []ticker.Server{{ConnString: cluster.DSN("postgres"), Databases: []string{db1.Name, db2.Name}}}
	require.NoError(t, r.Reload(cfg))
	r.waitState(t, db2.Name, ticker.StateTicking)
	require.Eventually(t, func() bool { return r.stats(db1.Name).TickRuns > runs+5 }, 10*time.Second, 5*time.Millisecond,
		"the shorter tick period applies to the running database")
	require.Equal(t, holder, lockHolders(t, ctx, db1.Pool), "a database that stays keeps its connection and lock")

	cfg.Servers[0].Databases = []string{db2.Name}
	require.NoError(t, r.Reload(cfg))
	require.Eventually(t, func() bool { return r.stats(db1.Name).State == "" }, 10*time.Second, 5*time.Millisecond)
	require.Len(t, r.Snapshot(), 1)
	require.Eventually(t, func() bool { return len(lockHolders(t, ctx, db1.Pool)) == 0 }, 10*time.Second, 5*time.Millisecond,
		"the dropped database's lock is released")

	bad := cfg
	bad.TickPeriod = -time.Second
	require.ErrorContains(t, r.Reload(bad), "TickPeriod")
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  ticker.Config
		want string
	}{
		{ticker.Config{}, "Config.Servers"},
		{ticker.Config{Servers: []ticker.Server{{}}, RetryPeriod: -1}, "Config.RetryPeriod"},
		{ticker.Config{Servers: []ticker.Server{{}}, TickPeriod: time.Microsecond}, "Config.TickPeriod"},
		{ticker.Config{Servers: []ticker.Server{{ConnString: "postgres://x:bad port/"}}}, "Config.Servers[0].ConnString"},
		{ticker.Config{Servers: []ticker.Server{{Databases: []string{"a", ""}}}}, "Config.Servers[0].Databases[1]"},
	} {
		_, err := ticker.New(tc.cfg)
		require.Error(t, err)
		require.True(t, strings.Contains(err.Error(), tc.want), "%v does not name %s", err, tc.want)
	}
	_, err := ticker.New(ticker.Config{Servers: []ticker.Server{{ConnString: "host=localhost dbname=x"}}})
	require.NoError(t, err)
}
