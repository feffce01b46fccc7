package local_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgq-go/pgq/consumer"
	"github.com/stretchr/testify/require"
)

// python runs testdata/py_local.py, a Skytools python-pgq LocalConsumer
// (system python3 with python3-pgq and python3-psycopg2, as
// scripts/ensure-deps installs), on e's queue, consumer and tracking file.
type python struct {
	e      *env
	dir    string
	script string
}

func newPython(t *testing.T, e *env) *python {
	t.Helper()
	requirePython(t)
	script, err := filepath.Abs("testdata/py_local.py")
	require.NoError(t, err)
	return &python{e: e, dir: t.TempDir(), script: script}
}

// requirePython fails the test, naming the fix, when the reference
// implementation is not installed. The check is ensure-deps' own, in an
// isolated interpreter, so nothing in the working directory can pass for
// an installed module.
func requirePython(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Fatalf("/usr/bin/python3 is missing: run scripts/ensure-deps (installs python3-pgq and python3-psycopg2): %v", err)
	}
	check, err := filepath.Abs("../scripts/ensure-deps")
	require.NoError(t, err)
	for _, mod := range []string{"pgq", "psycopg2"} {
		if out, err := exec.Command(check, "--has-py-module", mod).CombinedOutput(); err != nil {
			t.Fatalf("python module %s is not installed for /usr/bin/python3: run scripts/ensure-deps (%v %s)", mod, err, out)
		}
	}
}

// run runs the Python consumer until it finished the batch ending at
// stopTick, or, with dieAfterSave, until it died after writing that tick
// to the tracking file. It returns the process's exit code.
func (p *python) run(t *testing.T, stopTick, dieAfterSave int64) int {
	t.Helper()
	conf := filepath.Join(p.dir, "py_local.ini")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf(`[py_local]
job_name = py_local_test
src_db = %s
dst_db = %s
queue_name = %s
consumer_name = %s
local_tracking_file = %s
logfile = %s
loop_delay = 0.02
stop_tick = %d
die_after_save_tick = %d
`, p.e.DB.DSN, p.e.dst.DSN, p.e.Queue, p.e.Consumer, p.e.file, filepath.Join(p.dir, "py_local.log"), stopTick, dieAfterSave)), 0o644))
	ctx, cancel := context.WithTimeout(p.e.Ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/usr/bin/python3", "-I", p.script, conf)
	cmd.Dir = p.dir
	out, err := cmd.CombinedOutput()
	t.Logf("python LocalConsumer (stop at tick %d, die after saving tick %d):\n%s", stopTick, dieAfterSave, out)
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode()
	}
	require.NoError(t, err, "python LocalConsumer")
	return 0
}

// byWhom returns, per tick, who applied the batch ending there.
func (e *env) byWhom(t *testing.T) map[int64]string {
	t.Helper()
	rows, err := e.dst.Pool.Query(e.Ctx, "select distinct tick_id, by_whom from applied")
	require.NoError(t, err)
	defer rows.Close()
	m := map[int64]string{}
	for rows.Next() {
		var tick int64
		var by string
		require.NoError(t, rows.Scan(&tick, &by))
		require.NotContains(t, m, tick, "one batch per tick, applied by one implementation")
		m[tick] = by
	}
	require.NoError(t, rows.Err())
	return m
}

// TestPythonGoHandover: a job moves from Python's LocalConsumer to the Go
// one and back with the same tracking file: each continues exactly where
// the other stopped, every event is applied exactly once, and the file
// holds the same bytes whichever wrote it.
func TestPythonGoHandover(t *testing.T) {
	t.Parallel()
	e := setup(t)
	py := newPython(t, e)

	first := e.Produce(t, 4, nil)
	t2 := e.Tick(t)
	second := e.Produce(t, 3, nil)
	t3 := e.Tick(t)
	require.Zero(t, py.run(t, t3, 0))
	require.Equal(t, t3, e.fileTick(t), "python wrote the bare decimal tick")
	require.Equal(t, t3, e.queueTick())

	third := e.Produce(t, 5, nil)
	t4 := e.Tick(t)
	e.Tick(t) // t5: an empty batch
	fourth := e.Produce(t, 2, nil)
	t6 := e.Tick(t)
	a := &applier{dst: e.dst.Pool, by: "go"}
	var errs counter
	cfg := e.cfg(t)
	cfg.Consumer.Hooks.OnError = func(consumer.ErrorInfo) { errs.inc() }
	stop := e.start(t, cfg, a)
	e.waitDone(t, t6)
	require.NoError(t, stop())
	require.Zero(t, errs.get())
	require.Equal(t, t3, a.batches[0].PrevTickID, "go started from python's tick") // Run has returned

	fifth := e.Produce(t, 3, nil)
	t7 := e.Tick(t)
	sixth := e.Produce(t, 3, nil)
	t8 := e.Tick(t)
	require.Zero(t, py.run(t, t8, 0))
	require.Equal(t, t8, e.fileTick(t))
	require.Equal(t, t8, e.queueTick())

	e.requireExactlyOnce(t, first, second, third, fourth, fifth, sixth)
	require.Equal(t, map[int64]string{t2: "python", t3: "python", t4: "go", t6: "go", t7: "python", t8: "python"}, e.byWhom(t))
}

// TestPythonGoCrashHandover: each implementation takes over from the
// other after a crash in the gap between the tracking file write and
// finish_batch. Python dies there and Go finishes the open batch without
// applying it again; a Go process is killed there and Python moves the
// queue to the file's tick (its "Repositioning on queue"). Every event is
// applied exactly once.
func TestPythonGoCrashHandover(t *testing.T) {
	t.Parallel()
	e := setup(t)
	py := newPython(t, e)

	first := e.Produce(t, 4, nil)
	t2 := e.Tick(t)
	second := e.Produce(t, 3, nil)
	t3 := e.Tick(t)
	require.Equal(t, 9, py.run(t, 1<<40, t3), "python died after saving tick %d", t3)
	require.Equal(t, t3, e.fileTick(t))
	info := e.Info(t)
	require.Equal(t, t2, info.LastTick, "python died before finish_batch")
	require.NotZero(t, info.CurrentBatch)
	e.requireExactlyOnce(t, first, second)

	third := e.Produce(t, 2, nil)
	t4 := e.Tick(t)
	a := &applier{dst: e.dst.Pool, by: "go"}
	var finished batchLog
	var errs counter
	cfg := e.cfg(t)
	cfg.Consumer.Hooks.OnBatch = finished.add
	cfg.Consumer.Hooks.OnError = func(consumer.ErrorInfo) { errs.inc() }
	stop := e.start(t, cfg, a)
	e.waitDone(t, t4)
	require.NoError(t, stop())
	require.Equal(t, info.CurrentBatch, finished.ids()[0], "go finished python's open batch")
	require.NotContains(t, a.batchIDs(), info.CurrentBatch, "without applying it again")
	require.Zero(t, errs.get())

	fourth := e.Produce(t, 3, nil)
	t5 := e.Tick(t)
	fifth := e.Produce(t, 2, nil)
	t6 := e.Tick(t)
	killAfterSave(t, e, t5)
	require.Equal(t, t5, e.fileTick(t))
	require.Equal(t, t4, e.queueTick(), "go was killed before finish_batch")

	require.Zero(t, py.run(t, t6, 0))
	require.Equal(t, t6, e.fileTick(t))
	require.Equal(t, t6, e.queueTick())
	e.requireExactlyOnce(t, first, second, third, fourth, fifth)
	require.Equal(t, map[int64]string{t2: "python", t3: "python", t4: "go", t5: "go-killed", t6: "python"}, e.byWhom(t))
}
