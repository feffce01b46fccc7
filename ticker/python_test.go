package ticker_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/ticker"
	"github.com/stretchr/testify/require"
)

// TestPythonConsumer runs a Skytools python-pgq Consumer (system python3
// with python3-pgq and python3-psycopg2) with only this package's ticker
// running: it receives every event, in order.
func TestPythonConsumer(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	db := newDB(t)
	createQueue(t, ctx, db.Pool, "pyq", pgq.QueueConfig{TickerMaxLag: pgq.Ptr(100 * time.Millisecond)})
	r := start(t, fast(db.DSN))
	r.waitState(t, db.Name, ticker.StateTicking)

	dir := t.TempDir()
	out := filepath.Join(dir, "events.txt")
	conf := filepath.Join(dir, "py_consumer.ini")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf(`[py_consumer]
job_name = py_consumer_test
src_db = %s
queue_name = pyq
out_file = %s
logfile = %s
pidfile = %s
loop_delay = 0.05
`, db.DSN, out, filepath.Join(dir, "py.log"), filepath.Join(dir, "py.pid"))), 0o644))
	script, err := filepath.Abs("testdata/py_consumer.py")
	require.NoError(t, err)
	python := func(args ...string) *exec.Cmd {
		cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		t.Cleanup(cancel)
		cmd := exec.CommandContext(cctx, "/usr/bin/python3", append([]string{script, conf}, args...)...)
		cmd.Dir = dir
		return cmd
	}
	o, err := python("--register").CombinedOutput()
	require.NoError(t, err, "register: %s", o)

	var want []string
	for i := range 10 {
		want = append(want, "ev"+strconv.Itoa(i))
		insert(t, ctx, db.Pool, "pyq", want[i])
	}
	want = append(want, "stop")
	insert(t, ctx, db.Pool, "pyq", "stop")

	t0 := time.Now()
	o, err = python().CombinedOutput() // returns after the "stop" event
	require.NoError(t, err, "consumer: %s", o)
	t.Logf("python consumer got its events and stopped in %v", time.Since(t0))
	got, err := os.ReadFile(out)
	require.NoError(t, err)
	require.Equal(t, want, strings.Fields(string(got)))
}
