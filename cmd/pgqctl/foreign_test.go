package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

// The warning "pgqctl ticker" logs when another ticker ticks its database.
const foreignWarning = "another ticker is ticking this database"

// foreignSetup is a database with queue "q" that ticks on every ticker
// round while events arrive (one every 20 ms), and "pgqctl ticker" A
// ticking it every 50 ms.
type foreignSetup struct {
	ctx context.Context
	db  *pgtest.DB
	a   *syncBuffer // A's log
}

func newForeignSetup(t *testing.T) foreignSetup {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	s := foreignSetup{ctx: ctx, db: newDB(t)}
	_, err := pgq.CreateQueue(ctx, s.db.Pool, "q")
	require.NoError(t, err)
	require.NoError(t, pgq.SetQueueConfig(ctx, s.db.Pool, "q", pgq.QueueConfig{
		TickerMaxLag: pgq.Ptr(time.Duration(0)), TickerIdlePeriod: pgq.Ptr(100 * time.Millisecond)}))
	pgtest.Background(t, ctx, func(ctx context.Context) error {
		for ctx.Err() == nil {
			_, _ = pgq.InsertEvent(ctx, s.db.Pool, "q", pgq.EventData{Data: pgq.T("x")})
			time.Sleep(20 * time.Millisecond)
		}
		return nil
	})
	s.a = s.startTicker(t)
	require.Eventually(t, func() bool { return strings.Contains(s.a.String(), "ticker: ticking") }, 20*time.Second, 10*time.Millisecond, "A: %s", s.a)
	return s
}

// startTicker runs "pgqctl ticker" in-process on the database until the
// test ends, and returns its log.
func (s foreignSetup) startTicker(t *testing.T) *syncBuffer {
	t.Helper()
	out := &syncBuffer{}
	pgtest.Background(t, s.ctx, func(ctx context.Context) error {
		if code := run(ctx, []string{"ticker", "--dsn", s.db.DSN, "--ticker-period", "0.05", "--lock-retry-period", "0.1"}, out, out); code != 0 {
			return fmt.Errorf("pgqctl ticker: exit %d", code)
		}
		return nil
	})
	return out
}

// ticks counts the ticks of queue q.
func (s foreignSetup) ticks(t *testing.T) int64 {
	t.Helper()
	var n int64
	require.NoError(t, s.db.Pool.QueryRow(s.ctx, "select count(*) from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue where q.queue_name = 'q'").Scan(&n))
	return n
}

// alone: A ticks for 3.5 s (three looks for other tickers' ticks at this
// period), with a second pgqctl ticker standing by, and warns of nothing.
func (s foreignSetup) alone(t *testing.T) {
	t.Helper()
	b := s.startTicker(t)
	require.Eventually(t, func() bool { return strings.Contains(b.String(), "standing by") }, 20*time.Second, 10*time.Millisecond, "B: %s", b)
	before := s.ticks(t)
	time.Sleep(3500 * time.Millisecond)
	require.Greater(t, s.ticks(t), before+20, "A ticks")
	require.NotContains(t, s.a.String(), foreignWarning)
	require.NotContains(t, b.String(), foreignWarning)
}

// warned waits for A's warning and checks that it names the database and
// what was seen, and that it is given once while the other ticker goes
// on.
func (s foreignSetup) warned(t *testing.T, seen ...string) {
	t.Helper()
	require.Eventually(t, func() bool { return strings.Contains(s.a.String(), foreignWarning) }, 20*time.Second, 10*time.Millisecond, "A: %s", s.a)
	parts := append([]string{"level=WARN", foreignWarning, "db=" + s.db.Name, "foreign_ticks=", "queues=[q]"}, seen...)
	require.True(t, logged(s.a.String(), parts...), "want a line with %q in:\n%s", parts, s.a)
	time.Sleep(3 * time.Second)
	require.Equal(t, 1, strings.Count(s.a.String(), foreignWarning), "once per episode: %s", s.a)
}

// TestTickerWarnsOfAnotherTicker: a session calling pgq.ticker() on the
// database "pgqctl ticker" ticks (as pgqd, a ticker behind a transaction
// pooler, or a hand-run script would) is warned of; a second pgqctl
// ticker, which stands by on the advisory lock, is not.
func TestTickerWarnsOfAnotherTicker(t *testing.T) {
	t.Parallel()
	s := newForeignSetup(t)
	s.alone(t)

	cfg, err := pgx.ParseConfig(s.db.DSN)
	require.NoError(t, err)
	cfg.RuntimeParams["application_name"] = "cron ticker"
	other, err := pgx.ConnectConfig(s.ctx, cfg)
	require.NoError(t, err)
	pgtest.Background(t, s.ctx, func(ctx context.Context) error {
		defer other.Close(context.Background())
		for ctx.Err() == nil {
			_, _ = other.Exec(ctx, "select pgq.ticker()")
			time.Sleep(50 * time.Millisecond)
		}
		return nil
	})
	s.warned(t, "app 'cron ticker'", "select pgq.ticker()")
}

// TestTickerWarnsOfPgqd: the same with pgqd itself ticking the database.
func TestTickerWarnsOfPgqd(t *testing.T) {
	t.Parallel()
	const bin = "/usr/bin/pgqd" // where scripts/ensure-deps installs it
	_, err := os.Stat(bin)
	require.NoError(t, err, "pgqd is not installed: run scripts/ensure-deps (Debian package pgqd)")
	s := newForeignSetup(t)
	s.alone(t)

	dir := t.TempDir()
	ini := filepath.Join(dir, "pgqd.ini")
	base := strings.Replace(cluster.DSN("x"), " dbname=x", "", 1)
	require.NoError(t, os.WriteFile(ini, []byte(fmt.Sprintf("[pgqd]\nlogfile = %s\npidfile = %s\nbase_connstr = %s\ndatabase_list = %s\nticker_period = 0.05\n",
		filepath.Join(dir, "pgqd.log"), filepath.Join(dir, "pgqd.pid"), base, s.db.Name)), 0o644))
	pgqd := exec.Command(bin, ini)
	require.NoError(t, pgqd.Start())
	t.Cleanup(func() {
		_ = pgqd.Process.Signal(syscall.SIGINT)
		_ = pgqd.Wait()
	})
	// pgqd sets no application_name; its last statement shows.
	s.warned(t, "select pgq.ticker()")
}
