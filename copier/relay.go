package copier

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/pgq-go/pgq/internal/logging"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/route"
)

// relay moves a batch of the node's push queue into one hub shard.
type relay struct {
	tc    *TargetedCopier
	shard int
	name  string

	mu       sync.Mutex
	ensured  map[string]bool // targets whose registration on the hub is committed
	regConn  *pgx.Conn       // registration connection to the hub, open during a batch that registers
	regSlots chan struct{}   // the slot regConn holds (registrationSlots)

	flushes, maxBuffered atomic.Int64 // COPY flushes; most bytes buffered at once (tests)

	pending pullCounts // this batch's counts, added to the copier's once committed
}

// batchCommitted adds the committed batch's counts to the copier's stats.
func (r *relay) batchCommitted() {
	r.tc.relayed.Add(r.pending.applied)
	r.tc.parked.Add(r.pending.parked)
	r.pending = pullCounts{}
}

// relayFlush and relayFlushBytes bound the events buffered for COPY, over
// all hub queues of a relay batch, in events and in bytes of event text
// (whichever is reached first flushes): memory stays bounded however many
// targets a batch has and however large its events are (a buffer holds at
// most relayFlushBytes plus one event).
const (
	relayFlush      = 5000
	relayFlushBytes = 8 << 20
)

func (r *relay) ProcessRemoteBatch(ctx context.Context, b *pgq.Batch, hub pgx.Tx) error {
	tc := r.tc
	// A registration connection serves one batch only: in steady state
	// (every target registered) a relay holds no hub connection but its
	// batch's.
	defer r.close()
	r.pending = pullCounts{} // relayed events count as applied
	shards := len(tc.cfg.Hubs)
	bufs := map[string][]pgq.EventData{}
	buffered := 0
	bufBytes := int64(0)
	flushAll := func() error {
		if buffered > 0 {
			r.flushes.Add(1)
			if bufBytes > r.maxBuffered.Load() {
				r.maxBuffered.Store(bufBytes)
			}
		}
		for queue, buf := range bufs {
			if len(buf) == 0 {
				continue
			}
			if _, err := pgq.InsertEvents(ctx, hub, queue, slices.Values(buf)); err != nil {
				return err
			}
			r.pending.applied += int64(len(buf))
			bufs[queue] = buf[:0]
		}
		buffered, bufBytes = 0, 0
		return nil
	}
	var newTargets []string
	for ev, err := range b.Events(ctx) {
		if err != nil {
			return err
		}
		target := ev.Extra1.String
		if err := route.ValidateNode(target); err != nil || !ev.Extra1.Valid {
			if err == nil {
				err = fmt.Errorf("%w: NULL target", route.ErrInvalidNode)
			}
			// Not deliverable anywhere: kept on a hub for an operator. Every
			// shard's relay sees it; only shard 0's parks it, so it is
			// parked once.
			if r.shard != 0 {
				continue
			}
			if perr := park(ctx, hub, r.name, b.Queue, ev, fmt.Errorf("event %d: %w", ev.ID, err)); perr != nil {
				return perr
			}
			r.pending.parked++
			tc.log.Warn("event with an invalid target parked on the hub", "event_id", ev.ID, logging.KeyErr, err)
			continue
		}
		if shards > 1 && route.ShardOf(target, shards) != r.shard {
			continue // another relay carries it to its shard
		}
		queue := tc.queueFor(target)
		if testHookRelayQueue != nil {
			queue = testHookRelayQueue(queue)
		}
		if err := pgq.ValidateName("queue", queue); err != nil {
			// Config validation keeps this out; should it happen anyway,
			// the event is parked (by the one relay carrying it) rather
			// than failing every retry of the batch.
			err = fmt.Errorf("event %d: target %q has no valid hub queue name (%q): %w", ev.ID, target, queue, err)
			if perr := park(ctx, hub, r.name, b.Queue, ev, err); perr != nil {
				return perr
			}
			r.pending.parked++
			tc.log.Warn("event whose target has no valid queue name parked on the hub", "event_id", ev.ID, "target", target, logging.KeyErr, err)
			continue
		}
		if !tc.cfg.NoTargetRegistration && !r.isEnsured(target) {
			if err := r.register(ctx, queue, target); err != nil {
				return fmt.Errorf("register target %s on hub: %w", target, err)
			}
			newTargets = append(newTargets, target)
		}
		bufs[queue] = append(bufs[queue], ev.EventData)
		bufBytes += eventBytes(&ev.EventData)
		if buffered++; buffered >= relayFlush || bufBytes >= relayFlushBytes {
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
// own, kept until the batch ends: the relay already holds one of the hub
// pool's connections for its batch, and taking a second from the pool can
// deadlock when every connection is held by a relay waiting for another.
func (r *relay) register(ctx context.Context, queue, target string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.regConn == nil {
		hub := r.tc.cfg.Hubs[r.shard]
		slots := registrationSlots(hub)
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		conn, err := pgx.ConnectConfig(ctx, hub.Config().ConnConfig.Copy())
		if err != nil {
			<-slots
			return err
		}
		r.regConn, r.regSlots = conn, slots
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
		<-r.regSlots
	}
}

// maxRegistrationConns bounds the registration connections the relays of
// one process open to one hub at once (they are only open during a batch
// that meets a new target, but at start-up every relay meets every
// target): a process running hundreds of copiers must not exhaust the
// hub's max_connections. A relay waiting for a slot holds no slot, and a
// registration connection waits for nothing a relay holds.
const maxRegistrationConns = 4

var regSlots sync.Map // hub connection string → chan struct{} (a semaphore)

func registrationSlots(hub *pgxpool.Pool) chan struct{} {
	s, _ := regSlots.LoadOrStore(hub.Config().ConnString(), make(chan struct{}, maxRegistrationConns))
	return s.(chan struct{})
}

func (r *relay) isEnsured(target string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ensured[target]
}

// testHookRelayQueue, when set, rewrites the hub queue a relay writes to:
// a test reaches the invalid-name path that config validation keeps out.
var testHookRelayQueue func(queue string) string

// eventBytes is the size of an event's text fields.
func eventBytes(d *pgq.EventData) int64 {
	return int64(len(d.Type.String) + len(d.Data.String) + len(d.Extra1.String) +
		len(d.Extra2.String) + len(d.Extra3.String) + len(d.Extra4.String))
}
