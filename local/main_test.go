package local_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/local"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

var cluster *pgtest.Cluster

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(helperProcess()) // a local consumer subprocess (crash_test.go)
	}
	os.Exit(pgtest.Main(m, &cluster, pgtest.ExamplesDB("local_examples")))
}

// env is a test's source database with queue "q" and consumer "c"
// registered (pgtest.Env), a destination database with table applied
// that handlers write each event to, and a tracking file in a directory of
// its own (not created).
type env struct {
	*pgtest.Env
	dst  *pgtest.DB
	file string
}

const sqlApplied = `create table applied (ev_id bigint not null, tick_id bigint not null, by_whom text not null)`

func setup(t *testing.T) *env {
	t.Helper()
	e := &env{Env: cluster.NewEnv(t), dst: cluster.NewPlainDB(t)}
	_, err := e.dst.Pool.Exec(e.Ctx, sqlApplied)
	require.NoError(t, err)
	e.file = filepath.Join(t.TempDir(), "job.tick")
	return e
}

// cfg is a local consumer config for tests: fast polls and backoff.
func (e *env) cfg(t *testing.T) local.Config {
	return local.Config{
		Consumer: consumer.Config{
			Queue:        e.Queue,
			Name:         e.Consumer,
			PollInterval: 20 * time.Millisecond,
			ErrorBackoff: consumer.Backoff{Initial: 10 * time.Millisecond, Max: 200 * time.Millisecond},
			Logger:       slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})),
		},
		TrackingFile: e.file,
	}
}

// start runs a local consumer until the returned stop is called (or the
// test ends); stop returns Run's result.
func (e *env) start(t *testing.T, cfg local.Config, h local.Handler) (stop func() error) {
	t.Helper()
	lc, err := local.New(e.Pool, cfg, h)
	require.NoError(t, err)
	return pgtest.Background(t, e.Ctx, lc.Run)
}

// writeTick writes the tracking file as Skytools does: the decimal tick,
// no newline.
func (e *env) writeTick(t *testing.T, tick int64) {
	t.Helper()
	require.NoError(t, os.WriteFile(e.file, []byte(strconv.FormatInt(tick, 10)), 0o644))
}

// fileTick reads the tracking file and checks its format byte for byte.
func (e *env) fileTick(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile(e.file)
	require.NoError(t, err)
	tick, err := strconv.ParseInt(string(b), 10, 64)
	require.NoError(t, err, "tracking file %q is the bare decimal tick", b)
	return tick
}

// waitQueueTick waits until the consumer's position on the queue is tick
// (not registered yet counts as elsewhere).
func (e *env) waitQueueTick(t *testing.T, tick int64) {
	t.Helper()
	require.Eventually(t, func() bool { return e.queueTick() == tick }, 30*time.Second, 5*time.Millisecond,
		"consumer did not reach tick %d (at %d)", tick, e.queueTick())
}

// waitDone waits until both the queue position and the tracking file are
// at tick.
func (e *env) waitDone(t *testing.T, tick int64) {
	t.Helper()
	want := strconv.FormatInt(tick, 10)
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(e.file)
		return err == nil && string(b) == want && e.queueTick() == tick
	}, 30*time.Second, 5*time.Millisecond, "consumer did not reach tick %d (at %d)", tick, e.queueTick())
}

// queueTick is the consumer's position on the queue; -1 when it is not
// registered.
func (e *env) queueTick() int64 {
	ci, err := pgq.GetConsumerInfo(e.Ctx, e.Pool, e.Queue, e.Consumer)
	if err != nil {
		return -1
	}
	return ci.LastTick
}

// consumeQueue moves consumer c through every ready batch without the
// local consumer (an application that consumed them elsewhere).
func (e *env) consumeQueue(t *testing.T) {
	t.Helper()
	for {
		info, err := pgq.NextBatch(e.Ctx, e.Pool, e.Queue, e.Consumer)
		require.NoError(t, err)
		if info == nil {
			return
		}
		ok, err := pgq.FinishBatch(e.Ctx, e.Pool, info.ID)
		require.NoError(t, err)
		require.True(t, ok)
	}
}

// applier is a Handler that inserts each event of a batch into the
// destination's applied table in one transaction, and records the
// batches it was given.
type applier struct {
	dst    *pgxpool.Pool
	by     string
	before func(ctx context.Context, b *pgq.Batch) error // optional, runs first

	mu      sync.Mutex
	batches []pgq.BatchInfo
}

func (a *applier) ProcessLocalBatch(ctx context.Context, b *pgq.Batch) error {
	if a.before != nil {
		if err := a.before(ctx, b); err != nil {
			return err
		}
	}
	err := pgx.BeginFunc(ctx, a.dst, func(tx pgx.Tx) error {
		for ev, err := range b.Events(ctx) {
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "insert into applied values ($1, $2, $3)", ev.ID, b.Info.TickID, a.by); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.batches = append(a.batches, b.Info)
	a.mu.Unlock()
	return nil
}

// batchIDs returns the ids of the batches the applier applied.
func (a *applier) batchIDs() []int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	var ids []int64
	for _, b := range a.batches {
		ids = append(ids, b.ID)
	}
	return ids
}

// applied returns the destination's event ids in order, duplicates kept.
func (e *env) applied(t *testing.T) []int64 {
	t.Helper()
	rows, err := e.dst.Pool.Query(e.Ctx, "select ev_id from applied order by ev_id")
	require.NoError(t, err)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(t, err)
	return ids
}

// requireExactlyOnce checks that the destination holds each of want once
// and nothing else.
func (e *env) requireExactlyOnce(t *testing.T, want ...[]int64) {
	t.Helper()
	all := slices.Concat(want...)
	slices.Sort(all)
	require.Equal(t, all, e.applied(t), "every event applied exactly once")
}

// counter counts calls of a hook.
type counter struct {
	mu sync.Mutex
	n  int
}

func (c *counter) inc() { c.mu.Lock(); c.n++; c.mu.Unlock() }
func (c *counter) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// batchLog records the batches the queue-side consumer finished.
type batchLog struct {
	mu    sync.Mutex
	stats []consumer.BatchStats
}

func (l *batchLog) add(s consumer.BatchStats) {
	l.mu.Lock()
	l.stats = append(l.stats, s)
	l.mu.Unlock()
}
func (l *batchLog) ids() []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ids []int64
	for _, s := range l.stats {
		ids = append(ids, s.BatchID)
	}
	return ids
}
