package remote

import (
	"context"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/pgq"
)

// relay moves a batch of the node's push queue into one hub shard.
type relay struct {
	tc    *TargetedCopier
	shard int
	name  string

	mu      sync.Mutex
	ensured map[string]bool // targets whose registration on the hub is committed
	regConn *pgx.Conn       // registration connection to the hub, opened on first use
}

// relayFlush bounds the events buffered for COPY, over all hub queues of a
// relay batch: memory stays bounded however many targets a batch has.
const relayFlush = 5000

func (r *relay) ProcessRemoteBatch(ctx context.Context, b *pgq.Batch, hub pgx.Tx) error {
	tc := r.tc
	shards := len(tc.cfg.Hubs)
	bufs := map[string][]pgq.EventData{}
	buffered := 0
	flushAll := func() error {
		for queue, buf := range bufs {
			if len(buf) == 0 {
				continue
			}
			if _, err := pgq.InsertEvents(ctx, hub, queue, buf); err != nil {
				return err
			}
			tc.relayed.Add(int64(len(buf)))
			bufs[queue] = buf[:0]
		}
		buffered = 0
		return nil
	}
	var newTargets []string
	for ev, err := range b.Events(ctx) {
		if err != nil {
			return err
		}
		target := ev.Extra1.String
		if err := ValidateNode(target); err != nil || !ev.Extra1.Valid {
			if err == nil {
				err = fmt.Errorf("%w: NULL target", ErrInvalidNode)
			}
			// Not deliverable anywhere: kept on the hub for an operator.
			if perr := park(ctx, hub, r.name, b.Queue, ev, fmt.Errorf("event %d: %w", ev.ID, err)); perr != nil {
				return perr
			}
			tc.parked.Add(1)
			tc.log.Warn("event with an invalid target parked on the hub", "event_id", ev.ID, "err", err)
			continue
		}
		if shards > 1 && ShardOf(target, shards) != r.shard {
			continue // another relay carries it to its shard
		}
		queue := tc.queueFor(target)
		if !tc.cfg.NoTargetRegistration && !r.isEnsured(target) {
			if err := r.register(ctx, queue, target); err != nil {
				return fmt.Errorf("register target %s on hub: %w", target, err)
			}
			newTargets = append(newTargets, target)
		}
		bufs[queue] = append(bufs[queue], ev.EventData)
		if buffered++; buffered >= relayFlush {
			if err := flushAll(); err != nil {
				return err
			}
		}
	}
	if err := flushAll(); err != nil {
		return err
	}
	if len(newTargets) > 0 {
		tc.log.Debug("targets registered on hub", "shard", r.shard, "targets", newTargets)
	}
	return nil
}

// register ensures target on the relay's hub through a connection of its
// own: the relay already holds one of the hub pool's connections for its
// batch, and taking a second from the pool can deadlock when every
// connection is held by a relay waiting for another.
func (r *relay) register(ctx context.Context, queue, target string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.regConn == nil {
		conn, err := pgx.ConnectConfig(ctx, r.tc.cfg.Hubs[r.shard].Config().ConnConfig.Copy())
		if err != nil {
			return err
		}
		r.regConn = conn
	}
	if err := ensureTarget(ctx, r.regConn, queue, target, r.tc.cfg.QueueConfig); err != nil {
		r.closeLocked()
		return err
	}
	r.ensured[target] = true
	return nil
}

func (r *relay) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closeLocked()
}

func (r *relay) closeLocked() {
	if r.regConn != nil {
		_ = r.regConn.Close(context.Background())
		r.regConn = nil
	}
}

func (r *relay) isEnsured(target string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ensured[target]
}
