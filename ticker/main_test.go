package ticker_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/ticker"
	"github.com/stretchr/testify/require"
)

var cluster *pgtest.Cluster

func TestMain(m *testing.M) {
	os.Exit(pgtest.Main(m, &cluster))
}

// fast is a Config with test-sized periods for one database.
func fast(dsn string) ticker.Config {
	return ticker.Config{
		Servers:         []ticker.Server{{ConnString: dsn}},
		TickPeriod:      20 * time.Millisecond,
		RetryPeriod:     100 * time.Millisecond,
		MaintPeriod:     100 * time.Millisecond,
		CheckPeriod:     200 * time.Millisecond,
		StatsPeriod:     time.Second,
		LockRetryPeriod: 50 * time.Millisecond,
		MinBackoff:      50 * time.Millisecond,
		MaxBackoff:      500 * time.Millisecond,
		ConnectTimeout:  5 * time.Second,
		Logger:          testLogger(),
	}
}

func testLogger() *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("TICKER_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// running is a Ticker running in the background until stop or the test's end.
type running struct {
	*ticker.Ticker
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned
	err    error         // Run's result
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case <-r.done:
		require.NoError(t, r.err)
	case <-time.After(30 * time.Second):
		t.Fatal("ticker Run did not return within 30s of cancel")
	}
}

func start(t *testing.T, cfg ticker.Config) *running {
	t.Helper()
	tk, err := ticker.New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Ticker: tk, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = tk.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

// stats returns the stats of database db, or a zero value with State "".
func (r *running) stats(db string) ticker.DatabaseStats {
	for _, s := range r.Snapshot() {
		if s.Database == db {
			return s
		}
	}
	return ticker.DatabaseStats{}
}

func (r *running) waitState(t *testing.T, db string, st ticker.State) {
	t.Helper()
	require.Eventually(t, func() bool { return r.stats(db).State == st },
		30*time.Second, 10*time.Millisecond, "database %s never reached state %s (now %+v)", db, st, r.stats(db))
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

type tickRow struct {
	ID   int64
	Time time.Time
}

// ticks lists the ticks of queue, oldest first.
func ticks(t *testing.T, ctx context.Context, db pgq.DB, queue string) []tickRow {
	t.Helper()
	rows, err := db.Query(ctx, `select tick_id, tick_time from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue
		where q.queue_name = $1 order by tick_id`, queue)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[tickRow])
	require.NoError(t, err)
	return out
}

func lastTick(t *testing.T, ctx context.Context, db pgq.DB, queue string) int64 {
	t.Helper()
	ts := ticks(t, ctx, db, queue)
	require.NotEmpty(t, ts)
	return ts[len(ts)-1].ID
}

func insert(t *testing.T, ctx context.Context, db pgq.DB, queue, data string) int64 {
	t.Helper()
	id, err := pgq.InsertEvent(ctx, db, queue, pgq.EventData{Type: pgq.T("t"), Data: pgq.T(data)})
	require.NoError(t, err)
	return id
}

// tickedByTicker forces a tick on queue and waits until the running
// ticker has made it (pgq.Tick would race the ticker for the forced tick):
// it asks for a round, as the ticker may have a long period. It returns
// the new tick.
func tickedByTicker(t *testing.T, ctx context.Context, db pgq.DB, queue string) tickRow {
	t.Helper()
	before := lastTick(t, ctx, db, queue)
	_, err := pgq.ForceTick(ctx, db, queue)
	require.NoError(t, err)
	require.NoError(t, pgq.RequestTick(ctx, db, queue))
	var ts []tickRow
	require.Eventually(t, func() bool {
		ts = ticks(t, ctx, db, queue)
		return ts[len(ts)-1].ID > before
	}, 30*time.Second, time.Millisecond, "the ticker did not take the forced tick on %s", queue)
	return ts[len(ts)-1]
}

// waitRuns waits until the ticker has run at least n more tick statements
// on db than it had when called: proof that it looked n times.
func (r *running) waitRuns(t *testing.T, db string, n int64) {
	t.Helper()
	from := r.stats(db).TickRuns
	require.Eventually(t, func() bool { return r.stats(db).TickRuns >= from+n },
		30*time.Second, 5*time.Millisecond, "ticker did not run %d times on %s", n, db)
}

var newDBMu sync.Mutex

// newDB is cluster.NewDB, one at a time: concurrent "create extension pgq"
// on one cluster race on creating pgq's roles (duplicate pg_authid key).
func newDB(t *testing.T) *pgtest.DB {
	t.Helper()
	newDBMu.Lock()
	defer newDBMu.Unlock()
	return cluster.NewDB(t)
}

// adminDSN creates a login role that is only a member of pgq_admin (no
// superuser, no table owner), dropped when the test ends, and returns
// db's DSN as that role, and the role.
func adminDSN(t *testing.T, ctx context.Context, db *pgtest.DB, prefix string) (dsn, role string) {
	t.Helper()
	role = fmt.Sprintf("%s_%d", prefix, os.Getpid())
	_, err := db.Pool.Exec(ctx, "create role "+role+" login in role pgq_admin")
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = db.Pool.Exec(context.Background(), "drop owned by "+role)
		_, _ = db.Pool.Exec(context.Background(), "drop role if exists "+role)
	})
	dsn = strings.Replace(db.DSN, "user=postgres", "user="+role, 1)
	require.NotEqual(t, db.DSN, dsn)
	return dsn, role
}
