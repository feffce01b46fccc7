package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

// syncBuilder is a strings.Builder safe for a command writing while the
// test reads.
type syncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuilder) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestJobRun: a directory of Skytools ini files runs under one pgqctl
// process: --register registers every job, run applies events with each
// job, status shows them running with their lag, SIGHUP picks up a new
// file, and a stop removes the pidfiles (status then says not running,
// exit 1). Not parallel: it signals the test process.
func TestJobRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	src, dst := cluster.NewDB(t), cluster.NewDB(t)
	_, err := pgq.CreateQueue(ctx, src.Pool, "q")
	require.NoError(t, err)
	for _, q := range []string{"moved", "late"} {
		_, err = pgq.CreateQueue(ctx, dst.Pool, q)
		require.NoError(t, err)
		_, err = pgq.RegisterConsumer(ctx, dst.Pool, q, "reader")
		require.NoError(t, err)
	}
	_, err = dst.Pool.Exec(ctx, "create table applied (ev_id bigint primary key, data text)")
	require.NoError(t, err)

	dir := t.TempDir()
	ini := func(file, section, extra string) {
		name := strings.TrimSuffix(file, ".ini")
		text := fmt.Sprintf("[%s]\nsrc_db = %s\ndst_db = %s\nqueue_name = q\nlogfile = %s\npidfile = %s\nloop_delay = 0.02\nexception_sleep = 0.05\n%s\n",
			section, src.DSN, dst.DSN, filepath.Join(dir, name+".log"), filepath.Join(dir, name+".pid"), extra)
		require.NoError(t, os.WriteFile(filepath.Join(dir, file), []byte(text), 0o644))
	}
	ini("mover.ini", "queue_mover3", "dst_queue_name = moved")
	ini("sink.ini", "simple_serial_consumer", "dst_query = insert into applied values (%%(pgq.ev_id)s, %%(pgq.ev_data)s)")

	code, out, errOut := pgqctl(t, "job", "run", dir, "--register")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "mover: consumer registered\nsink: consumer registered\n", out)

	rctx, stop := context.WithCancel(ctx)
	defer stop()
	var runOut, runErr syncBuilder
	done := make(chan int, 1)
	go func() { done <- run(rctx, []string{"job", "run", dir, "-q"}, &runOut, &runErr) }()

	for i := range 10 {
		_, err := pgq.InsertEvent(ctx, src.Pool, "q", pgq.NewEvent("t", strconv.Itoa(i)))
		require.NoError(t, err)
	}
	tick, err := pgq.Tick(ctx, src.Pool, "q")
	require.NoError(t, err)
	caughtUp := func(consumer string) func() bool {
		return func() bool {
			ci, err := pgq.GetConsumerInfo(ctx, src.Pool, "q", consumer)
			return err == nil && ci.LastTick == tick
		}
	}
	require.Eventually(t, caughtUp("mover"), time.Minute, 10*time.Millisecond, "stderr: %s", runErr.String())
	require.Eventually(t, caughtUp("sink"), time.Minute, 10*time.Millisecond, "stderr: %s", runErr.String())
	var n int
	require.NoError(t, dst.Pool.QueryRow(ctx, "select count(*) from applied").Scan(&n))
	require.Equal(t, 10, n)

	// status: both running, under this process.
	var rows []jobStatusRow
	require.Eventually(t, func() bool {
		code, out, _ := pgqctl(t, "job", "status", "--json", dir)
		rows = nil
		require.NoError(t, json.Unmarshal([]byte(out), &rows), out)
		return code == 0 && len(rows) == 2 && rows[0].Batches > 0 && rows[1].Batches > 0
	}, 30*time.Second, 20*time.Millisecond)
	for _, r := range rows {
		require.True(t, r.Running, r.Name)
		require.Equal(t, os.Getpid(), r.PID)
		require.NotNil(t, r.Pending)
		require.Empty(t, r.Problem)
	}
	code, out, _ = pgqctl(t, "job", "status", dir)
	require.Equal(t, 0, code)
	require.Contains(t, out, "JOB")
	require.Contains(t, out, "queue_mover")
	require.Contains(t, out, "running")
	log, err := os.ReadFile(filepath.Join(dir, "mover.log"))
	require.NoError(t, err)
	require.Contains(t, string(log), "job=mover")

	// SIGHUP: a new file is picked up; the jobs go on.
	ini("late.ini", "queue_mover3", "dst_queue_name = late")
	code, out, errOut = pgqctl(t, "job", "run", filepath.Join(dir, "late.ini"), "--register")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "late: consumer registered\n", out)
	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGHUP))
	require.Eventually(t, func() bool {
		_, err := os.Stat(filepath.Join(dir, "late.pid"))
		return err == nil
	}, 30*time.Second, 10*time.Millisecond, "the new job runs after SIGHUP: %s", runErr.String())
	_, err = pgq.InsertEvent(ctx, src.Pool, "q", pgq.NewEvent("t", "after hup"))
	require.NoError(t, err)
	tick, err = pgq.Tick(ctx, src.Pool, "q")
	require.NoError(t, err)
	for _, c := range []string{"mover", "sink", "late"} {
		require.Eventually(t, caughtUp(c), time.Minute, 10*time.Millisecond, c)
	}

	stop()
	require.Equal(t, 0, <-done, "stderr: %s", runErr.String())
	for _, name := range []string{"mover", "sink", "late"} {
		_, err := os.Stat(filepath.Join(dir, name+".pid"))
		require.True(t, os.IsNotExist(err), "%s's pidfile is removed", name)
	}
	code, out, _ = pgqctl(t, "job", "status", dir)
	require.Equal(t, 1, code)
	require.Contains(t, out, "not running")
	require.NoError(t, dst.Pool.QueryRow(ctx, "select count(*) from applied").Scan(&n))
	require.Equal(t, 11, n)
}

// TestJobRunUsage: what a wrong command line gets.
func TestJobRunUsage(t *testing.T) {
	t.Parallel()
	code, _, errOut := pgqctl(t, "job", "run")
	require.Equal(t, exitUsage, code)
	require.Contains(t, errOut, "want ini files or directories")
	code, _, errOut = pgqctl(t, "job", "run", "x.ini", "--register", "--reset")
	require.Equal(t, exitUsage, code)
	require.Contains(t, errOut, "one operation at a time")
	code, _, errOut = pgqctl(t, "job", "run", "--kind", "queue_shaker", "x.ini")
	require.Equal(t, exitUsage, code)
	require.Contains(t, errOut, "unknown job kind")
	code, _, errOut = pgqctl(t, "job", "run", filepath.Join(t.TempDir(), "missing.ini"))
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "missing.ini")
}
