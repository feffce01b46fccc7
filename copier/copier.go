package copier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/internal/backoff"
	"github.com/pgq-go/pgq/internal/logging"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/remote"
	"github.com/pgq-go/pgq/route"
)

// TargetedCopier runs one node of a targeted-copy cluster: the relay
// (a remote.RemoteConsumer from the node's push queue into the hub shards,
// exactly once) and the pull (a RemoteConsumer from the node's hub shard
// into the node, exactly once, only this node's events, selected
// server-side), as goroutines of one process. Run what else the process
// needs (a ticker, a second copier) beside it, for example with
// golang.org/x/sync/errgroup.
//
// Consumer names derive from the node id: see route.RelayConsumerName and
// route.PullConsumerName.
type TargetedCopier struct {
	cfg    Config
	log    *slog.Logger
	movers []*relay // the relays' handlers
	puller *puller

	mu     sync.Mutex               // guards relays and pull, built by Setup
	relays []*remote.RemoteConsumer // one per hub shard
	pull   *remote.RemoteConsumer

	relayed, applied, retried, parked, ignored atomic.Int64
}

// New validates cfg and builds the copier.
func New(cfg Config) (*TargetedCopier, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = logging.Default(nil).With("node", cfg.Node)
	}
	tc := &TargetedCopier{cfg: cfg, log: log, puller: &puller{}}
	tc.puller.tc = tc
	for s := range cfg.Hubs {
		tc.movers = append(tc.movers, &relay{tc: tc, shard: s, name: route.RelayConsumerName(cfg.Node, s), ensured: map[string]bool{}})
	}
	// Build the consumers once to check their configuration; Setup builds
	// them again with the tracking keys it reads from the databases.
	if err := tc.build("", nil); err != nil {
		return nil, err
	}
	return tc, nil
}

// consumerConfig is the relay's or pull's consumer configuration.
func (tc *TargetedCopier) consumerConfig(queue, name string) consumer.Config {
	return consumer.Config{Queue: queue, Name: name, Register: true, LazyFetch: tc.cfg.LazyFetch,
		PollInterval: tc.cfg.PollInterval, DisableListen: tc.cfg.DisableListen,
		ErrorBackoff: tc.cfg.ErrorBackoff, Logger: tc.log, Hooks: tc.cfg.Hooks}
}

// build makes the relay and pull consumers, tracked on their
// destinations under relayKey (every relay) and pullKeys[shard of node].
func (tc *TargetedCopier) build(relayKey string, pullKey *string) error {
	var relays []*remote.RemoteConsumer
	for s, hub := range tc.cfg.Hubs {
		r := tc.movers[s]
		rc, err := remote.New(tc.cfg.Local, hub, remote.Config{Consumer: tc.consumerConfig(tc.cfg.PushQueue, r.name),
			SubConsumer: relayKey, IdleTimeout: tc.cfg.IdleTimeout,
			AfterCommit: func(*pgq.Batch) { r.batchCommitted() }}, r)
		if err != nil {
			return fmt.Errorf("copier: node %s: %w", tc.cfg.Node, err)
		}
		relays = append(relays, rc)
	}
	cc := tc.consumerConfig(tc.pullQueue(), route.PullConsumerName(tc.cfg.Node))
	cc.Filter = pgq.Eq(pgq.FieldExtra1, tc.cfg.Node)
	if tc.cfg.HubListen != nil {
		cc.ListenConfig = tc.cfg.HubListen[route.ShardOf(tc.cfg.Node, len(tc.cfg.Hubs))]
	}
	if tc.cfg.Routing == RoutingShared && !tc.cfg.DisableListen {
		// The shared queue carries every node's rows: the pull looks only
		// when a relay rang it (or a held row is due), not on every tick.
		cc.Bell = &consumer.Bell{Channel: route.PullBell(tc.pullQueue(), tc.cfg.Node), Due: tc.puller.due}
	}
	sub := ""
	if pullKey != nil {
		sub = *pullKey
	}
	pull, err := remote.New(tc.hubOf(tc.cfg.Node), tc.cfg.Local, remote.Config{Consumer: cc, SubConsumer: sub,
		IdleTimeout: tc.cfg.IdleTimeout, AfterCommit: func(*pgq.Batch) { tc.puller.batchCommitted() }}, tc.puller)
	if err != nil {
		return fmt.Errorf("copier: node %s: %w", tc.cfg.Node, err)
	}
	tc.mu.Lock()
	tc.relays, tc.pull = relays, pull
	tc.mu.Unlock()
	return nil
}

// hubOf is the hub shard holding target's events.
func (tc *TargetedCopier) hubOf(target string) *pgxpool.Pool {
	return tc.cfg.Hubs[route.ShardOf(target, len(tc.cfg.Hubs))]
}

// pullQueue is the hub queue this node pulls from.
func (tc *TargetedCopier) pullQueue() string { return tc.queueFor(tc.cfg.Node) }

func (tc *TargetedCopier) queueFor(target string) string {
	if tc.cfg.Routing == RoutingPerTarget {
		return route.PerTargetQueue(tc.cfg.PullQueue, target)
	}
	return tc.cfg.PullQueue
}

// Stats returns the copier's counters.
func (tc *TargetedCopier) Stats() Stats {
	return Stats{Relayed: tc.relayed.Load(), Applied: tc.applied.Load(), Retried: tc.retried.Load(),
		Parked: tc.parked.Load(), Ignored: tc.ignored.Load()}
}

// Setup installs the tracking schema on the node and the hubs, creates the
// queues this node needs and registers its consumers: the push queue on
// the node, and this node's pull queue (per-target) or the shared pull
// queue on its hub shard, with its pull consumer. It is idempotent; Run
// calls it. Run Setup before producing on a node (its relay must be
// registered to see the rows), and register every target before rows are
// produced for it (or leave target registration on, the default).
func (tc *TargetedCopier) Setup(ctx context.Context) error {
	ids := make([]string, 1+len(tc.cfg.Hubs))
	for i, db := range append([]*pgxpool.Pool{tc.cfg.Local}, tc.cfg.Hubs...) {
		if err := Install(ctx, db); err != nil {
			return err
		}
		id, err := remote.Identity(ctx, db)
		if err != nil {
			return err
		}
		ids[i] = id
	}
	localID, hubIDs := ids[0], ids[1:]
	created, err := pgq.CreateQueue(ctx, tc.cfg.Local, tc.cfg.PushQueue)
	if err != nil {
		return err
	}
	if created {
		if err := pgq.SetQueueConfig(ctx, tc.cfg.Local, tc.cfg.PushQueue, tc.cfg.QueueConfig); err != nil {
			return err
		}
	}
	if err := tc.registerRelays(ctx); err != nil {
		return err
	}
	if err := tc.checkPullPlacement(ctx, hubIDs); err != nil {
		return err
	}
	// Tracking keys name the source: the relays' rows on the hubs follow
	// this node's push queue, the pull's row on the node follows its hub
	// shard's pull queue. Rows of an older version, keyed by consumer name
	// only, are adopted once.
	relayKey := TrackingKey(localID, tc.cfg.PushQueue)
	for i, r := range tc.movers {
		if err := remote.AdoptPosition(ctx, tc.cfg.Hubs[i], r.name, relayKey); err != nil {
			return err
		}
	}
	pullKey := TrackingKey(hubIDs[route.ShardOf(tc.cfg.Node, len(tc.cfg.Hubs))], tc.pullQueue())
	if err := remote.AdoptPosition(ctx, tc.cfg.Local, route.PullConsumerName(tc.cfg.Node), pullKey); err != nil {
		return err
	}
	if err := tc.build(relayKey, &pullKey); err != nil {
		return err
	}
	if err := ensureTarget(ctx, tc.hubOf(tc.cfg.Node), tc.pullQueue(), tc.cfg.Node, tc.cfg.QueueConfig); err != nil {
		return err
	}
	if tc.cfg.Routing != RoutingShared {
		return nil
	}
	// Every pull of the shared queue reads only its rows through the
	// target index; without it each scans the whole batch.
	_, err = IndexHubQueue(ctx, tc.hubOf(tc.cfg.Node), tc.pullQueue())
	if errors.Is(err, ErrHubIndexPrivilege) {
		tc.log.Warn("hub queue not indexed by target: each pull scans every node's rows (run pgqctl copy hub-index as the queue's owner)",
			"queue", tc.pullQueue(), logging.KeyErr, err)
		return nil
	}
	return err
}

// ErrReshardNeeded means the push queue has relay consumers that do not
// match the configured hubs (the number of hub shards changed, or relays
// named by an older version): starting would leave rows unrelayed or pin
// the push queue. pgqctl copy reshard (Reshard) moves positions safely.
var ErrReshardNeeded = errors.New("copier: hub shards changed; reshard first")

// registerRelays registers this node's relays, all of them or none, in
// one transaction, after checking that the relays already on the push
// queue are exactly the configured hubs' (or none: a new node). Anything
// else means the hub list changed without a reshard: a relay registered
// now would start at the latest tick and never send what is waiting, and
// a relay the list no longer uses would pin the push queue.
func (tc *TargetedCopier) registerRelays(ctx context.Context) error {
	return pgx.BeginFunc(ctx, tc.cfg.Local, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "select pg_advisory_xact_lock(hashtextextended('pgq_go.relays:' || $1 || '/' || $2, 0))",
			tc.cfg.PushQueue, tc.cfg.Node); err != nil {
			return err
		}
		names, err := relayConsumers(ctx, tx, tc.cfg.PushQueue, tc.cfg.Node)
		if err != nil {
			return err
		}
		var stray []string
		present := map[string]bool{}
		for _, n := range names {
			if shard, ok := relayShard(tc.cfg.Node, n); !ok || shard >= len(tc.cfg.Hubs) {
				stray = append(stray, n)
			} else {
				present[n] = true
			}
		}
		for _, n := range stray {
			if n == reshardGuardName(tc.cfg.Node) || n == reshardDoneName(tc.cfg.Node) {
				return fmt.Errorf("%w: a reshard of node %s is running or was interrupted (%s on %s); run `pgqctl copy reshard` again to finish it",
					ErrReshardNeeded, tc.cfg.Node, n, tc.cfg.PushQueue)
			}
		}
		if len(stray) > 0 {
			return fmt.Errorf("%w: node %s has relay consumers %v on %s that %d hub(s) do not use (a hub list changed, or a reshard did not finish); run `pgqctl copy reshard`",
				ErrReshardNeeded, tc.cfg.Node, stray, tc.cfg.PushQueue, len(tc.cfg.Hubs))
		}
		var missing []string
		for _, r := range tc.movers {
			if !present[r.name] {
				missing = append(missing, r.name)
			}
		}
		if len(present) > 0 && len(missing) > 0 {
			return fmt.Errorf("%w: node %s has %d relay(s) on %s but %d hub(s) are configured (missing %v); run `pgqctl copy reshard` so the new relays start where the old ones stopped",
				ErrReshardNeeded, tc.cfg.Node, len(present), tc.cfg.PushQueue, len(tc.cfg.Hubs), missing)
		}
		for _, name := range missing {
			if _, err := pgq.RegisterConsumer(ctx, tx, tc.cfg.PushQueue, name); err != nil {
				return err
			}
		}
		return nil
	})
}

// checkPullPlacement refuses to start when this node's pull consumer is
// registered on a hub other than its shard: its events there would wait
// forever while the node pulls from the new hub.
func (tc *TargetedCopier) checkPullPlacement(ctx context.Context, hubIDs []string) error {
	own := route.ShardOf(tc.cfg.Node, len(tc.cfg.Hubs))
	for i, hub := range tc.cfg.Hubs {
		if hubIDs[i] == hubIDs[own] {
			continue
		}
		var there bool
		if err := hub.QueryRow(ctx, `select exists (select 1 from pgq.subscription s
			join pgq.queue q on q.queue_id = s.sub_queue join pgq.consumer c on c.co_id = s.sub_consumer
			where q.queue_name = $1 and c.co_name = $2)`, tc.pullQueue(), route.PullConsumerName(tc.cfg.Node)).Scan(&there); err != nil {
			return fmt.Errorf("copier: node %s: check hub %d: %w", tc.cfg.Node, i, err)
		}
		if there {
			return fmt.Errorf("%w: node %s belongs to hub %d of %d, but %s is registered on hub %d; run `pgqctl copy reshard`",
				ErrReshardNeeded, tc.cfg.Node, own, len(tc.cfg.Hubs), route.PullConsumerName(tc.cfg.Node), i)
		}
	}
	return nil
}

// relayConsumers lists the consumers of queue that look like node's relays.
func relayConsumers(ctx context.Context, db pgq.DB, queue, node string) ([]string, error) {
	rows, err := db.Query(ctx, `select c.co_name from pgq.subscription s
		join pgq.queue q on q.queue_id = s.sub_queue join pgq.consumer c on c.co_id = s.sub_consumer
		where q.queue_name = $1 and (c.co_name = $2 or starts_with(c.co_name, $2 || '.s'))
		order by c.co_name`, queue, "relay."+node)
	if err != nil {
		return nil, fmt.Errorf("copier: list relays of node %s on %s: %w", node, queue, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("copier: list relays of node %s on %s: %w", node, queue, err)
	}
	return names, nil
}

// relayShard parses a relay consumer name of node. A node's push queue
// holds only that node's relays, so "relay.<node>.s<i>" is unambiguous
// there even for node ids containing ".s". "relay.<node>.s0" (an older
// version's name for shard 0 of several) is not a current name.
func relayShard(node, name string) (int, bool) {
	if name == "relay."+node {
		return 0, true
	}
	rest, ok := strings.CutPrefix(name, "relay."+node+".s")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n <= 0 || strconv.Itoa(n) != rest {
		return 0, false
	}
	return n, true
}

// TrackingKey is the subconsumer_id the TargetedCopier's tracking rows use:
// the source database's Identity and the source queue.
func TrackingKey(sourceID, queue string) string { return sourceID + "/" + queue }

// hubDB is a pool or a connection to a hub.
type hubDB interface {
	pgq.DB
	Begin(ctx context.Context) (pgx.Tx, error)
}

// ensureTarget creates target's pull queue if needed and registers its
// pull consumer, in a short transaction of its own, serialised with other
// nodes doing the same. It never runs inside a relay's transaction: that
// would hold one queue lock while waiting for another (deadlock between
// relays), and registering early is harmless.
func ensureTarget(ctx context.Context, hub hubDB, queue, target string, qc pgq.QueueConfig) error {
	// Lock-free check first: at start-up every relay meets every target.
	var registered bool
	if err := hub.QueryRow(ctx, `select exists (select 1 from pgq.subscription s
		join pgq.queue q on q.queue_id = s.sub_queue join pgq.consumer c on c.co_id = s.sub_consumer
		where q.queue_name = $1 and c.co_name = $2)`, queue, route.PullConsumerName(target)).Scan(&registered); err != nil {
		return err
	}
	if registered {
		return nil
	}
	tx, err := hub.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, "select pg_advisory_xact_lock(hashtextextended('pgq_go.queue:' || $1, 0))", queue); err != nil {
		return err
	}
	created, err := pgq.CreateQueue(ctx, tx, queue)
	if err != nil {
		return err
	}
	if created {
		if err := pgq.SetQueueConfig(ctx, tx, queue, qc); err != nil {
			return err
		}
	}
	if _, err = pgq.RegisterConsumer(ctx, tx, queue, route.PullConsumerName(target)); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// Run sets up the queues (Setup, retried with ErrorBackoff until it
// succeeds or fails for a reason retrying cannot fix), then runs the
// relays and the pull until ctx is cancelled (it returns nil) or one of
// them fails fatally (it stops the others and returns that error).
func (tc *TargetedCopier) Run(ctx context.Context) error {
	err := backoff.Retry(ctx, backoff.Policy(tc.cfg.ErrorBackoff), func() error { return tc.Setup(ctx) },
		func(err error) bool {
			return errors.Is(err, pgq.ErrNoExtension) || errors.Is(err, pgq.ErrInvalidName) ||
				errors.Is(err, ErrReshardNeeded) || errors.Is(err, remote.ErrTrackingSchema)
		},
		func(err error, d time.Duration) {
			tc.log.Error("targeted copy setup failed; retrying", logging.KeyErr, err, logging.KeyBackoff, d)
		})
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("copier: node %s setup: %w", tc.cfg.Node, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	launch := func(what string, run func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ctx); err != nil {
				once.Do(func() { first = fmt.Errorf("copier: node %s %s: %w", tc.cfg.Node, what, err) })
				cancel()
			}
		}()
	}
	tc.mu.Lock()
	relays, pull := tc.relays, tc.pull
	tc.mu.Unlock()
	for i, r := range relays {
		launch(fmt.Sprintf("relay to hub %d", i), r.Run)
	}
	launch("pull", pull.Run)
	wg.Wait()
	return first
}
