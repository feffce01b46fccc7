package remote

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
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
	if src == dst && cfg.Consumer.NoLazyFetch {
		return nil, errors.New("remote: NewSerial: source and destination share a pool, so the handler writes through the batch's source transaction, which needs the cursor: NoLazyFetch cannot be used")
	}
	s := &SerialConsumer{src: src, dst: dst, cfg: cfg.withDefaults(), h: h}
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
	pb := &pgx.Batch{}
	tx, err := beginDst(ctx, s.src, s.dst, s.cfg, b, pb)
	if err != nil {
		return err
	}
	defer tx.close(ctx)
	prefix := len(pb.QueuedQueries)
	pb.Queue("select pgq_ext.get_last_tick($1, $2)", name, sub)
	res := tx.SendBatch(ctx, pb)
	var last *int64
	err = execAll(res, prefix)
	if err == nil {
		err = res.QueryRow().Scan(&last)
	}
	if cerr := res.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("remote: %s/%s batch %d: check destination: %w", b.Queue, name, b.ID(), err)
	}
	var dstTick int64
	if last != nil {
		dstTick = *last
	}
	switch dstTick {
	case 0, b.Info.PrevTickID: // first batch, or on track: apply
	case b.Info.TickID:
		return nil // applied before a crash or by another instance: skip, finish on the source
	default:
		// Either the destination really is elsewhere (restored from a
		// backup, consumer repositioned) or this batch is stale: another
		// instance was handed a batch over the same ticks and has moved
		// on. Only the source can tell.
		current, err := s.isCurrentBatch(ctx, b)
		if err != nil {
			return err
		}
		if current && b.Info.PrevTickID < dstTick && dstTick < b.Info.TickID {
			// Another instance applied a shorter batch over the first
			// ticks of this one (batch collection picks the end tick when
			// next_batch runs). Move to the applied tick; the rest comes
			// as a new batch.
			if err := pgq.RegisterConsumerAt(ctx, s.src, b.Queue, name, dstTick); err != nil {
				return fmt.Errorf("remote: %s/%s batch %d: reposition after overlap: %w", b.Queue, name, b.ID(), err)
			}
			return fmt.Errorf("remote: %s/%s batch %d covers ticks %d..%d, destination has tick %d from another instance; consumer moved to tick %d",
				b.Queue, name, b.ID(), b.Info.PrevTickID, b.Info.TickID, dstTick, dstTick)
		}
		if !current {
			return fmt.Errorf("remote: %s/%s batch %d (ticks %d..%d) was superseded by another instance (destination at tick %d); dropped",
				b.Queue, name, b.ID(), b.Info.PrevTickID, b.Info.TickID, dstTick)
		}
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

// isCurrentBatch reports whether b is still the consumer's open batch on
// the source (false: another instance replaced or finished it).
func (s *SerialConsumer) isCurrentBatch(ctx context.Context, b *pgq.Batch) (bool, error) {
	var cur *int64
	err := s.src.QueryRow(ctx, `select s.sub_batch from pgq.subscription s
		join pgq.queue q on q.queue_id = s.sub_queue join pgq.consumer c on c.co_id = s.sub_consumer
		where q.queue_name = $1 and c.co_name = $2`, b.Queue, s.cfg.Consumer.Name).Scan(&cur)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("remote: %s/%s batch %d: check source position: %w", b.Queue, s.cfg.Consumer.Name, b.ID(), err)
	}
	return cur != nil && *cur == b.ID(), nil
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
