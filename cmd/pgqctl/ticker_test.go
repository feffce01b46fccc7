package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

var newDBMu sync.Mutex

// newDB is cluster.NewDB one at a time (parallel "create extension pgq"
// races on pgq's roles).
func newDB(t *testing.T) *pgtest.DB {
	t.Helper()
	newDBMu.Lock()
	defer newDBMu.Unlock()
	return cluster.NewDB(t)
}

// queueWithTicks creates queue q (tick as soon as there are events) and
// returns a function that inserts an event and reports whether a tick
// after it appears.
func queueWithTicks(t *testing.T, ctx context.Context, db *pgtest.DB) func() func() bool {
	t.Helper()
	_, err := pgq.CreateQueue(ctx, db.Pool, "q")
	require.NoError(t, err)
	require.NoError(t, pgq.SetQueueConfig(ctx, db.Pool, "q", pgq.QueueConfig{TickerMaxLag: pgq.Ptr(time.Duration(0))}))
	last := func() int64 {
		var id int64
		require.NoError(t, db.Pool.QueryRow(ctx, "select coalesce(max(last_tick_id), 0) from pgq.get_queue_info('q')").Scan(&id))
		return id
	}
	return func() func() bool {
		before := last()
		_, err := pgq.InsertEvent(ctx, db.Pool, "q", pgq.EventData{Data: pgq.T("x")})
		require.NoError(t, err)
		return func() bool { return last() > before }
	}
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestTickerInProcess runs "pgqctl ticker --dsn ..." in-process until its
// context is cancelled.
func TestTickerInProcess(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := newDB(t)
	tick := queueWithTicks(t, ctx, db)

	runCtx, stop := context.WithCancel(ctx)
	var out syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(runCtx, []string{"ticker", "--dsn", db.DSN, "--ticker-period", "20ms", "--stats-period", "0.1", "-v"}, &out, &out)
	}()
	ticked := tick()
	require.Eventually(t, ticked, 20*time.Second, 10*time.Millisecond)
	// Wait for the line asserted, not for any stats line: the first ones
	// can be logged before the worker connected (state=connecting).
	require.Eventually(t, func() bool { return logged(out.String(), "ticker: stats", "state=ticking") }, 20*time.Second, 10*time.Millisecond,
		"a stats line with state=ticking; log: %s", &out)
	stop()
	select {
	case code := <-done:
		require.Equal(t, 0, code, out.String())
	case <-time.After(20 * time.Second):
		t.Fatal("pgqctl ticker did not stop")
	}
	require.Contains(t, out.String(), "ticker stopped")
}

// logged reports whether one line of log contains every one of parts.
func logged(log string, parts ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}

// TestTickerDaemon builds pgqctl and runs it as pgqd users would: with an
// unchanged-format pgqd.ini, SIGHUP to reload, SIGTERM to stop.
func TestTickerDaemon(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	bin := filepath.Join(dir, "pgqctl")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build: %s", out)

	db1, db2 := newDB(t), newDB(t)
	tick1, tick2 := queueWithTicks(t, ctx, db1), queueWithTicks(t, ctx, db2)
	base := strings.Replace(cluster.DSN("x"), " dbname=x", "", 1)
	ini := filepath.Join(dir, "pgqd.ini")
	logfile, pidfile := filepath.Join(dir, "pgqd.log"), filepath.Join(dir, "pgqd.pid")
	writeINI := func(dbs string) {
		require.NoError(t, os.WriteFile(ini, []byte(fmt.Sprintf(`[pgqd]
logfile = %s
pidfile = %s
base_connstr = %s
initial_database = postgres
database_list = %s
syslog = 0
ticker_period = 0.02
retry_period = 0.1
maint_period = 0.1
stats_period = 0.2
check_period = 0.2
connection_lifetime = 3600
`, logfile, pidfile, base, dbs)), 0o644))
	}
	writeINI(db1.Name)

	var stderr syncBuffer
	cmd := exec.Command(bin, "ticker", "-q", ini)
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})

	require.Eventually(t, tick1(), 20*time.Second, 10*time.Millisecond, "db1 ticks; stderr: %s", stderr.String())
	pid, err := os.ReadFile(pidfile)
	require.NoError(t, err)
	require.Equal(t, fmt.Sprint(cmd.Process.Pid), strings.TrimSpace(string(pid)))
	ticked2 := tick2()
	require.False(t, ticked2(), "db2 is not listed yet")

	// Reload with a second database.
	writeINI(db1.Name + ", " + db2.Name)
	require.NoError(t, cmd.Process.Signal(syscall.SIGHUP))
	require.Eventually(t, ticked2, 20*time.Second, 10*time.Millisecond, "db2 ticks after SIGHUP")
	require.Eventually(t, tick1(), 20*time.Second, 10*time.Millisecond, "db1 still ticks")

	// A second instance with the same pidfile refuses to start.
	second := exec.CommandContext(ctx, bin, "ticker", "-q", ini)
	out, err = second.CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out), "is running")

	require.Eventually(t, func() bool {
		log, _ := os.ReadFile(logfile)
		return strings.Contains(string(log), "ticker: stats")
	}, 20*time.Second, 10*time.Millisecond, "stats are logged every stats_period")

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-exited:
		require.NoError(t, waitErr, "exit status; stderr: %s", stderr.String())
	case <-time.After(20 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	_, err = os.Stat(pidfile)
	require.True(t, os.IsNotExist(err), "pidfile removed on exit")
	log, err := os.ReadFile(logfile)
	require.NoError(t, err)
	for _, want := range []string{"syslog is ignored", "reloaded configuration", "ticker: stats", "db=" + db2.Name, "ticker stopped"} {
		require.Contains(t, string(log), want)
	}
	require.Empty(t, stderr.String(), "-q: nothing on stderr")
}

// TestTickerFlagsAfterConfig: flags may follow the pgqd.ini argument, as
// they may follow the positional arguments of every other command.
func TestTickerFlagsAfterConfig(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := newDB(t)
	tick := queueWithTicks(t, ctx, db)
	ini := filepath.Join(t.TempDir(), "pgqd.ini")
	base := strings.Replace(cluster.DSN("x"), " dbname=x", "", 1)
	require.NoError(t, os.WriteFile(ini, []byte(fmt.Sprintf("[pgqd]\nbase_connstr = %s\ndatabase_list = %s\nticker_period = 10\n", base, db.Name)), 0o644))
	noEnv := func(string) string { return "" }

	f := newTickerFlags(io.Discard)
	require.NoError(t, f.parse([]string{ini, "--ticker-period", "0.02", "-v"}, noEnv))
	require.Equal(t, ini, f.config)
	require.True(t, f.verbose)
	dc, err := f.load()
	require.NoError(t, err)
	require.Equal(t, 20*time.Millisecond, dc.ticker.TickPeriod, "the flag after the file beats the ini")

	f = newTickerFlags(io.Discard)
	require.NoError(t, f.parse([]string{"-q", ini, "--stats-period", "0.5"}, noEnv))
	require.Equal(t, ini, f.config)
	require.True(t, f.quiet)
	require.Equal(t, "0.5", f.statsPeriod)

	// "--" ends the flags: what follows is an argument.
	f = newTickerFlags(io.Discard)
	require.ErrorContains(t, f.parse([]string{ini, "--", "-v"}, noEnv), "too many arguments")

	code, _, errOut := pgqctl(t, "ticker", ini, "-d")
	require.Equal(t, exitUsage, code, errOut)
	require.Contains(t, errOut, "-d (daemonize) is not supported")
	code, _, errOut = pgqctl(t, "ticker", ini, "--ticker-period", "fast")
	require.Equal(t, 1, code, errOut)
	require.Contains(t, errOut, `"fast"`)
	code, _, errOut = pgqctl(t, "ticker", ini, "--help")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, errOut, "usage: pgqctl ticker")

	// A run with the flags after the file ticks at the flag's period.
	runCtx, stop := context.WithCancel(ctx)
	var out syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(runCtx, []string{"ticker", ini, "--ticker-period", "0.02", "-v"}, &out, &out) }()
	require.Eventually(t, tick(), 20*time.Second, 10*time.Millisecond, "log: %s", &out)
	stop()
	select {
	case code := <-done:
		require.Equal(t, 0, code, out.String())
	case <-time.After(20 * time.Second):
		t.Fatal("pgqctl ticker did not stop")
	}
	require.True(t, logged(out.String(), "ticker: starting", "tick_period=20ms"), out.String())
}
