package remote

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/pgq"
)

// puller applies a batch of this node's events to the node.
type puller struct{ tc *TargetedCopier }

type pullCounts struct{ applied, retried, parked, ignored int64 }

func (p *puller) ProcessRemoteBatch(ctx context.Context, b *pgq.Batch, tx pgx.Tx) error {
	// Fast path: every row in one savepoint, no per-row round trips.
	c, err := p.applyAll(ctx, b, tx)
	if err != nil {
		// Some row failed: redo the batch row by row, each in its own
		// savepoint, retrying or parking the failures.
		if c, err = p.applyEach(ctx, b, tx); err != nil {
			return err
		}
	}
	tc := p.tc
	tc.applied.Add(c.applied)
	tc.retried.Add(c.retried)
	tc.parked.Add(c.parked)
	tc.ignored.Add(c.ignored)
	return nil
}

// applyAll applies the batch inside one savepoint; any failure rolls it
// back and is returned.
func (p *puller) applyAll(ctx context.Context, b *pgq.Batch, tx pgx.Tx) (pullCounts, error) {
	var c pullCounts
	sp, err := tx.Begin(ctx)
	if err != nil {
		return c, err
	}
	for ev, err := range b.Events(ctx) {
		if err == nil {
			switch {
			case ev.Extra1.String != p.tc.cfg.Node:
				err = errors.New("misaddressed event") // handled row by row
			case !p.wanted(ev):
				c.ignored++
				continue
			default:
				err = p.tc.cfg.Applier.Apply(ctx, sp, ev)
			}
		}
		if err != nil {
			_ = sp.Rollback(ctx)
			return c, err
		}
		c.applied++
	}
	return c, sp.Commit(ctx)
}

func (p *puller) wanted(ev *pgq.Event) bool {
	return p.tc.cfg.Accept(ev.Type.String)
}

func (p *puller) applyEach(ctx context.Context, b *pgq.Batch, tx pgx.Tx) (pullCounts, error) {
	tc := p.tc
	var c pullCounts
	for ev, err := range b.Events(ctx) {
		if err != nil {
			return c, err
		}
		if ev.Extra1.String != tc.cfg.Node {
			// The server-side filter makes this impossible; never apply it.
			if err := park(ctx, tx, b.Consumer, b.Queue, ev, fmt.Errorf("event %d addressed to %q, not %q", ev.ID, ev.Extra1.String, tc.cfg.Node)); err != nil {
				return c, err
			}
			c.parked++
			continue
		}
		if !p.wanted(ev) {
			c.ignored++
			continue
		}
		sp, err := tx.Begin(ctx)
		if err != nil {
			return c, err
		}
		aerr := tc.cfg.Applier.Apply(ctx, sp, ev)
		if aerr == nil {
			if err := sp.Commit(ctx); err != nil {
				return c, err
			}
			c.applied++
			continue
		}
		if err := sp.Rollback(ctx); err != nil {
			return c, err
		}
		if ctx.Err() != nil {
			return c, ctx.Err()
		}
		if errors.Is(aerr, ErrBadPayload) || int(ev.Retry) >= tc.cfg.MaxRetries {
			if err := park(ctx, tx, b.Consumer, b.Queue, ev, aerr); err != nil {
				return c, err
			}
			c.parked++
			tc.log.Warn("row parked", "event_id", ev.ID, "retries", ev.Retry, "err", aerr)
			continue
		}
		d := tc.cfg.RetryDelay << min(ev.Retry, 5)
		ev.TagRetry(d)
		c.retried++
		tc.log.Warn("row failed; retrying later", "event_id", ev.ID, "retries", ev.Retry, "delay", d, "err", aerr)
	}
	return c, nil
}
