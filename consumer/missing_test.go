package consumer_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

// logBuf collects log output safely from several goroutines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func runUntilDone(t *testing.T, ctx context.Context, c *consumer.Consumer) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	return done
}

func waitRun(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return within 60s")
		return nil
	}
}

// TestMissingQueueAndNotRegistered: a consumer on a missing queue is told
// the queue is missing (not "not registered"), at start and when the queue
// is dropped under it; an unregistered consumer is told so. Both end Run
// with an error naming queue and consumer, logged once at error level.
func TestMissingQueueAndNotRegistered(t *testing.T) {
	t.Parallel()
	e := setup(t)
	newConsumer := func(queue, name string, register bool) (*consumer.Consumer, *logBuf) {
		cfg := e.cfg(t)
		cfg.Queue, cfg.Name, cfg.Register = queue, name, register
		logs := &logBuf{}
		cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
		c, err := consumer.New(e.Pool, cfg, &collector{})
		require.NoError(t, err)
		return c, logs
	}

	t.Run("queue missing at start", func(t *testing.T) {
		for _, register := range []bool{false, true} {
			c, logs := newConsumer("no_such_queue", "c", register)
			err := c.Run(e.Ctx)
			require.ErrorIs(t, err, pgq.ErrQueueNotFound, "register=%v", register)
			require.NotErrorIs(t, err, pgq.ErrNotRegistered)
			require.ErrorContains(t, err, "no_such_queue/c")
			require.Contains(t, logs.String(), "queue does not exist")
			require.Contains(t, logs.String(), "queue=no_such_queue consumer=c")
		}
	})

	t.Run("not registered", func(t *testing.T) {
		c, logs := newConsumer(e.Queue, "nobody", false)
		err := c.Run(e.Ctx)
		require.ErrorIs(t, err, pgq.ErrNotRegistered)
		require.NotErrorIs(t, err, pgq.ErrQueueNotFound)
		require.ErrorContains(t, err, "q/nobody")
		require.Contains(t, logs.String(), "consumer is not registered")
	})

	t.Run("unregistered while running", func(t *testing.T) {
		// Register on start does not re-register later: that would
		// silently skip the events between the two registrations.
		c, logs := newConsumer(e.Queue, "later_gone", true)
		done := runUntilDone(t, e.Ctx, c)
		require.Eventually(t, func() bool { _, err := c.Info(e.Ctx); return err == nil }, 30*time.Second, 10*time.Millisecond)
		ok, err := c.Unregister(e.Ctx)
		require.NoError(t, err)
		require.True(t, ok)
		err = waitRun(t, done)
		require.ErrorIs(t, err, pgq.ErrNotRegistered)
		require.Contains(t, logs.String(), "consumer is not registered")
		_, err = c.Info(e.Ctx)
		require.ErrorIs(t, err, pgq.ErrNotRegistered, "not registered again")
	})

	t.Run("queue dropped while running", func(t *testing.T) {
		db := cluster.NewDB(t)
		_, err := pgq.CreateQueue(e.Ctx, db.Pool, "doomed")
		require.NoError(t, err)
		_, err = pgq.Tick(e.Ctx, db.Pool, "doomed")
		require.NoError(t, err)
		cfg := e.cfg(t)
		cfg.Queue, cfg.Name, cfg.Register = "doomed", "c", true
		logs := &logBuf{}
		cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
		c, err := consumer.New(db.Pool, cfg, &collector{})
		require.NoError(t, err)
		done := runUntilDone(t, e.Ctx, c)
		require.Eventually(t, func() bool { _, err := c.Info(e.Ctx); return err == nil }, 30*time.Second, 10*time.Millisecond)
		require.NoError(t, pgq.DropQueue(e.Ctx, db.Pool, "doomed", true))
		err = waitRun(t, done)
		require.ErrorIs(t, err, pgq.ErrQueueNotFound)
		require.NotErrorIs(t, err, pgq.ErrNotRegistered)
		require.ErrorContains(t, err, "doomed/c")
		require.True(t, strings.Contains(logs.String(), "queue does not exist"), logs.String())
		_, err = c.Info(e.Ctx)
		require.ErrorIs(t, err, pgq.ErrQueueNotFound)
	})
}
