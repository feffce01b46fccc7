package consumer

import (
	"context"

	"github.com/pgq-go/pgq/pgq"
)

// Register subscribes the consumer to its queue at the latest tick
// (Skytools --register). It reports false when it was already registered;
// its position is then kept. The queue needs a tick (pgq.ErrNoTicks).
func (c *Consumer) Register(ctx context.Context) (bool, error) {
	return pgq.RegisterConsumer(ctx, c.pool, c.cfg.Queue, c.cfg.Name)
}

// RegisterAt repositions the consumer at tickID, registering it if needed
// (Skytools --rewind / --reset to a tick). An open batch is dropped; events
// after tickID are delivered again.
func (c *Consumer) RegisterAt(ctx context.Context, tickID int64) error {
	return pgq.RegisterConsumerAt(ctx, c.pool, c.cfg.Queue, c.cfg.Name, tickID)
}

// Unregister removes the consumer and its pending retry events from the
// queue (Skytools --unregister). It reports false when it was not
// registered.
func (c *Consumer) Unregister(ctx context.Context) (bool, error) {
	return pgq.UnregisterConsumer(ctx, c.pool, c.cfg.Queue, c.cfg.Name)
}

// Info returns the consumer's position: lag, last seen, last tick, open
// batch and pending (ticked) events. pgq.ErrNotRegistered if absent.
func (c *Consumer) Info(ctx context.Context) (pgq.ConsumerInfo, error) {
	return pgq.GetConsumerInfo(ctx, c.pool, c.cfg.Queue, c.cfg.Name)
}
