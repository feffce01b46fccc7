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

// TestJobRun: a directory of Skytools ini files, one per job kind, runs
// under one pgqctl process: --register registers every job, run applies
// the events with each, status shows them running with their lag, SIGHUP
// picks up a new file, and a stop removes the pidfiles (status then says
// not running, exit 1). Not parallel: it signals the test process.
func TestJobRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	src, dst := cluster.NewDB(t), cluster.NewDB(t)
	_, err := pgq.CreateQueue(ctx, src.Pool, "q")
	require.NoError(t, err)
	for _, q := range []string{"moved", "split_a", "late"} {
		_, err = pgq.CreateQueue(ctx, dst.Pool, q)
		require.NoError(t, err)
		_, err = pgq.RegisterConsumer(ctx, dst.Pool, q, "reader")
		require.NoError(t, err)
	}
	for _, tbl := range []string{"serial", "simple", "local"} {
		_, err = dst.Pool.Exec(ctx, "create table applied_"+tbl+" (ev_id bigint primary key, id int)")
		require.NoError(t, err)
	}

	dir := t.TempDir()
	ini := func(file, section, extra string) {
		name := strings.TrimSuffix(file, ".ini")
		text := fmt.Sprintf("[%s]\nsrc_db = %s\ndst_db = %s\nqueue_name = q\nlogfile = %s\npidfile = %s\nloop_delay = 0.02\nexception_sleep = 0.05\n%s\n",
			section, src.DSN, dst.DSN, filepath.Join(dir, name+".log"), filepath.Join(dir, name+".pid"), extra)
		require.NoError(t, os.WriteFile(filepath.Join(dir, file), []byte(text), 0o644))
	}
	query := func(tbl string) string {
		return "dst_query = insert into applied_" + tbl + " values (%%(pgq.ev_id)s, %%(id)s)"
	}
	ini("mover.ini", "queue_mover3", "dst_queue_name = moved")
	ini("splitter.ini", "queue_splitter3", "queue_field = extra1")
	ini("serial.ini", "simple_serial_consumer", query("serial"))
	ini("simple.ini", "simple_consumer3", query("simple"))
	ini("local.ini", "simple_local_consumer3", query("local")+"\nlocal_tracking_file = "+filepath.Join(dir, "local.tick"))
	all := []string{"local", "mover", "serial", "simple", "splitter"} // in file name order

	code, out, errOut := pgqctl(t, "job", "run", dir, "--register")
	require.Equal(t, 0, code, errOut)
	want := ""
	for _, j := range all {
		want += j + ": consumer registered\n"
	}
	require.Equal(t, want, out)

	rctx, stop := context.WithCancel(ctx)
	defer stop()
	var runOut, runErr syncBuilder
	done := make(chan int, 1)
	go func() { done <- run(rctx, []string{"job", "run", dir, "-q"}, &runOut, &runErr) }()

	produce := func(from, n int) int64 {
		for i := from; i < from+n; i++ {
			_, err := pgq.InsertEvent(ctx, src.Pool, "q", pgq.EventData{Type: pgq.T("I:id"),
				Data: pgq.T("id=" + strconv.Itoa(i)), Extra1: pgq.T("split_a")})
			require.NoError(t, err)
		}
		tick, err := pgq.Tick(ctx, src.Pool, "q")
		require.NoError(t, err)
		return tick
	}
	caughtUp := func(consumer string, tick int64) func() bool {
		return func() bool {
			ci, err := pgq.GetConsumerInfo(ctx, src.Pool, "q", consumer)
			return err == nil && ci.LastTick == tick
		}
	}
	tick := produce(0, 10)
	for _, j := range all {
		require.Eventually(t, caughtUp(j, tick), time.Minute, 10*time.Millisecond, "%s; stderr: %s", j, runErr.String())
	}
	count := func(q string) (n int) {
		require.NoError(t, dst.Pool.QueryRow(ctx, q).Scan(&n))
		return n
	}
	for _, tbl := range []string{"serial", "simple", "local"} {
		require.Equal(t, 10, count("select count(*) from applied_"+tbl), tbl)
	}
	for _, q := range []string{"moved", "split_a"} {
		_, err := pgq.Tick(ctx, dst.Pool, q)
		require.NoError(t, err)
		info, err := pgq.NextBatch(ctx, dst.Pool, q, "reader")
		require.NoError(t, err)
		require.NotNil(t, info, q)
		evs, err := pgq.NewBatch(dst.Pool, q, "reader", *info, pgq.ReadOptions{}).All(ctx)
		require.NoError(t, err)
		require.Len(t, evs, 10, q)
	}

	// status: all running, under this process.
	var rows []jobStatusRow
	require.Eventually(t, func() bool {
		code, out, _ := pgqctl(t, "job", "status", "--json", dir)
		rows = nil
		require.NoError(t, json.Unmarshal([]byte(out), &rows), out)
		if code != 0 || len(rows) != len(all) {
			return false
		}
		for _, r := range rows {
			if r.Batches == 0 {
				return false
			}
		}
		return true
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
	for _, k := range []string{"queue_mover", "queue_splitter", "simple_serial_consumer", "simple_consumer", "simple_local_consumer"} {
		require.Contains(t, out, k)
	}
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
	tick = produce(10, 1)
	for _, j := range append(all, "late") {
		require.Eventually(t, caughtUp(j, tick), time.Minute, 10*time.Millisecond, j)
	}

	stop()
	require.Equal(t, 0, <-done, "stderr: %s", runErr.String())
	for _, j := range append(all, "late") {
		_, err := os.Stat(filepath.Join(dir, j+".pid"))
		require.True(t, os.IsNotExist(err), "%s's pidfile is removed", j)
	}
	code, out, _ = pgqctl(t, "job", "status", dir)
	require.Equal(t, 1, code)
	require.Contains(t, out, "not running")
	for _, tbl := range []string{"serial", "simple", "local"} {
		require.Equal(t, 11, count("select count(*) from applied_"+tbl), tbl)
	}
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
