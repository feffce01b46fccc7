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
	f *flow
}

// NewSerial returns a SerialConsumer reading from src and applying to dst.
func NewSerial(src, dst *pgxpool.Pool, cfg Config, h Handler) (*SerialConsumer, error) {
	f, err := newFlow("NewSerial", src, dst, cfg, h, tickTracker{})
	if err != nil {
		return nil, err
	}
	return &SerialConsumer{f: f}, nil
}

// Consumer returns the underlying source-side consumer.
func (s *SerialConsumer) Consumer() *consumer.Consumer { return s.f.c }

// Run installs (or verifies) the tracking schema and consumes until ctx is
// cancelled. It returns an error wrapping ErrLostPosition when the
// destination is not where the source's next batch starts.
func (s *SerialConsumer) Run(ctx context.Context) error { return s.f.run(ctx) }

// tickTracker records the last applied tick (pgq_ext.completed_tick).
type tickTracker struct{}

func (tickTracker) queueCheck(pb *pgx.Batch, name, sub string, b *pgq.Batch) {
	pb.Queue("select pgq_ext.get_last_tick($1, $2)", name, sub)
}

func (tickTracker) decide(ctx context.Context, f *flow, res pgx.BatchResults, b *pgq.Batch) (bool, error) {
	name := f.cfg.Consumer.Name
	var last *int64
	if err := res.QueryRow().Scan(&last); err != nil {
		return false, fmt.Errorf("remote: %s/%s batch %d: check destination: %w", b.Queue, name, b.ID(), err)
	}
	var dstTick int64
	if last != nil {
		dstTick = *last
	}
	switch dstTick {
	case 0, b.Info.PrevTickID: // first batch, or on track: apply
		return true, nil
	case b.Info.TickID:
		return false, nil // applied before a crash or by another instance: skip, finish on the source
	}
	// Either the destination really is elsewhere (restored from a backup,
	// consumer repositioned) or this batch is stale: another instance was
	// handed a batch over the same ticks and has moved on. Only the source
	// can tell.
	current, err := isCurrentBatch(ctx, f.src, name, b)
	if err != nil {
		return false, err
	}
	if current && b.Info.PrevTickID < dstTick && dstTick < b.Info.TickID {
		// Another instance applied a shorter batch over the first ticks
		// of this one (batch collection picks the end tick when
		// next_batch runs). Move to the applied tick; the rest comes as a
		// new batch.
		if err := pgq.RegisterConsumerAt(ctx, f.src, b.Queue, name, dstTick); err != nil {
			return false, fmt.Errorf("remote: %s/%s batch %d: reposition after overlap: %w", b.Queue, name, b.ID(), err)
		}
		return false, fmt.Errorf("remote: %s/%s batch %d covers ticks %d..%d, destination has tick %d from another instance; consumer moved to tick %d",
			b.Queue, name, b.ID(), b.Info.PrevTickID, b.Info.TickID, dstTick, dstTick)
	}
	if !current {
		return false, fmt.Errorf("remote: %s/%s batch %d (ticks %d..%d) was superseded by another instance (destination at tick %d); dropped",
			b.Queue, name, b.ID(), b.Info.PrevTickID, b.Info.TickID, dstTick)
	}
	return false, consumer.Fatal(fmt.Errorf("%w: %s/%s batch %d covers ticks %d..%d, destination has tick %d (use Rewind or Reset)",
		ErrLostPosition, b.Queue, name, b.ID(), b.Info.PrevTickID, b.Info.TickID, dstTick))
}

func (tickTracker) record(ctx context.Context, tx pgx.Tx, name, sub string, b *pgq.Batch) error {
	if n := b.RetryCount(); n > 0 {
		return fmt.Errorf("SerialConsumer cannot use the retry queue (%d events tagged)", n)
	}
	_, err := tx.Exec(ctx, "select pgq_ext.set_last_tick($1, $2, $3)", name, sub, b.Info.TickID)
	return err
}

// isCurrentBatch reports whether b is still the consumer's open batch on
// the source (false: another instance replaced or finished it).
func isCurrentBatch(ctx context.Context, src *pgxpool.Pool, name string, b *pgq.Batch) (bool, error) {
	var cur *int64
	err := src.QueryRow(ctx, `select s.sub_batch from pgq.subscription s
		join pgq.queue q on q.queue_id = s.sub_queue join pgq.consumer c on c.co_id = s.sub_consumer
		where q.queue_name = $1 and c.co_name = $2`, b.Queue, name).Scan(&cur)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("remote: %s/%s batch %d: check source position: %w", b.Queue, name, b.ID(), err)
	}
	return cur != nil && *cur == b.ID(), nil
}

// Rewind repositions the consumer on the source at the destination's last
// applied tick (Skytools --rewind). It reports false when the destination
// has no tick recorded (nothing to do).
func (s *SerialConsumer) Rewind(ctx context.Context) (bool, error) {
	tick, err := LastTick(ctx, s.f.dst, s.f.cfg.Consumer.Name, s.f.cfg.SubConsumer)
	if err != nil {
		return false, err
	}
	if tick == 0 {
		return false, nil
	}
	if err := pgq.RegisterConsumerAt(ctx, s.f.src, s.f.cfg.Consumer.Queue, s.f.cfg.Consumer.Name, tick); err != nil {
		return false, err
	}
	return true, nil
}

// Reset forgets the destination's position (Skytools --reset): the next
// batch is applied whatever its ticks.
func (s *SerialConsumer) Reset(ctx context.Context) error {
	if _, err := s.f.dst.Exec(ctx, "select pgq_ext.set_last_tick($1, $2, null)", s.f.cfg.Consumer.Name, s.f.cfg.SubConsumer); err != nil {
		return fmt.Errorf("remote: reset %s: %w", s.f.cfg.Consumer.Name, err)
	}
	return nil
}
