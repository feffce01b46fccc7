package job_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

var cluster *pgtest.Cluster

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, &cluster)) }

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// python runs the reference Skytools job of kind on ini (job/testdata/
// skytools_jobs.py, with the system python3-pgq and python3-skytools).
func python(t *testing.T, ctx context.Context, kind, ini string, args ...string) string {
	t.Helper()
	script, err := filepath.Abs("testdata/skytools_jobs.py")
	require.NoError(t, err)
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, "/usr/bin/python3", append([]string{"-I", script, kind, ini}, args...)...)
	cmd.Dir = filepath.Dir(ini)
	out, err := cmd.CombinedOutput()
	if err != nil && strings.Contains(string(out), "ModuleNotFoundError") {
		t.Fatalf("python3-pgq / python3-skytools missing: run scripts/ensure-deps (%s)", out)
	}
	require.NoError(t, err, "python %s %v: %s", kind, args, out)
	return string(out)
}

// lastTick is consumer's position on queue (0: not registered).
func lastTick(t *testing.T, ctx context.Context, pool *pgxpool.Pool, queue, consumer string) int64 {
	t.Helper()
	var tick *int64
	err := pool.QueryRow(ctx, "select last_tick from pgq.get_consumer_info($1, $2)", queue, consumer).Scan(&tick)
	if err != nil && strings.Contains(err.Error(), "no rows") {
		return 0
	}
	require.NoError(t, err)
	if tick == nil {
		return 0
	}
	return *tick
}

// pythonUntil runs the reference job one batch at a time until its
// consumer has consumed up to tick.
func pythonUntil(t *testing.T, ctx context.Context, kind, ini string, src *pgxpool.Pool, queue, consumer string, tick int64) {
	t.Helper()
	for range 20 {
		if lastTick(t, ctx, src, queue, consumer) >= tick {
			return
		}
		python(t, ctx, kind, ini, "--set", "loop_delay=-1")
	}
	require.Fail(t, "the python job did not reach the tick", "%s at %d, want %d", consumer,
		lastTick(t, ctx, src, queue, consumer), tick)
}

// drainQueue reads every event of queue on pool as consumer (ticking it
// first), finishing the batches.
func drainQueue(t *testing.T, ctx context.Context, pool *pgxpool.Pool, queue, consumer string) []*pgq.Event {
	t.Helper()
	_, err := pgq.Tick(ctx, pool, queue)
	require.NoError(t, err)
	var out []*pgq.Event
	for {
		info, err := pgq.NextBatch(ctx, pool, queue, consumer)
		require.NoError(t, err)
		if info == nil {
			return out
		}
		evs, err := pgq.NewBatch(pool, queue, consumer, *info, pgq.ReadOptions{}).All(ctx)
		require.NoError(t, err)
		out = append(out, evs...)
		_, err = pgq.FinishBatch(ctx, pool, info.ID)
		require.NoError(t, err)
	}
}

func writeFile(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, []byte(text), 0o644))
	return p
}
