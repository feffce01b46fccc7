package local

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/pgq"
)

// sqlLock takes the transaction-level advisory lock that serialises the
// pgq-go instances of one local consumer (queue $1, consumer $2): a batch
// from the read of the tracking file to finish_batch, the reconciliation
// at start, Rewind. Python instances do not take it.
const sqlLock = `select pg_advisory_xact_lock(hashtextextended('pgq_go.local:' || $1::text || '/' || $2::text, 0))`

// reconcile is Skytools' LocalConsumer.check_queue: it brings the queue
// position and the tracking file together before the first batch.
func (l *Consumer) reconcile(ctx context.Context) error {
	q, name := l.cfg.Consumer.Queue, l.cfg.Consumer.Name
	return pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, sqlLock, q, name); err != nil {
			return fmt.Errorf("local: %s/%s: lock: %w", q, name, err)
		}
		local, hasLocal, err := loadTick(l.file)
		if err != nil {
			return err
		}
		info, err := pgq.GetConsumerInfo(ctx, tx, q, name)
		registered := err == nil
		if err != nil && !errors.Is(err, pgq.ErrNotRegistered) {
			return fmt.Errorf("local: %s/%s: %w", q, name, err)
		}
		log := l.log.With("file", l.file)
		switch {
		case !registered && hasLocal:
			log.Info("registering the consumer at the tracking file's tick", "tick", local)
			return l.registerAt(ctx, tx, local)
		case !registered:
			if _, err := pgq.RegisterConsumer(ctx, tx, q, name); err != nil {
				return fmt.Errorf("local: %s/%s: %w", q, name, err)
			}
			log.Info("no tracking file: consumer registered at the queue's latest tick")
			return nil
		case !hasLocal:
			log.Info("no tracking file: storing the queue's tick", "tick", info.LastTick)
			return saveTick(l.file, info.LastTick)
		case local == info.LastTick:
			log.Info("tracking file and queue agree", "tick", local)
			return nil
		case info.CurrentBatch != 0 && local == info.NextTick:
			// The process died after writing the file, before finish_batch.
			// Skytools moves the consumer to the file's tick here, which
			// drops the batch; keeping it open finishes it the normal way
			// (processBatch skips it), with the same outcome.
			log.Info("the open batch was applied before a restart; it will be finished without processing",
				"batch_id", info.CurrentBatch, "tick", local)
			return nil
		case local > info.LastTick:
			log.Warn("tracking out of sync: the file is ahead of the queue; moving the consumer forward to the file's tick (events in between are skipped)",
				"tick", local, "queue_tick", info.LastTick)
		default:
			log.Warn("tracking out of sync: the file is behind the queue; rewinding the consumer to the file's tick (events after it are delivered again)",
				"tick", local, "queue_tick", info.LastTick)
		}
		return l.registerAt(ctx, tx, local)
	})
}

// registerAt moves (or registers) the consumer at tick, through db.
func (l *Consumer) registerAt(ctx context.Context, db pgq.DB, tick int64) error {
	q, name := l.cfg.Consumer.Queue, l.cfg.Consumer.Name
	err := pgq.RegisterConsumerAt(ctx, db, q, name, tick)
	if err == nil {
		return nil
	}
	if errors.Is(err, pgq.ErrTickNotFound) {
		return fmt.Errorf("local: %s/%s: tracking file %s holds tick %d, which the queue no longer has (%w; Reset removes the file, and Run then continues from the queue's position): %w",
			q, name, l.file, tick, ErrLostPosition, err)
	}
	return fmt.Errorf("local: %s/%s: move the consumer to tick %d of tracking file %s: %w", q, name, tick, l.file, err)
}

// outOfSync handles a batch that neither starts nor ends at the file's
// tick. Either another instance finished or replaced the batch (it is
// dropped quietly), or the queue and the file really disagree: then the
// consumer is moved to the file's tick, what Skytools' check_queue does
// after its "Lost position" error, and the step fails.
func (l *Consumer) outOfSync(ctx context.Context, b *pgq.Batch, local int64) error {
	q, name, id := b.Queue, b.Consumer, b.ID()
	info, err := pgq.GetConsumerInfo(ctx, b.DB(), q, name)
	if err != nil {
		return fmt.Errorf("local: %s/%s batch %d: %w", q, name, id, err)
	}
	if info.CurrentBatch != id {
		// Finished or replaced by another instance meanwhile: finishing
		// it finds no such batch, and the consumer drops it.
		l.log.Info("batch superseded by another instance; dropped", "batch_id", id, "tick", local)
		return nil
	}
	l.log.Warn("tracking out of sync: the batch neither starts nor ends at the tracking file's tick; moving the consumer to the file's tick",
		"batch_id", id, "prev_tick", b.Info.PrevTickID, "batch_tick", b.Info.TickID, "tick", local, "file", l.file)
	// Through the pool: the batch's transaction rolls back with the error.
	if err := l.registerAt(ctx, l.pool, local); err != nil {
		if errors.Is(err, ErrLostPosition) {
			return consumer.Fatal(err)
		}
		return err
	}
	return fmt.Errorf("local: %s/%s batch %d covers ticks %d..%d, but tracking file %s holds tick %d: consumer moved to tick %d",
		q, name, id, b.Info.PrevTickID, b.Info.TickID, l.file, local, local)
}

// LocalTick returns the tick id in the tracking file; ok is false when
// there is none (no file, an empty file, or a negative number).
func (l *Consumer) LocalTick() (tick int64, ok bool, err error) { return loadTick(l.file) }

// Rewind moves the consumer on the queue to the tracking file's tick
// (Skytools --rewind), registering it if needed. It reports false, and
// does nothing, when the file holds no tick. Run it while no instance
// runs, or with the one running pausing on the lock it takes.
func (l *Consumer) Rewind(ctx context.Context) (bool, error) {
	q, name := l.cfg.Consumer.Queue, l.cfg.Consumer.Name
	moved := false
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, sqlLock, q, name); err != nil {
			return fmt.Errorf("local: %s/%s: lock: %w", q, name, err)
		}
		tick, ok, err := loadTick(l.file)
		if err != nil || !ok {
			return err
		}
		if err := l.registerAt(ctx, tx, tick); err != nil {
			return err
		}
		moved = true
		l.log.Info("consumer rewound to the tracking file's tick", "tick", tick, "file", l.file)
		return nil
	})
	if err != nil {
		return false, err
	}
	if !moved {
		l.log.Warn("cannot rewind: no tick in the tracking file", "file", l.file)
	}
	return moved, nil
}

// Reset removes the tracking file (Skytools --reset); a missing file is
// not an error. The next Run stores the queue's tick in a new file and
// continues from the queue's position.
func (l *Consumer) Reset() error {
	if err := removeTick(l.file); err != nil {
		return err
	}
	l.log.Info("tracking file removed", "file", l.file)
	return nil
}

// Register subscribes the consumer to the queue at its latest tick
// (Skytools --register) and, when it was not registered before, removes
// the tracking file, whose tick belongs to an earlier subscription. It
// reports false when the consumer was already registered (position and
// file are then kept). Register before producing: a consumer sees only
// events ticked after its registration.
func (l *Consumer) Register(ctx context.Context) (bool, error) {
	created, err := l.c.Register(ctx)
	if err != nil || !created {
		return created, err
	}
	return true, removeTick(l.file)
}

// Unregister removes the consumer from the queue (Skytools --unregister)
// and then its tracking file. It reports false when the consumer was not
// registered; the file is then kept.
func (l *Consumer) Unregister(ctx context.Context) (bool, error) {
	removed, err := l.c.Unregister(ctx)
	if err != nil || !removed {
		return removed, err
	}
	return true, removeTick(l.file)
}
