package job_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/job"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/remote"
	"github.com/stretchr/testify/require"
)

// TestRunnerIsolatesJobs: one process runs two jobs; the one whose queue
// does not exist fails and is restarted, its status saying why, while the
// other applies every event. Each job's pidfile holds the process while
// it runs (a second runner of the same job is refused) and is removed
// when the runner stops; the status files show the states.
func TestRunnerIsolatesJobs(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	src, dst := cluster.NewDB(t), cluster.NewDB(t)
	_, err := pgq.CreateQueue(ctx, src.Pool, "q")
	require.NoError(t, err)
	_, err = dst.Pool.Exec(ctx, appliedTable)
	require.NoError(t, err)
	dir := t.TempDir()
	fast := consumer.Config{PollInterval: 20 * time.Millisecond,
		ErrorBackoff: consumer.Backoff{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond}}
	mk := func(name, queue string) *job.Job {
		cc := fast
		cc.Queue, cc.Name, cc.Register = queue, name, true
		j, err := job.New(job.Config{Name: name, Kind: job.SimpleSerialConsumer, SrcDB: src.DSN, DstDB: dst.DSN,
			Remote:   remote.Config{Consumer: cc},
			DstQuery: "insert into applied (ev_id, tick, data) values (%(pgq.ev_id)s, %(pgq.tick_id)s, %(pgq.ev_data)s)",
			Pidfile:  filepath.Join(dir, name+".pid")})
		require.NoError(t, err)
		return j
	}
	good, bad := mk("good", "q"), mk("bad", "no_such_queue")
	r, err := job.NewRunner([]*job.Job{good, bad}, job.RunnerOptions{RestartDelay: 20 * time.Millisecond, StatusEvery: 20 * time.Millisecond})
	require.NoError(t, err)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()

	// The good job registers itself, then applies what comes.
	require.Eventually(t, func() bool { return lastTick(t, ctx, src.Pool, "q", "good") > 0 }, 30*time.Second, 10*time.Millisecond)
	for i := range 20 {
		_, err := pgq.InsertEvent(ctx, src.Pool, "q", pgq.NewEvent("t", strconv.Itoa(i)))
		require.NoError(t, err)
	}
	tick, err := pgq.Tick(ctx, src.Pool, "q")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, dst.Pool.QueryRow(ctx, "select count(*) from applied").Scan(&n))
		st := r.Status()
		return n == 20 && lastTick(t, ctx, src.Pool, "q", "good") == tick && st[0].Events == 20 && st[1].Restarts >= 2
	}, 30*time.Second, 10*time.Millisecond)
	st := r.Status()
	require.Equal(t, job.StateRunning, st[0].State)
	require.Equal(t, "good", st[0].Name)
	require.Equal(t, "bad", st[1].Name)
	require.Contains(t, st[1].LastError, "no_such_queue")
	require.Contains(t, []job.State{job.StateFailed, job.StateStarting}, st[1].State)

	// The pidfiles name this process; a second runner is refused.
	b, err := os.ReadFile(filepath.Join(dir, "good.pid"))
	require.NoError(t, err)
	require.Equal(t, strconv.Itoa(os.Getpid()), strings.TrimSpace(string(b)))
	// The status files: what Status says, as the CLI reads it.
	require.Eventually(t, func() bool {
		s, err := job.ReadStatus(job.StatusPath(filepath.Join(dir, "good.pid")))
		return err == nil && s.Events == 20 && s.State == job.StateRunning
	}, 10*time.Second, 10*time.Millisecond)
	s, err := job.ReadStatus(filepath.Join(dir, "bad.status"))
	require.NoError(t, err)
	require.Contains(t, s.LastError, "no_such_queue")

	cancel()
	require.NoError(t, <-done)
	for _, name := range []string{"good", "bad"} {
		_, err := os.Stat(filepath.Join(dir, name+".pid"))
		require.True(t, os.IsNotExist(err), "%s's pidfile is removed", name)
		s, err := job.ReadStatus(filepath.Join(dir, name+".status"))
		require.NoError(t, err)
		require.Equal(t, job.StateStopped, s.State, name)
	}
	var n, distinct int
	require.NoError(t, dst.Pool.QueryRow(ctx, "select count(*), count(distinct ev_id) from applied").Scan(&n, &distinct))
	require.Equal(t, 20, n)
	require.Equal(t, 20, distinct)
}

// TestRunnerRefusesARunningJob: a job whose pidfile names another live
// process is not started (two copies would fight over batches), and
// nothing is claimed.
func TestRunnerRefusesARunningJob(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pid := filepath.Join(dir, "j.pid")
	// Our parent is alive and is not us.
	require.NoError(t, os.WriteFile(pid, []byte(fmt.Sprintln(os.Getppid())), 0o644))
	free := filepath.Join(dir, "free.pid")
	mk := func(name, pidfile string) *job.Job {
		j, err := job.New(job.Config{Name: name, Kind: job.QueueMover, SrcDB: "dbname=x", DstDB: "dbname=y",
			DstQueue: "d", Remote: remote.Config{Consumer: consumer.Config{Queue: "q", Name: name}}, Pidfile: pidfile})
		require.NoError(t, err)
		return j
	}
	r, err := job.NewRunner([]*job.Job{mk("free", free), mk("j", pid)}, job.RunnerOptions{})
	require.NoError(t, err)
	err = r.Run(context.Background())
	require.ErrorContains(t, err, "already running as process "+strconv.Itoa(os.Getppid()))
	_, serr := os.Stat(free)
	require.True(t, os.IsNotExist(serr), "the other job's pidfile is released")

	_, err = job.NewRunner([]*job.Job{mk("a", ""), mk("a", "")}, job.RunnerOptions{})
	require.ErrorContains(t, err, "two jobs are named a")
}

// TestStatusFileEndsStopped: a runner that stops leaves "stopped" in each
// job's status file, even when the periodic writer read the status just
// before the stop and writes the file after the stop's write. The hook stops
// the runner right after that read and lets the write go on only once the
// runner has recorded the stop. (CI's flakehunt once found "running" left
// in TestRunnerIsolatesJobs: the periodic write landed after the stop's.)
func TestStatusFileEndsStopped(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	src, dst := cluster.NewDB(t), cluster.NewDB(t)
	_, err := pgq.CreateQueue(ctx, src.Pool, "q")
	require.NoError(t, err)
	_, err = dst.Pool.Exec(ctx, appliedTable)
	require.NoError(t, err)
	dir := t.TempDir()
	cc := consumer.Config{Queue: "q", Name: "j", Register: true, PollInterval: 20 * time.Millisecond}
	j, err := job.New(job.Config{Name: "j", Kind: job.SimpleSerialConsumer, SrcDB: src.DSN, DstDB: dst.DSN,
		Remote:   remote.Config{Consumer: cc},
		DstQuery: "insert into applied (ev_id, tick, data) values (%(pgq.ev_id)s, %(pgq.tick_id)s, %(pgq.ev_data)s)",
		Pidfile:  filepath.Join(dir, "j.pid")})
	require.NoError(t, err)
	r, err := job.NewRunner([]*job.Job{j}, job.RunnerOptions{StatusEvery: 5 * time.Millisecond})
	require.NoError(t, err)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var once sync.Once
	stale := make(chan job.State, 1)
	defer job.SetPeriodicStatusHook(func(hr *job.Runner, _ string, s job.Status) {
		if hr != r || s.State != job.StateRunning {
			return
		}
		once.Do(func() {
			cancel()
			for r.Status()[0].State != job.StateStopped {
				time.Sleep(time.Millisecond)
			}
			stale <- s.State
		})
	})()
	require.NoError(t, r.Run(rctx))
	require.Equal(t, job.StateRunning, <-stale, "the periodic writer read the status before the stop")
	s, err := job.ReadStatus(filepath.Join(dir, "j.status"))
	require.NoError(t, err)
	require.Equal(t, job.StateStopped, s.State)
}
