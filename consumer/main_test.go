package consumer_test

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

var cluster *pgtest.Cluster

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(helperProcess()) // a consumer subprocess for TestKilledMidBatch
	}
	os.Exit(pgtest.Main(m, &cluster, pgtest.ExamplesDB("consumer_examples")))
}

// env is a test's own database with a queue and a registered consumer
// (pgtest.Env), plus the consumer-specific helpers below.
type env struct {
	*pgtest.Env
}

// setup gives a test its own database with a queue and a registered consumer.
func setup(t *testing.T) *env {
	t.Helper()
	return setupOn(t, cluster)
}

func setupOn(t *testing.T, c *pgtest.Cluster) *env {
	t.Helper()
	return &env{c.NewEnv(t)}
}

// cfg is a consumer config for tests: fast polls and backoff.
func (e *env) cfg(t *testing.T) consumer.Config {
	return consumer.Config{
		Queue:        e.Queue,
		Name:         e.Consumer,
		PollInterval: 20 * time.Millisecond,
		ErrorBackoff: consumer.Backoff{Initial: 10 * time.Millisecond, Max: 200 * time.Millisecond},
		Logger:       testLogger(t),
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// start runs a consumer until the returned stop is called (or the test
// ends); stop returns Run's result.
func (e *env) start(t *testing.T, cfg consumer.Config, h consumer.BatchHandler) (stop func() error) {
	t.Helper()
	return startOn(t, e.Ctx, e.Pool, cfg, h)
}

func startOn(t *testing.T, ctx context.Context, pool *pgxpool.Pool, cfg consumer.Config, h consumer.BatchHandler) func() error {
	t.Helper()
	c, err := consumer.New(pool, cfg, h)
	require.NoError(t, err)
	stop := pgtest.Background(t, ctx, c.Run)
	t.Cleanup(func() { require.NoError(t, stop()) })
	return stop
}

// seen is one delivered event.
type seen struct {
	batch int64
	id    int64
	retry int32
	data  string
	extra pgq.Text
}

// collector is a BatchHandler recording what it is given.
type collector struct {
	mu      sync.Mutex
	events  []seen
	batches []pgq.BatchInfo
	before  func(ctx context.Context, b *pgq.Batch) error // optional, runs first
	each    func(ev *pgq.Event)                           // optional, per event
}

func (c *collector) ProcessBatch(ctx context.Context, b *pgq.Batch) error {
	if c.before != nil {
		if err := c.before(ctx, b); err != nil {
			return err
		}
	}
	var got []seen
	for ev, err := range b.Events(ctx) {
		if err != nil {
			return err
		}
		if c.each != nil {
			c.each(ev)
		}
		got = append(got, seen{batch: b.ID(), id: ev.ID, retry: ev.Retry, data: ev.Data.String, extra: ev.Extra1})
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, got...)
	c.batches = append(c.batches, b.Info)
	return nil
}

func (c *collector) snapshot() ([]seen, []pgq.BatchInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.events), slices.Clone(c.batches)
}

func (c *collector) ids() []int64 {
	evs, _ := c.snapshot()
	out := make([]int64, len(evs))
	for i, e := range evs {
		out[i] = e.id
	}
	return out
}

// waitIDs waits until the collector has seen every id in want.
func (c *collector) waitIDs(t *testing.T, want []int64, timeout time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool {
		got := c.ids()
		for _, id := range want {
			if !slices.Contains(got, id) {
				return false
			}
		}
		return true
	}, timeout, 10*time.Millisecond, "events not delivered: want %v, got %v", want, c.ids())
}

// counter counts calls of a hook; wait blocks until it reaches n.
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

func (c *counter) waitAbove(t *testing.T, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return c.get() > n }, 30*time.Second, 5*time.Millisecond)
}

type pgqTx = pgx.Tx

// pgxBegin runs fn in a transaction on the test pool.
func pgxBegin(e *env, fn func(ctx context.Context, tx pgqTx) error) (struct{}, error) {
	return struct{}{}, pgx.BeginFunc(e.Ctx, e.Pool, func(tx pgx.Tx) error { return fn(e.Ctx, tx) })
}
