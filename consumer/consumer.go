package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/pgq-go/pgq/internal/backoff"
	"github.com/pgq-go/pgq/internal/logging"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/pgq"
)

// ErrRunning is returned by Run when the Consumer is already running.
var ErrRunning = errors.New("consumer: already running")

// finishTimeout bounds finish_batch + commit, which run even after the
// Run context is cancelled (the handler has already done its work).
const finishTimeout = 30 * time.Second

// Consumer reads one queue as one registered consumer and hands each batch
// to a BatchHandler. Create it with New and start it with Run.
type Consumer struct {
	pool    *pgxpool.Pool
	cfg     Config
	handler BatchHandler
	log     *slog.Logger
	running atomic.Bool
}

// New returns a Consumer of cfg.Queue as cfg.Name, calling h for each
// batch. It checks cfg (errors name the offending field) but does not
// touch the database.
func New(pool *pgxpool.Pool, cfg Config, h BatchHandler) (*Consumer, error) {
	var errs []error
	if pool == nil {
		errs = append(errs, errors.New("consumer: pool is nil"))
	}
	if h == nil {
		errs = append(errs, errors.New("consumer: handler is nil"))
	}
	if err := cfg.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Consumer{
		pool:    pool,
		cfg:     cfg,
		handler: h,
		log:     cfg.Logger.With("queue", cfg.Queue, "consumer", cfg.Name),
	}, nil
}

// Config returns the consumer's configuration with defaults filled in.
func (c *Consumer) Config() Config { return c.cfg }

// Run consumes batches until ctx is cancelled (then it returns nil) or a
// fatal error occurs, logged at error level and returned: the consumer is
// not registered (pgq.ErrNotRegistered; at start with Config.Register off,
// or unregistered while running: it is never re-registered behind the
// operator's back), the queue is missing (pgq.ErrQueueNotFound, at start
// or dropped while running, also with Config.Register), or the pgq
// extension is missing (pgq.ErrNoExtension). Handler errors,
// panics and database errors are logged and retried after a backoff; they
// never end Run. A batch being processed when ctx is cancelled is finished
// if the handler returns nil, and left untouched (delivered again on the
// next run) otherwise. Run returns only after every goroutine it started
// has ended; the LISTEN connection it shares with other consumers of its
// pool (and its goroutine) closes with the last of them.
func (c *Consumer) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer c.running.Store(false)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	if c.cfg.Register {
		if err := c.registerOnStart(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.log.Error(stopMessage(err), logging.KeyErr, err)
			return err
		}
	}

	wake := make(chan struct{}, 1)
	var bell *bellState
	if !c.cfg.DisableListen {
		// Consumers on one pool share one LISTEN connection (listen.go).
		var onTick func(string)
		if c.cfg.Bell != nil {
			bell = newBellState(c.cfg.Bell, c.cfg.PollInterval)
			onTick = bell.tick
		}
		defer subscribeRing(c.pool, c.cfg.ListenConfig, pgq.NotifyChannel(c.cfg.Queue), wake, onTick, c.cfg.Logger, c.cfg.ErrorBackoff)()
		if bell != nil {
			defer subscribeRing(c.pool, c.cfg.ListenConfig, c.cfg.Bell.Channel, wake, bell.ring, c.cfg.Logger, c.cfg.ErrorBackoff)()
		}
	}

	l := loop{c: c, idleStart: time.Now(), stats: newStatsLog(c.cfg.StatsPeriod, time.Now())}
	defer func() { l.carry.drop() }()
	for {
		if ctx.Err() != nil {
			return nil
		}
		if now := time.Now(); l.stats.due(now) {
			l.stats.flush(c, now)
		}
		// A notification already pending is covered by the look we are
		// about to take; one arriving from now on wakes the next wait.
		select {
		case <-wake:
		default:
		}
		var err error
		if bell != nil {
			// Silent bell: ticks wake the loop but cost nothing.
			if ok, wait := bell.wanted(time.Now()); !ok {
				backoff.Wait(ctx, wait, wake)
				continue
			}
			if bell.taking(time.Now()) {
				var h int64
				if h, err = c.horizon(ctx); err == nil {
					bell.setHorizon(h)
				}
			}
		}
		got := false
		if err == nil {
			got, err = l.step(ctx)
		}
		if err == nil && bell != nil && got && l.finished != nil && bell.isWaiting() {
			// The end tick of the batch just finished may cover what the
			// bell waits for: no empty look is needed to find that out.
			bell.settle(&l.finished.Snapshot, false)
		}
		if err == nil && bell != nil && !got {
			if bell.isWaiting() {
				var s *pgq.Snapshot
				if s, err = c.lastSnapshot(ctx); err == nil {
					bell.settle(s, true)
				}
			} else {
				bell.refreshDue()
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if isFatal(err) {
				c.log.Error(stopMessage(err), logging.KeyErr, err)
				return err
			}
			if !backoff.Sleep(ctx, l.fail(err)) {
				return nil
			}
			continue
		}
		if got {
			continue
		}
		if h := c.cfg.Hooks.OnIdle; h != nil {
			h()
		}
		backoff.Wait(ctx, c.cfg.PollInterval, wake) // the loop's top sees a cancelled ctx
	}
}

// isFatal reports errors that retrying cannot fix.
func isFatal(err error) bool {
	if IsFatal(err) {
		return true
	}
	var se *stepError
	if !errors.As(err, &se) || !se.fatalable {
		return false
	}
	for _, target := range []error{pgq.ErrNotRegistered, pgq.ErrQueueNotFound,
		pgq.ErrNoExtension, pgq.ErrInvalidName, pgq.ErrInvalidArgument} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// stopMessage is the log message for an error that ends Run.
func stopMessage(err error) string {
	switch {
	case errors.Is(err, pgq.ErrQueueNotFound):
		return "consumer stopped: the queue does not exist"
	case errors.Is(err, pgq.ErrNotRegistered):
		return "consumer stopped: the consumer is not registered on the queue (register it, or set Config.Register)"
	case errors.Is(err, pgq.ErrNoExtension):
		return "consumer stopped: the pgq extension is missing"
	}
	return "consumer stopped"
}

// stepError carries what the loop needs to log and count a failed step.
type stepError struct {
	batchID   int64
	panicked  bool
	fatalable bool // from next_batch: may be a fatal condition
	err       error
}

func (e *stepError) Error() string { return e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

// loop is the state of one Run.
type loop struct {
	c         *Consumer
	idleStart time.Time
	failures  int            // consecutive failed steps
	failBatch int64          // batch of the last failure
	attempts  int            // failed attempts of failBatch
	finished  *pgq.BatchInfo // the batch the last step finished, if it did
	stats     *statsLog
	next      *pgq.BatchInfo // the batch opened with the last one's commit, for the next step
	carry     *carried       // the connection next was opened on, its events sent ahead
	hint      pgq.ReadHint   // from reading the last batch finished
}

// carried is a connection kept from one step to the next, with a read of
// the next batch's events sent ahead on it (in the round trip that
// finished the last batch and opened the next).
type carried struct {
	conn     *pgxpool.Conn
	prefetch *pgq.Prefetch
}

// drop frees a carried connection the loop will not use.
func (c *carried) drop() {
	if c == nil {
		return
	}
	c.prefetch.Close()
	c.conn.Release()
}

// fail logs a failed step and returns the pause before the next one.
func (l *loop) fail(err error) time.Duration {
	l.failures++
	var se *stepError
	if !errors.As(err, &se) {
		se = &stepError{err: err}
	}
	if se.batchID != 0 {
		if se.batchID != l.failBatch {
			l.failBatch, l.attempts = se.batchID, 0
		}
		l.attempts++
	}
	d := l.c.cfg.ErrorBackoff.Delay(l.failures)
	args := []any{logging.KeyErr, se.err, "attempt", l.failures, logging.KeyBackoff, d}
	if se.batchID != 0 {
		args = append(args, "batch_id", se.batchID)
	}
	msg := "consumer step failed; retrying"
	switch {
	case se.panicked:
		msg = "batch handler panicked; batch will be processed again"
	case se.batchID != 0:
		msg = "batch failed; it will be processed again"
	}
	l.c.log.Error(msg, args...)
	if h := l.c.cfg.Hooks.OnError; h != nil {
		h(ErrorInfo{Queue: l.c.cfg.Queue, Consumer: l.c.cfg.Name, BatchID: se.batchID,
			Attempt: l.failures, Err: se.err, Backoff: d, Panicked: se.panicked})
	}
	return d
}

// step opens the next batch and processes it. It reports whether a batch
// was there.
func (l *loop) step(ctx context.Context) (bool, error) {
	c := l.c
	l.finished = nil
	start := time.Now()
	// next_batch_custom runs in its own autocommit statement: it is
	// committed before processing, so a failure later gets the same batch
	// (same id) back instead of a new id for the same events.
	info, carry := l.next, l.carry
	l.next, l.carry = nil, nil
	if info == nil {
		var err error
		if info, err = pgq.NextBatchCustom(ctx, c.pool, c.cfg.Queue, c.cfg.Name, c.batchOptions()); err != nil {
			return false, &stepError{err: err, fatalable: true}
		}
	}
	if info == nil {
		return false, nil
	}
	lag := time.Since(info.TickTime) // after next_batch returns: never less than the server saw (KeepLag)
	b, finished, next, err := c.process(ctx, info, carry, l.hint)
	if err != nil {
		return true, err
	}
	if h := b.ReadHint(); !h.IsZero() {
		l.hint = h
	}
	l.next, l.carry = next.info, next.carry
	l.failures = 0
	if !finished {
		return true, nil
	}
	end := time.Now()
	attempts := 1
	if l.failBatch == info.ID {
		attempts += l.attempts
	}
	l.failBatch, l.attempts = 0, 0
	l.finished = info
	st := BatchStats{
		Queue: c.cfg.Queue, Consumer: c.cfg.Name,
		BatchID: info.ID, TickID: info.TickID, PrevTickID: info.PrevTickID,
		Events: b.Seen(), Retries: b.RetryCount(), Attempts: attempts,
		Duration: end.Sub(start), Lag: lag, Idle: start.Sub(l.idleStart),
	}
	if st.Events > 0 {
		l.idleStart = end
	}
	c.log.Debug("batch finished", "batch_id", st.BatchID, "events", st.Events,
		"retries", st.Retries, "duration", st.Duration, "lag", st.Lag)
	l.stats.batch(st, end)
	if h := c.cfg.Hooks.OnBatch; h != nil {
		h(st)
	}
	return true, nil
}

// nextBatch is what a finished batch's round trip opened: the next batch
// (nil if there is none or the statement failed: the next step then looks
// itself) and, if its events were sent ahead, the connection they come on.
type nextBatch struct {
	info  *pgq.BatchInfo
	carry *carried
}

// process runs one attempt of a batch in a transaction: the handler
// (reading the events), then retries, finish_batch and the commit in one
// round trip.
// finished is false when PgQ no longer knew the batch (the consumer was
// repositioned); the transaction then rolls back. Unless a Bell decides
// when to look, the same round trip opens the next batch after the commit,
// in a transaction of its own (as NextBatch does: a failure there leaves
// this batch finished), and sends the read of its events
// (pgq.Batch.QueuePrefetch): the next step's handler reads them on the same
// connection, with no round trip of its own. carry, if not nil, is that
// connection for info, which process then owns; hint is what reading the
// last batch learned.
func (c *Consumer) process(ctx context.Context, info *pgq.BatchInfo, carry *carried, hint pgq.ReadHint) (b *pgq.Batch, finished bool, next nextBatch, err error) {
	fail := func(err error, panicked bool) (*pgq.Batch, bool, nextBatch, error) {
		return nil, false, nextBatch{}, &stepError{batchID: info.ID, err: err, panicked: panicked}
	}
	// The connection is the consumer's own for the batch: its transaction
	// begins with its first statement (lazyTx), and the commit is sent in
	// a pipeline with the finish, which a pgx.Tx cannot do; the connection
	// goes back to the pool idle, or on to the next step with its events
	// coming.
	var conn *pgxpool.Conn
	var prefetch *pgq.Prefetch
	if carry != nil {
		conn, prefetch = carry.conn, carry.prefetch
	} else if conn, err = c.pool.Acquire(ctx); err != nil {
		return fail(fmt.Errorf("consumer: batch %d: %w", info.ID, err), false)
	}
	tx := &lazyTx{conn: conn, pending: prefetch}
	handedOn := false
	committed := false
	defer func() {
		if handedOn {
			return
		}
		prefetch.Close() // whatever the handler left unread
		if !committed && conn.Conn().PgConn().TxStatus() != 'I' {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
			_ = tx.Rollback(rctx)
			cancel()
		}
		conn.Release()
	}()

	b = pgq.NewBatch(tx, c.cfg.Queue, c.cfg.Name, *info, pgq.ReadOptions{
		FetchSize: c.cfg.LazyFetch, Filter: c.cfg.Filter, Prefetch: prefetch, Hint: hint,
	})
	if err, panicked := c.callHandler(ctx, b); err != nil {
		return fail(err, panicked)
	}

	// The handler succeeded (a remote handler has committed its
	// destination): finish even if ctx was cancelled meanwhile. The
	// pipeline's context outlives this call when the next batch's events
	// are sent ahead (pgx watches it until they are read): finishTimeout
	// bounds the finish, ctx the read ahead.
	pctx, pcancel := context.WithCancel(context.WithoutCancel(ctx))
	timer := time.AfterFunc(finishTimeout, pcancel)
	defer func() {
		if !handedOn {
			timer.Stop()
			pcancel()
		}
	}()
	pb := &pgx.Batch{}
	readFinish := b.QueueFinishStrict(pb)
	pb.Queue("commit")
	var readNext func(pgx.BatchResults) (*pgq.BatchInfo, error)
	ahead := false
	if c.cfg.Bell == nil && ctx.Err() == nil {
		pb.Queue("begin")
		readNext, _ = pgq.QueueNextBatch(pb, c.cfg.Queue, c.cfg.Name, c.batchOptions()) // checked by New
		pb.Queue("commit")
		// The connection goes on to the next batch only while the pool
		// has others to give: a consumer on a full pool hands it back
		// between batches, as it always did, for whoever waits.
		if st := c.pool.Stat(); st.AcquiredConns() < st.MaxConns() {
			ahead = b.QueuePrefetch(pb)
		}
	}
	res := tx.SendBatch(pctx, pb) // with the begin, if nothing began it
	closeRes := true
	defer func() {
		if closeRes {
			_ = res.Close()
		}
	}()
	if err := readFinish(res); err != nil {
		if errors.Is(err, pgq.ErrBatchNotFound) {
			c.log.Warn("batch unknown to PgQ at finish (consumer repositioned or unregistered?); dropped",
				"batch_id", info.ID)
			return b, false, nextBatch{}, nil
		}
		return fail(err, false)
	}
	if err := execTag(res, "COMMIT"); err != nil {
		return fail(fmt.Errorf("consumer: commit batch %d: %w", info.ID, err), false)
	}
	committed = true
	if readNext == nil {
		return b, true, nextBatch{}, nil
	}
	// The next batch: a failure here leaves this one finished; the next
	// step asks again and handles the error.
	var nb *pgq.BatchInfo
	if execTag(res, "BEGIN") == nil {
		if nb, err = readNext(res); err != nil || execTag(res, "COMMIT") != nil {
			nb = nil
		}
	}
	if nb == nil || !ahead || !timer.Stop() {
		_ = res.Close()
		closeRes = false
		if conn.Conn().PgConn().TxStatus() != 'I' { // the next batch's transaction failed
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
			_, _ = conn.Exec(rctx, "rollback")
			cancel()
		}
		return b, true, nextBatch{info: nb}, nil
	}
	// The read of the next batch's events is on its way: the connection
	// and the rest of the results go to the next step. Cancelling ctx
	// stops that read.
	closeRes = false
	handedOn = true
	stop := context.AfterFunc(ctx, pcancel)
	pf := pgq.NewPrefetch(res, func() {
		stop()
		pcancel()
	})
	return b, true, nextBatch{info: nb, carry: &carried{conn: conn, prefetch: pf}}, nil
}

// execTag reads the next result of res, a statement that must answer tag.
func execTag(res pgx.BatchResults, tag string) error {
	t, err := res.Exec()
	if err == nil && t.String() != tag {
		err = fmt.Errorf("the server answered %q", t.String())
	}
	return err
}

// callHandler runs the handler, turning a panic into an error.
func (c *Consumer) callHandler(ctx context.Context, b *pgq.Batch) (err error, panicked bool) {
	defer func() {
		if r := recover(); r != nil {
			err, panicked = fmt.Errorf("consumer: handler panicked on batch %d: %v\n%s", b.ID(), r, debug.Stack()), true
		}
	}()
	if err := c.handler.ProcessBatch(ctx, b); err != nil {
		return fmt.Errorf("consumer: handler failed on batch %d: %w", b.ID(), err), false
	}
	return nil, false
}

// registerOnStart registers the consumer if needed, retrying transient
// errors (a server still starting, a queue without ticks yet).
func (c *Consumer) registerOnStart(ctx context.Context) error {
	return backoff.Retry(ctx, backoff.Policy(c.cfg.ErrorBackoff), func() error {
		created, err := c.Register(ctx)
		if err == nil && created {
			c.log.Info("consumer registered")
		}
		return err
	}, func(err error) bool {
		return errors.Is(err, pgq.ErrQueueNotFound) || errors.Is(err, pgq.ErrNoExtension) || errors.Is(err, pgq.ErrInvalidName)
	}, func(err error, d time.Duration) {
		c.log.Warn("register consumer failed; retrying", logging.KeyErr, err, logging.KeyBackoff, d)
	})
}
