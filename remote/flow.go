package remote

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/internal/backoff"
	"github.com/pgq-go/pgq/internal/logging"
	"github.com/pgq-go/pgq/pgq"
)

// flow is what RemoteConsumer and SerialConsumer share: the source
// consumer, the destination pool, and the frame of every batch (the
// destination transaction, the check of what the destination recorded,
// the handler, the record and the commit). They differ only in what they
// record, the tracker.
type flow struct {
	src, dst *pgxpool.Pool
	cfg      Config
	h        Handler
	c        *consumer.Consumer
	t        tracker
}

// tracker is how a flow records its position on the destination.
type tracker interface {
	// queueCheck queues, on pb, the statements that read the recorded
	// position for batch b.
	queueCheck(pb *pgx.Batch, name, sub string, b *pgq.Batch)
	// decide reads their results and returns whether to apply b; false
	// with a nil error skips it (applied before), finishing it on the
	// source.
	decide(ctx context.Context, f *flow, res pgx.BatchResults, b *pgq.Batch) (apply bool, err error)
	// record writes b's position in the destination transaction.
	record(ctx context.Context, tx pgx.Tx, name, sub string, b *pgq.Batch) error
}

func newFlow(ctor string, src, dst *pgxpool.Pool, cfg Config, h Handler, t tracker) (*flow, error) {
	if src == nil || dst == nil {
		return nil, fmt.Errorf("remote: %s needs both a source and a destination pool", ctor)
	}
	if h == nil {
		return nil, fmt.Errorf("remote: %s needs a Handler", ctor)
	}
	if src == dst && cfg.Consumer.NoLazyFetch {
		return nil, fmt.Errorf("remote: %s: source and destination share a pool, so the handler writes through the batch's source transaction, which needs the cursor: NoLazyFetch cannot be used", ctor)
	}
	f := &flow{src: src, dst: dst, cfg: cfg.withDefaults(), h: h, t: t}
	c, err := consumer.New(src, cfg.Consumer, consumer.BatchHandlerFunc(f.processBatch))
	if err != nil {
		return nil, fmt.Errorf("remote: %w", err)
	}
	f.c = c
	f.cfg.Consumer = c.Config()
	return f, nil
}

// run installs (or verifies) the destination tracking schema, retrying
// while the destination is unreachable, then consumes until ctx ends.
func (f *flow) run(ctx context.Context) error {
	cfg := f.cfg
	err := backoff.Retry(ctx, backoff.Policy(cfg.Consumer.ErrorBackoff), func() error {
		if cfg.SkipInstall {
			return verify(ctx, f.dst)
		}
		return Install(ctx, f.dst)
	}, func(err error) bool { return errors.Is(err, ErrTrackingSchema) }, func(err error, d time.Duration) {
		cfg.Consumer.Logger.Error("destination tracking schema not ready; retrying", "queue", cfg.Consumer.Queue,
			"consumer", cfg.Consumer.Name, logging.KeyErr, err, logging.KeyBackoff, d)
	})
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return err
	}
	return f.c.Run(ctx)
}

// processBatch applies one batch exactly once. Several instances of one
// consumer may run at once (a rolling deploy, a paused process that
// resumes): they are serialised on the destination by an advisory lock
// (beginDst), and the tracker tells a batch applied before from one to
// apply.
func (f *flow) processBatch(ctx context.Context, b *pgq.Batch) error {
	name, sub := f.cfg.Consumer.Name, f.cfg.SubConsumer
	pb := &pgx.Batch{}
	tx, err := beginDst(ctx, f.src, f.dst, f.cfg, b, pb)
	if err != nil {
		return err
	}
	defer tx.close(ctx)

	prefix := len(pb.QueuedQueries)
	f.t.queueCheck(pb, name, sub, b)
	res := tx.SendBatch(ctx, pb)
	apply := false
	err = execAll(res, prefix)
	if err == nil {
		apply, err = f.t.decide(ctx, f, res, b)
	}
	if cerr := res.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if !apply {
		f.cfg.Consumer.Logger.Info("batch already applied on the destination; skipped",
			"queue", b.Queue, "consumer", name, "batch_id", b.ID(), "tick_id", b.Info.TickID, "prev_tick_id", b.Info.PrevTickID)
		return nil
	}

	if err := f.h.ProcessRemoteBatch(ctx, b, tx); err != nil {
		return err
	}
	// The handler succeeded: record and commit even if ctx is cancelled
	// meanwhile, so a stop does not leave the destination ahead of the source.
	fctx, cancel := finishCtx(ctx)
	defer cancel()
	// What the handler queued on its Pipe is part of the batch: sent
	// before the record, in the same transaction.
	if err := tx.flushPipe(fctx); err != nil {
		return fmt.Errorf("remote: %s/%s batch %d: %w", b.Queue, name, b.ID(), err)
	}
	if err := f.t.record(fctx, tx, name, sub, b); err != nil {
		return fmt.Errorf("remote: %s/%s batch %d: record on destination: %w", b.Queue, name, b.ID(), err)
	}
	if err := tx.Commit(fctx); err != nil {
		return fmt.Errorf("remote: %s/%s batch %d: commit destination: %w", b.Queue, name, b.ID(), err)
	}
	if f.cfg.AfterCommit != nil {
		f.cfg.AfterCommit(b)
	}
	if afterDstCommit != nil && !tx.shared {
		afterDstCommit(b.ID())
	}
	return nil
}

// finishTimeout bounds the destination's record + commit after a handler
// succeeded; they run even when the caller's context is cancelled.
const finishTimeout = 30 * time.Second

func finishCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
}

// afterDstCommit is a test hook (see export_test.go).
var afterDstCommit func(batchID int64)
