package remote

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/pgq"
)

// ErrLostPosition means the destination's last applied tick is neither the
// start nor the end of the batch offered by the source: applying it would
// skip or repeat events. Rewind (or Reset) resolves it.
var ErrLostPosition = errors.New("remote: lost position")

// SerialConsumer applies batches to a destination in tick order, tracking
// the last applied tick on the destination (pgq_ext.completed_tick), like
// Skytools' SerialConsumer. It can tell a batch already applied (skip)
// from one that does not follow the destination's position (lost
// position: Run stops with ErrLostPosition naming both ticks). It must not
// use the retry queue: a handler that tags retries fails the batch.
type SerialConsumer struct {
	src, dst *pgxpool.Pool
	cfg      Config
	h        Handler
	c        *consumer.Consumer
}

// NewSerial returns a SerialConsumer reading from src and applying to dst.
func NewSerial(src, dst *pgxpool.Pool, cfg Config, h Handler) (*SerialConsumer, error) {
	if src == nil || dst == nil {
		return nil, errors.New("remote: NewSerial needs both a source and a destination pool")
	}
	if h == nil {
		return nil, errors.New("remote: NewSerial needs a Handler")
	}
	s := &SerialConsumer{src: src, dst: dst, cfg: cfg, h: h}
	c, err := consumer.New(src, cfg.Consumer, consumer.BatchHandlerFunc(s.processBatch))
	if err != nil {
		return nil, fmt.Errorf("remote: %w", err)
	}
	s.c = c
	s.cfg.Consumer = c.Config()
	return s, nil
}

// Consumer returns the underlying source-side consumer.
func (s *SerialConsumer) Consumer() *consumer.Consumer { return s.c }

// Run installs (or verifies) the tracking schema and consumes until ctx is
// cancelled. It returns an error wrapping ErrLostPosition when the
// destination is not where the source's next batch starts.
func (s *SerialConsumer) Run(ctx context.Context) error {
	if err := prepareDst(ctx, s.dst, s.cfg); err != nil {
		return err
	}
	return s.c.Run(ctx)
}

func (s *SerialConsumer) processBatch(ctx context.Context, b *pgq.Batch) error {
	name, sub := s.cfg.Consumer.Name, s.cfg.SubConsumer
	tx, err := s.dst.Begin(ctx)
	if err != nil {
		return fmt.Errorf("remote: %s/%s batch %d: begin destination: %w", b.Queue, name, b.ID(), err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, lockKeySQL, name, sub); err != nil {
		return fmt.Errorf("remote: %s/%s batch %d: lock destination: %w", b.Queue, name, b.ID(), err)
	}
	dstTick, err := LastTick(ctx, tx, name, sub)
	if err != nil {
		return err
	}
	switch dstTick {
	case 0, b.Info.PrevTickID: // first batch, or on track: apply
	case b.Info.TickID:
		return nil // applied before a crash: skip, finish on the source
	default:
		return consumer.Fatal(fmt.Errorf("%w: %s/%s batch %d covers ticks %d..%d, destination has tick %d (use Rewind or Reset)",
			ErrLostPosition, b.Queue, name, b.ID(), b.Info.PrevTickID, b.Info.TickID, dstTick))
	}
	if err := s.h.ProcessRemoteBatch(ctx, b, tx); err != nil {
		return err
	}
	if n := b.RetryCount(); n > 0 {
		return fmt.Errorf("remote: %s/%s batch %d: SerialConsumer cannot use the retry queue (%d events tagged)", b.Queue, name, b.ID(), n)
	}
	fctx, cancel := finishCtx(ctx)
	defer cancel()
	if _, err := tx.Exec(fctx, "select pgq_ext.set_last_tick($1, $2, $3)", name, sub, b.Info.TickID); err != nil {
		return fmt.Errorf("remote: %s/%s batch %d: record tick: %w", b.Queue, name, b.ID(), err)
	}
	if err := tx.Commit(fctx); err != nil {
		return fmt.Errorf("remote: %s/%s batch %d: commit destination: %w", b.Queue, name, b.ID(), err)
	}
	return nil
}

// Rewind repositions the consumer on the source at the destination's last
// applied tick (Skytools --rewind). It reports false when the destination
// has no tick recorded (nothing to do).
func (s *SerialConsumer) Rewind(ctx context.Context) (bool, error) {
	tick, err := LastTick(ctx, s.dst, s.cfg.Consumer.Name, s.cfg.SubConsumer)
	if err != nil {
		return false, err
	}
	if tick == 0 {
		return false, nil
	}
	if err := pgq.RegisterConsumerAt(ctx, s.src, s.cfg.Consumer.Queue, s.cfg.Consumer.Name, tick); err != nil {
		return false, err
	}
	return true, nil
}

// Reset forgets the destination's position (Skytools --reset): the next
// batch is applied whatever its ticks.
func (s *SerialConsumer) Reset(ctx context.Context) error {
	if _, err := s.dst.Exec(ctx, "select pgq_ext.set_last_tick($1, $2, null)", s.cfg.Consumer.Name, s.cfg.SubConsumer); err != nil {
		return fmt.Errorf("remote: reset %s: %w", s.cfg.Consumer.Name, err)
	}
	return nil
}
