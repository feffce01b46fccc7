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

	mu      sync.Mutex
	ensured map[string]bool // targets whose registration on the hub is committed

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
	r.pending = pullCounts{} // relayed events count as applied
	shards := len(tc.cfg.Hubs)
	bufs := map[string][]pgq.EventData{}
	buffered := 0
	bufBytes := int64(0)
	newTargets := map[string]string{} // target → its hub queue, first met since the last flush
	rung := map[string]bool{}         // targets whose pull this batch rings (RoutingShared)
	var bells []string
	flushAll := func() error {
		// Register first: registration creates a target's queue, and it
		// must happen before the hub transaction commits, so the target's
		// pull consumer starts at a tick that does not yet see these
		// events (they reach it even if it never ran).
		if err := r.register(ctx, hub, newTargets); err != nil {
			return err
		}
		clear(newTargets)
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
		if tc.cfg.Routing == RoutingShared && !rung[target] {
			rung[target] = true
			bells = append(bells, route.PullBell(queue, target))
		}
		if !tc.cfg.NoTargetRegistration && !r.isEnsured(target) {
			newTargets[target] = queue
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
	if r.pending.applied == 0 {
		return nil
	}
	// Ring the pulls of the targets written to, in the transaction that
	// writes their rows (a pull of the shared queue looks for a batch only
	// when rung: consumer.Bell), and ask the hub's ticker for a tick.
	return ringHub(ctx, hub, bells...)
}

// ringHub, in the hub transaction tx that wrote rows, asks the ticker for
// a tick (pgq.TickRequestChannel) and rings pull bells (route.PullBell)
// with tx's txid.
func ringHub(ctx context.Context, tx pgx.Tx, bells ...string) error {
	_, err := tx.Exec(ctx, `select pg_notify($1, '') union all
		select pg_notify(b, txid_current()::text) from unnest($2::text[]) b`, pgq.TickRequestChannel, bells)
	return err
}

// register ensures, on the relay's hub, the targets a batch met for the
// first time (target → queue): one query, in the relay's own hub
// transaction (tx; it only reads), finds those whose pull consumer is
// missing, and only those are registered (ensureTarget). Registering runs
// on a connection of its own, opened for the call: the relay already holds
// one of the hub pool's connections for its batch, and taking a second
// from the pool can deadlock when every connection is held by a relay
// waiting for another. At start-up every relay meets every target; with
// one query per batch and at most maxRegistrationConns such connections
// per hub and process, hundreds of relays do not flood the hub.
func (r *relay) register(ctx context.Context, tx pgx.Tx, targets map[string]string) error {
	if len(targets) == 0 {
		return nil
	}
	names, queues, pulls := make([]string, 0, len(targets)), make([]string, 0, len(targets)), make([]string, 0, len(targets))
	for t, q := range targets {
		names, queues, pulls = append(names, t), append(queues, q), append(pulls, route.PullConsumerName(t))
	}
	rows, err := tx.Query(ctx, sqlMissingTargets, names, queues, pulls)
	if err != nil {
		return fmt.Errorf("register targets on hub %d: %w", r.shard, err)
	}
	missing, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("register targets on hub %d: %w", r.shard, err)
	}
	if len(missing) > 0 {
		if err := r.ensureTargets(ctx, targets, missing); err != nil {
			return err
		}
	}
	r.mu.Lock()
	for t := range targets {
		r.ensured[t] = true
	}
	r.mu.Unlock()
	return nil
}

// ensureTargets registers the missing targets, on a connection of its
// own (see register).
func (r *relay) ensureTargets(ctx context.Context, targets map[string]string, missing []string) error {
	hub := r.tc.cfg.Hubs[r.shard]
	slots := registrationSlots(hub)
	select {
	case slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-slots }()
	conn, err := pgx.ConnectConfig(ctx, hub.Config().ConnConfig.Copy())
	if err != nil {
		return fmt.Errorf("register targets on hub %d: %w", r.shard, err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	for _, t := range missing {
		if err := ensureTarget(ctx, conn, targets[t], t, r.tc.cfg.QueueConfig); err != nil {
			return fmt.Errorf("register target %s on hub %d: %w", t, r.shard, err)
		}
	}
	r.tc.log.Debug("targets registered on hub", "shard", r.shard, "targets", missing)
	return nil
}

// sqlMissingTargets returns the targets (of parallel arrays target,
// queue, pull consumer) whose pull consumer is not registered on their
// queue.
const sqlMissingTargets = `select t.target from unnest($1::text[], $2::text[], $3::text[]) as t(target, queue, pull)
	where not exists (select 1 from pgq.subscription s
		join pgq.queue q on q.queue_id = s.sub_queue join pgq.consumer c on c.co_id = s.sub_consumer
		where q.queue_name = t.queue and c.co_name = t.pull)`

// maxRegistrationConns bounds the registration connections the relays of
// one process open to one hub at once. A relay waiting for a slot holds no
// slot, and a registration connection waits for nothing a relay holds.
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
