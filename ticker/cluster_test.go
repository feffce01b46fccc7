package ticker_test

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/ticker"
	"github.com/stretchr/testify/require"
)

// TestDiscovery serves every database of a dedicated server found through
// the initial database, plus an explicit database of another server: a new
// database is picked up, a database gaining pgq starts ticking, a dropped
// one is let go.
func TestDiscovery(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	c := pgtest.NewCluster(t)
	a := c.NewDB(t)
	other := newDB(t) // on the shared cluster: a second server
	cfg := fast("")
	cfg.Servers = []ticker.Server{
		{ConnString: c.DSN("postgres"), Discover: true, InitialDatabase: "postgres"},
		{ConnString: other.DSN},
	}
	r := start(t, cfg)
	r.waitState(t, a.Name, ticker.StateTicking)
	r.waitState(t, other.Name, ticker.StateTicking)
	r.waitState(t, "postgres", ticker.StateNoPgq)
	require.Empty(t, r.stats("template1").State, "templates are not served")

	b := c.NewPlainDB(t)
	r.waitState(t, b.Name, ticker.StateNoPgq)
	_, err := b.Pool.Exec(ctx, "create extension pgq")
	require.NoError(t, err)
	r.waitState(t, b.Name, ticker.StateTicking)
	_, err = pgq.CreateQueue(ctx, b.Pool, "q")
	require.NoError(t, err)
	before := lastTick(t, ctx, b.Pool, "q")
	insert(t, ctx, b.Pool, "q", "x")
	require.Eventually(t, func() bool { return lastTick(t, ctx, b.Pool, "q") > before }, 10*time.Second, 5*time.Millisecond)

	b.Pool.Close()
	admin, err := pgx.Connect(ctx, c.DSN("postgres"))
	require.NoError(t, err)
	defer admin.Close(ctx)
	_, err = admin.Exec(ctx, "drop database "+pgx.Identifier{b.Name}.Sanitize()+" with (force)")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return r.stats(b.Name).State == "" }, 10*time.Second, 10*time.Millisecond,
		"a dropped database is no longer served")
	require.Equal(t, ticker.StateTicking, r.stats(a.Name).State)
}

// TestServerRestart restarts and then crashes the server under a running
// ticker: it reports the failure, reconnects with backoff and ticks again.
func TestServerRestart(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	c := pgtest.NewCluster(t)
	db := c.NewDB(t)
	createQueue(t, ctx, db.Pool, "q", pgq.QueueConfig{TickerMaxLag: pgq.Ptr(time.Duration(0))})
	r := start(t, fast(db.DSN))
	r.waitState(t, db.Name, ticker.StateTicking)

	for _, fault := range []struct {
		name string
		down func() error
	}{{"restart", c.Stop}, {"crash", c.Kill}} {
		errs := r.stats(db.Name).Errors
		require.NoError(t, fault.down(), fault.name)
		// Wait for the state itself: the worker counts the error before it
		// switches to failing (and a failed maintenance step counts one
		// without leaving the ticking state).
		require.Eventually(t, func() bool {
			s := r.stats(db.Name)
			return s.Errors > errs && s.State == ticker.StateFailing
		}, 10*time.Second, 5*time.Millisecond, "%s: the failure is counted and reported", fault.name)
		require.NotEmpty(t, r.stats(db.Name).LastError)
		require.NoError(t, c.Start(), fault.name)
		r.waitState(t, db.Name, ticker.StateTicking)
		var before int64
		require.Eventually(t, func() bool { // the test's pool reconnects too
			ts, err := db.Pool.Query(ctx, "select 1")
			if err == nil {
				ts.Close()
			}
			return err == nil
		}, 10*time.Second, 10*time.Millisecond)
		before = lastTick(t, ctx, db.Pool, "q")
		insert(t, ctx, db.Pool, "q", fault.name)
		require.Eventually(t, func() bool { return lastTick(t, ctx, db.Pool, "q") > before }, 10*time.Second, 5*time.Millisecond,
			"%s: ticking resumed", fault.name)
		// The worker clears the count after its tick statement returns,
		// possibly after the test already saw the tick.
		require.Eventually(t, func() bool { return r.stats(db.Name).ConsecutiveErrors == 0 }, 10*time.Second, 5*time.Millisecond,
			"%s: consecutive errors cleared", fault.name)
	}
}
