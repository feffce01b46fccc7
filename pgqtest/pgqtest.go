// Package pgqtest helps a program's tests run its PgQ handlers against a
// real queue in a real PostgreSQL, one batch at a time, with no consumer
// loop, ticker or sleeps in the test.
//
// The test brings the database: a *pgxpool.Pool on a PostgreSQL with the
// pgq extension, from its own setup. NewQueue creates a queue with a unique
// name in it, registers a consumer and drops both when the test ends, so
// tests may share a database and run in parallel:
//
//	q := pgqtest.NewQueue(t, pool)
//	q.Insert(t, pgq.NewEvent("order", "42"))
//	q.Tick(t)
//	res := q.RunBatch(t, myHandler)
//	require.NoError(t, res.Err)
//	require.Len(t, res.Events, 1)
//
// RunBatch runs the handler through a consumer.Consumer, exactly as a
// running consumer would (events streamed in a transaction, done by
// default, Event.TagRetry honoured, retries and finish_batch committed
// together; an error or panic leaves the batch open), and reports what
// happened. RunRemoteBatch does the same through a remote.RemoteConsumer
// into a destination database.
//
// Every helper fails the test (t.Fatalf, naming the queue) on a database
// error. The handler runs on the calling goroutine, so it may itself call
// t.Fatal or testify's require.
//
// Ticks come from Tick: a ticker serving the same database (pgqd, the
// ticker package) may tick the queue as well, splitting inserted events
// across batches. Point the tests at a database no ticker serves.
package pgqtest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/remote"
)

// ConsumerName is the consumer NewQueue registers on its queue.
const ConsumerName = "pgqtest"

// cleanupTimeout bounds the queue drop at the end of a test, which runs
// after the test's context is cancelled.
const cleanupTimeout = 30 * time.Second

// Queue is a queue of a test's own, with a registered consumer. Create it
// with NewQueue.
type Queue struct {
	// Name is the queue's name: unique, derived from the test's name.
	// Hand it to the code under test that produces events.
	Name string
	// Consumer is the consumer registered on the queue (ConsumerName).
	Consumer string

	pool *pgxpool.Pool
}

// NewQueue creates a queue with a unique name in pool's database (which
// needs the pgq extension), registers Consumer on it, and drops the queue
// with its consumer and retry events when the test ends (t.Cleanup). The
// pool must stay open until then: close it with t.Cleanup registered
// before NewQueue, not with defer, which runs first.
func NewQueue(t testing.TB, pool *pgxpool.Pool) *Queue {
	t.Helper()
	if pool == nil {
		t.Fatalf("pgqtest: NewQueue: pool is nil")
	}
	q := &Queue{Name: queueName(t), Consumer: ConsumerName, pool: pool}
	ctx := ctxOf(t)
	if _, err := pgq.CreateQueue(ctx, pool, q.Name); err != nil {
		t.Fatalf("pgqtest: create queue %s: %v", q.Name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		// A queue the test dropped itself is gone already.
		if err := pgq.DropQueue(ctx, pool, q.Name, true); err != nil && !errors.Is(err, pgq.ErrQueueNotFound) {
			t.Errorf("pgqtest: drop queue %s: %v (the pool must stay open until the test's cleanups run)", q.Name, err)
		}
	})
	if _, err := pgq.RegisterConsumer(ctx, pool, q.Name, q.Consumer); err != nil {
		t.Fatalf("pgqtest: register consumer %s on queue %s: %v", q.Consumer, q.Name, err)
	}
	return q
}

// ctxOf is the test's context: it ends when the test does. A testing.T
// made outside the test runner (&testing.T{} in an Example) has none.
func ctxOf(t testing.TB) context.Context {
	if ctx := t.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}

// queueName is "pgqtest_<test name>_<random>": readable in pgq's tables,
// unique across tests, runs and test processes sharing a database.
func queueName(t testing.TB) string {
	var b strings.Builder
	b.WriteString("pgqtest_")
	for _, r := range t.Name() {
		if b.Len() >= 60 {
			break
		}
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	b.WriteByte('_')
	b.WriteString(strings.ToLower(rand.Text()[:10]))
	return b.String()
}

// Insert inserts evs into the queue in one transaction and returns their
// ids. Like every event, they reach a batch only after a later tick
// (Tick).
func (q *Queue) Insert(t testing.TB, evs ...pgq.EventData) []int64 {
	t.Helper()
	ids := make([]int64, 0, len(evs))
	ctx := ctxOf(t)
	err := pgx.BeginFunc(ctx, q.pool, func(tx pgx.Tx) error {
		for _, ev := range evs {
			id, err := pgq.InsertEvent(ctx, tx, q.Name, ev)
			if err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("pgqtest: insert into queue %s: %v", q.Name, err)
	}
	return ids
}

// Tick makes a tick on the queue now (pgq.Tick: force_tick and ticker in
// separate transactions), so that the events committed before it form the
// consumer's next batch; it returns the tick id.
func (q *Queue) Tick(t testing.TB) int64 {
	t.Helper()
	id, err := pgq.Tick(ctxOf(t), q.pool, q.Name)
	if err != nil {
		t.Fatalf("pgqtest: tick queue %s: %v", q.Name, err)
	}
	return id
}

// Redeliver makes the events the consumer sent to the retry queue
// (Event.TagRetry) due now, moves them back into the queue (as the
// ticker's retry maintenance does once they are due) and ticks, so that
// the next RunBatch gets them again, with Event.Retry incremented. It
// returns how many events it brought back.
func (q *Queue) Redeliver(t testing.TB) int {
	t.Helper()
	ctx := ctxOf(t)
	tag, err := q.pool.Exec(ctx, `update pgq.retry_queue r set ev_retry_after = now()
		from pgq.queue qq where qq.queue_name = $1 and r.ev_queue = qq.queue_id`, q.Name)
	if err != nil {
		t.Fatalf("pgqtest: redeliver retries of queue %s: %v", q.Name, err)
	}
	if _, err := pgq.MaintRetryEvents(ctx, q.pool); err != nil {
		t.Fatalf("pgqtest: redeliver retries of queue %s: %v", q.Name, err)
	}
	q.Tick(t)
	return int(tag.RowsAffected())
}

// Result is what RunBatch or RunRemoteBatch saw of one batch.
type Result struct {
	// Batch is the batch the handler was given.
	Batch pgq.BatchInfo
	// Events are the batch's events in ev_id order, as the handler could
	// read them (read beside it, in the batch's transaction). Nil when the
	// handler was not called: RunRemoteBatch skips a batch its
	// destination recorded as applied.
	Events []*pgq.Event
	// Seen is how many events the handler read in its last full pass over
	// the batch (pgq.Batch.Seen); 0 if it never read to the end.
	Seen int
	// Retried are the ids of the events the handler tagged for retry, in
	// tagging order. When Err is nil they were sent to the retry queue
	// (Redeliver brings them back); otherwise the tags were dropped with
	// the batch.
	Retried []int64
	// Err is the handler's error, or its panic as consumer.Consumer
	// reports it. The batch was then left open (nothing committed): the
	// next RunBatch gets it again. Nil means the batch was finished.
	Err error
	// Panicked reports that the handler panicked (Err holds the value and
	// the stack).
	Panicked bool
}

// IDs returns the ids of Events.
func (r Result) IDs() []int64 {
	ids := make([]int64, len(r.Events))
	for i, ev := range r.Events {
		ids[i] = ev.ID
	}
	return ids
}

// RunBatch opens the consumer's next batch and runs h on it through a
// consumer.Consumer, exactly as a running consumer does: the events are
// read in a transaction, every event is done unless h tags it with
// Event.TagRetry, and when h returns nil the retries and finish_batch
// commit together. When h fails or panics the batch stays open and
// Result.Err says why. The test fails if no batch is ready (insert, then
// Tick) or on a database error.
func (q *Queue) RunBatch(t testing.TB, h consumer.BatchHandler) Result {
	t.Helper()
	if h == nil {
		t.Fatalf("pgqtest: RunBatch on queue %s: handler is nil", q.Name)
	}
	r := &run{q: q}
	c, err := consumer.New(q.pool, r.config(), consumer.BatchHandlerFunc(func(ctx context.Context, b *pgq.Batch) error {
		return r.handle(ctx, b, func() error { return h.ProcessBatch(ctx, b) })
	}))
	if err != nil {
		t.Fatalf("pgqtest: RunBatch on queue %s: %v", q.Name, err)
	}
	return r.do(t, c.Run)
}

// RunRemoteBatch is RunBatch for a remote.Handler: it runs h through a
// remote.RemoteConsumer that applies the batch to dst exactly once (the
// handler's writes through its transaction commit together with the
// record of the batch on dst). It installs the tracking schema on dst
// (remote.Install). The flow is tracked on dst under Consumer and the
// queue's name as subconsumer, so queues of several tests never share a
// position there.
func (q *Queue) RunRemoteBatch(t testing.TB, dst *pgxpool.Pool, h remote.Handler) Result {
	t.Helper()
	if dst == nil || h == nil {
		t.Fatalf("pgqtest: RunRemoteBatch on queue %s: destination pool and handler are required", q.Name)
	}
	if err := remote.Install(ctxOf(t), dst); err != nil {
		t.Fatalf("pgqtest: RunRemoteBatch on queue %s: %v", q.Name, err)
	}
	r := &run{q: q}
	rc, err := remote.New(q.pool, dst, remote.Config{Consumer: r.config(), SubConsumer: q.Name, SkipInstall: true},
		remote.HandlerFunc(func(ctx context.Context, b *pgq.Batch, tx pgx.Tx) error {
			return r.handle(ctx, b, func() error { return h.ProcessRemoteBatch(ctx, b, tx) })
		}))
	if err != nil {
		t.Fatalf("pgqtest: RunRemoteBatch on queue %s: %v", q.Name, err)
	}
	return r.do(t, rc.Run)
}

// errNotFinished stops a consumer that would process a second batch:
// the first one was not finished.
var errNotFinished = errors.New("pgqtest: batch not finished")

// run is one RunBatch: a consumer stopped by its hooks after one batch.
// The consumer calls the handler and the hooks on the goroutine running
// Run, the test's, so run needs no locking.
type run struct {
	q       *Queue
	cancel  context.CancelFunc
	calls   int
	res     Result
	hErr    error                // what the handler returned
	readErr error                // reading the events beside the handler
	stats   *consumer.BatchStats // the batch finished
	failed  *consumer.ErrorInfo  // the attempt failed
	idle    bool                 // no batch was ready
}

func (r *run) config() consumer.Config {
	cfg := consumer.Config{
		Queue:         r.q.Name,
		Name:          r.q.Consumer,
		DisableListen: true,
		Logger:        slog.New(slog.DiscardHandler),
	}
	cfg.Hooks.OnBatch = func(st consumer.BatchStats) {
		r.stats = &st
		r.cancel()
	}
	cfg.Hooks.OnError = func(info consumer.ErrorInfo) {
		r.failed = &info
		r.cancel()
	}
	cfg.Hooks.OnIdle = func() {
		r.idle = true
		r.cancel()
	}
	return cfg
}

// handle runs one call of the handler (call) on batch b, recording what
// the Result reports.
func (r *run) handle(ctx context.Context, b *pgq.Batch, call func() error) error {
	r.calls++
	if r.calls > 1 {
		return errNotFinished
	}
	r.res.Batch = b.Info
	evs, err := pgq.GetBatchEvents(ctx, b.DB(), b.ID())
	if err != nil {
		r.readErr = err
		return err
	}
	r.res.Events = evs
	r.hErr = call()
	r.res.Seen = b.Seen()
	for id := range b.RetryTags() {
		r.res.Retried = append(r.res.Retried, id)
	}
	return r.hErr
}

// do runs the consumer until its hooks stop it and turns what happened
// into a Result, or fails the test.
func (r *run) do(t testing.TB, runFn func(context.Context) error) Result {
	t.Helper()
	ctx, cancel := context.WithCancel(ctxOf(t))
	defer cancel()
	r.cancel = cancel
	err := runFn(ctx)
	name := r.q.Name
	switch {
	case r.readErr != nil:
		t.Fatalf("pgqtest: queue %s: read batch %d: %v", name, r.res.Batch.ID, r.readErr)
	case r.calls > 1 || (r.calls == 1 && r.hErr == nil && r.stats == nil && r.failed == nil && err == nil):
		t.Fatalf("pgqtest: queue %s: batch %d was not finished: PgQ no longer knew it (consumer %s repositioned or unregistered?)",
			name, r.res.Batch.ID, r.q.Consumer)
	case r.calls == 1 && r.hErr != nil:
		// The handler failed: an error (possibly marked consumer.Fatal,
		// which ends Run with it) or a panic is reported, not fatal.
		r.res.Err = r.hErr
	case r.failed != nil && r.failed.Panicked:
		r.res.Err, r.res.Panicked = r.failed.Err, true
	case err != nil:
		t.Fatalf("pgqtest: queue %s: consumer %s: %v", name, r.q.Consumer, err)
	case r.failed != nil:
		t.Fatalf("pgqtest: queue %s: consumer %s: %v", name, r.q.Consumer, r.failed.Err)
	case r.stats != nil:
		if r.calls == 0 { // a remote batch the destination had applied: skipped
			r.res.Batch = pgq.BatchInfo{ID: r.stats.BatchID, TickID: r.stats.TickID, PrevTickID: r.stats.PrevTickID}
		}
	case r.idle:
		t.Fatalf("pgqtest: queue %s: no batch ready for consumer %s (insert events, then Tick)", name, r.q.Consumer)
	default:
		t.Fatalf("pgqtest: queue %s: consumer %s stopped without a batch", name, r.q.Consumer)
	}
	return r.res
}

// String describes the result for test failure messages.
func (r Result) String() string {
	s := fmt.Sprintf("batch %d: %d events, %d seen, %d retried", r.Batch.ID, len(r.Events), r.Seen, len(r.Retried))
	if r.Err != nil {
		s += ", error: " + r.Err.Error()
	}
	return s
}
