package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/internal/backoff"
	"github.com/pgq-go/pgq/internal/logging"
	"github.com/pgq-go/pgq/pgq"
)

// ErrRetryQueue is returned by Run (wrapped, naming queue and consumer)
// when the handler tagged events for retry: a LocalConsumer must not use
// the retry queue, whose events would come back in a later batch than the
// one the tracking file records.
var ErrRetryQueue = errors.New("local: a LocalConsumer cannot use the retry queue")

// ErrLostPosition is returned by Run (wrapped, naming queue, consumer,
// file and tick) when the consumer cannot be moved to the tracking file's
// tick because the queue no longer has that tick (rotated away, or the
// queue was dropped and created again). Reset removes the file; the next
// Run then continues from the queue's position.
var ErrLostPosition = errors.New("local: lost position")

// Consumer applies the batches of a queue and records the last applied
// tick in a local file, like Skytools' pgq.LocalConsumer. Create it with
// New and start it with Run.
type Consumer struct {
	pool    *pgxpool.Pool
	cfg     Config
	file    string // cfg.TrackingFile, resolved
	h       Handler
	c       *consumer.Consumer
	log     *slog.Logger
	running atomic.Bool
}

// New returns a Consumer of cfg.Consumer.Queue as cfg.Consumer.Name,
// calling h for each batch and tracking its position in cfg.TrackingFile.
// It checks cfg (errors name the offending field) and that the tracking
// file's directory exists, but does not touch the database.
func New(pool *pgxpool.Pool, cfg Config, h Handler) (*Consumer, error) {
	var errs []error
	if pool == nil {
		errs = append(errs, errors.New("local: pool is nil"))
	}
	if h == nil {
		errs = append(errs, errors.New("local: handler is nil"))
	}
	if err := cfg.validate(); err != nil {
		errs = append(errs, err)
	}
	l := &Consumer{pool: pool, h: h}
	if cfg.TrackingFile != "" {
		file, err := trackingPath(cfg.TrackingFile)
		if err == nil {
			err = checkTrackingPath(file)
		}
		if err != nil {
			errs = append(errs, err)
		}
		l.file = file
	}
	// The queue side registers nothing by itself: Run reconciles the
	// registration with the tracking file first.
	qcfg := cfg.Consumer
	qcfg.Register = false
	if len(errs) == 0 {
		c, err := consumer.New(pool, qcfg, consumer.BatchHandlerFunc(l.processBatch))
		if err != nil {
			errs = append(errs, fmt.Errorf("local: %w", err))
		}
		l.c = c
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	l.cfg = cfg
	l.cfg.Consumer = l.c.Config()
	l.cfg.Consumer.Register = cfg.Consumer.Register
	l.cfg.TrackingFile = l.file
	l.log = l.cfg.Consumer.Logger.With("queue", l.cfg.Consumer.Queue, "consumer", l.cfg.Consumer.Name)
	return l, nil
}

// Config returns the configuration with defaults filled in and
// TrackingFile resolved to an absolute path.
func (l *Consumer) Config() Config { return l.cfg }

// Consumer returns the underlying queue-side consumer (Info, RegisterAt).
// Its Register and Unregister leave the tracking file alone; use this
// Consumer's.
func (l *Consumer) Consumer() *consumer.Consumer { return l.c }

// Run reconciles the queue with the tracking file, then consumes batches
// until ctx is cancelled (it then returns nil) or a fatal error occurs.
//
// At start, as Skytools' LocalConsumer does: a consumer that is not
// registered is registered at the file's tick (at the queue's latest tick
// when there is no file); a registered consumer whose position differs
// from the file's tick is moved to it (events after it are delivered
// again, or skipped when the file is ahead); a missing file gets the
// queue's tick. A consumer whose open batch ends at the file's tick keeps
// it: that batch was applied before a crash and is finished without
// processing.
//
// For each batch: a batch that starts at the file's tick (or with no
// file) is applied by the handler, then its end tick is written to the
// file, then it is finished on the queue. A batch that ends at the file's
// tick is finished without processing. Any other batch means the queue
// and the file disagree while running: the consumer is moved to the
// file's tick and the step fails (logged, retried after the backoff), as
// Skytools' "Lost position" does.
//
// Run returns an error, logged at error level, when the tracking file's
// directory is missing or the file unusable (ErrTrackingFile), the file's
// tick is gone from the queue (ErrLostPosition), the handler tagged a
// retry (ErrRetryQueue), the new tick could not be saved, the queue or
// the pgq extension is missing, the consumer was unregistered while
// running, or the handler returned an error wrapped with consumer.Fatal.
// Other errors are logged and retried; see consumer.Consumer.Run. Run
// returns only after every goroutine it started has ended.
func (l *Consumer) Run(ctx context.Context) error {
	if !l.running.CompareAndSwap(false, true) {
		return consumer.ErrRunning
	}
	defer l.running.Store(false)

	if err := checkTrackingPath(l.file); err != nil {
		l.log.Error("local consumer stopped", logging.KeyErr, err)
		return err
	}
	err := backoff.Retry(ctx, backoff.Policy(l.cfg.Consumer.ErrorBackoff), func() error {
		return l.reconcile(ctx)
	}, isFinal, func(err error, d time.Duration) {
		l.log.Warn("reconciling the queue with the tracking file failed; retrying", "file", l.file,
			logging.KeyErr, err, logging.KeyBackoff, d)
	})
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		l.log.Error("local consumer stopped", "file", l.file, logging.KeyErr, err)
		return err
	}
	return l.c.Run(ctx)
}

// isFinal reports start-up errors that retrying cannot fix.
func isFinal(err error) bool {
	for _, target := range []error{ErrTrackingFile, ErrLostPosition, pgq.ErrQueueNotFound,
		pgq.ErrNoExtension, pgq.ErrInvalidName, pgq.ErrInvalidArgument} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// processBatch is the queue-side consumer's handler: Skytools'
// LocalConsumer.process_batch (is_batch_done, process_local_batch,
// set_batch_done). Returning nil lets the consumer finish the batch.
func (l *Consumer) processBatch(ctx context.Context, b *pgq.Batch) error {
	id, prev, cur := b.ID(), b.Info.PrevTickID, b.Info.TickID
	// The lock serialises, per queue and consumer, the read of the file,
	// the apply, the write of the file and finish_batch of every pgq-go
	// instance: it is taken in the batch's transaction, which finishes
	// the batch and commits (or rolls back) after this returns. Two
	// instances on one tracking file (a rolling deploy, a paused process
	// that resumes) get the same batch from NextBatch; the second one in
	// then finds the file at the batch's end tick and skips it.
	if _, err := b.DB().Exec(ctx, sqlLock, b.Queue, b.Consumer); err != nil {
		return fmt.Errorf("local: %s/%s batch %d: lock: %w", b.Queue, b.Consumer, id, err)
	}
	local, ok, err := loadTick(l.file)
	if err != nil {
		return consumer.Fatal(fmt.Errorf("local: %s/%s batch %d: %w", b.Queue, b.Consumer, id, err))
	}
	switch {
	case !ok || local == prev:
		// On track, or no file (Skytools: "this consumer has not run
		// yet"): apply.
	case local == cur:
		l.log.Info("batch already applied (the tracking file holds its end tick); finished without processing",
			"batch_id", id, "tick", cur)
		return nil
	default:
		return l.outOfSync(ctx, b, local)
	}

	if err := l.h.ProcessLocalBatch(ctx, b); err != nil {
		return fmt.Errorf("local: %s/%s batch %d: %w", b.Queue, b.Consumer, id, err)
	}
	if n := b.RetryCount(); n > 0 {
		// Fatal: processing the batch again would apply it again.
		return consumer.Fatal(fmt.Errorf("local: %s/%s batch %d: %d events tagged for retry; the batch was applied but is not recorded, stopping: %w",
			b.Queue, b.Consumer, id, n, ErrRetryQueue))
	}
	if err := saveTick(l.file, cur); err != nil {
		// Fatal: retrying would apply the batch again on every attempt.
		return consumer.Fatal(fmt.Errorf("local: %s/%s batch %d was applied but its tick %d not saved (it will be applied again after a restart): %w",
			b.Queue, b.Consumer, id, cur, err))
	}
	if afterSave != nil {
		afterSave(id, cur)
	}
	return nil
}

// afterSave is a test hook run after a batch's tick was written to the
// tracking file, before finish_batch (see export_test.go).
var afterSave func(batchID, tick int64)
