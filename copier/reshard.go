package copier

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/pgq-go/pgq/internal/logging"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/remote"
	"github.com/pgq-go/pgq/route"
)

// ReshardConfig configures Reshard: a cluster's nodes and its hub shards
// before and after.
type ReshardConfig struct {
	// Nodes are every node of the cluster: node id → node database.
	// Required. A target whose hub shard changes must be listed (its
	// applied position on the node decides what is moved).
	Nodes map[string]*pgxpool.Pool
	// OldHubs are the hub shards the copiers ran with, in their order.
	// Required.
	OldHubs []*pgxpool.Pool
	// NewHubs are the hub shards the copiers will run with. Required. A
	// hub is recognised by its Identity, not its position: a hub listed in
	// both keeps what it holds.
	NewHubs []*pgxpool.Pool
	// PushQueue, PullQueue and Routing are the copiers' (Config).
	// Defaults "push_queue", "pull_queue", RoutingShared.
	PushQueue string
	PullQueue string
	Routing   Routing
	// QueueConfig is applied to the pull queues Reshard creates on the new
	// hubs (Config.QueueConfig).
	QueueConfig pgq.QueueConfig
	// Logger receives progress (Info) and problems. Default: slog.Default()
	// with records below Warn discarded.
	Logger *slog.Logger
	// ErrorBackoff is the pause after a failed relay or move batch, which
	// is then tried again (as by a copier) until ctx ends. Default 100ms
	// doubling up to 5s.
	ErrorBackoff consumer.Backoff
}

// NodeReshard is what Reshard did for one node.
type NodeReshard struct {
	Node string
	// Cut is the push queue tick at which relaying switched from the old
	// hubs to the new ones: events up to it went through the old relays,
	// later ones go through the new.
	Cut int64
	// Resumed: an earlier, interrupted Reshard had fixed Cut; this run
	// completed it.
	Resumed bool
	// Relayed counts the events the old relays carried to the cut.
	Relayed int64
	// Registered, Kept and Unregistered name the relay consumers on the
	// push queue: registered at the cut, kept (already there, at the cut),
	// unregistered (not used by the new hubs, or a legacy name).
	Registered, Kept, Unregistered []string
	// OldHub and NewHub are the node's hub shard (as a target) before and
	// after, as indexes into OldHubs and NewHubs.
	OldHub, NewHub int
	// PullMoved: the new hub is another database, and the node's not yet
	// applied events were moved there (Moved of them; MovedBatches batches).
	PullMoved    bool
	Moved        int64
	MovedBatches int64
}

// ReshardReport is Reshard's result, one entry per node, sorted by node id.
type ReshardReport struct {
	Nodes []NodeReshard
}

// ErrReshardRefused means Reshard found a state it cannot reshard safely
// (consumers that do not match the old hub list, a target it was not
// told about); it changed nothing. The error says what to do.
var ErrReshardRefused = errors.New("copier: reshard refused")

// reshardGuardName is a consumer Reshard registers on a node's push queue
// for as long as it works on the node. Its position is the node's cut,
// which a run interrupted by a crash thus hands to the next run, and its
// name is one the TargetedCopier does not use: Setup refuses to start next
// to it (ErrReshardNeeded), so no copier runs in a half-resharded cluster.
func reshardGuardName(node string) string { return "relay." + node + ".s-reshard" }

// reshardDoneName marks, on every node, that the work is done and only the
// guards and these markers are left to remove: a run interrupted then
// knows that nodes without a guard are finished, not yet to be cut.
func reshardDoneName(node string) string { return "relay." + node + ".s-resharded" }

// Reshard changes the hub shards of a targeted-copy cluster without losing
// or repeating a row, while producers keep writing. Every copier of the
// cluster must be stopped; start them with NewHubs afterwards.
//
//  1. Per node: a cut is fixed on its push queue (a forced tick, recorded
//     by a guard consumer), and every relay of the old layout (including
//     the legacy name "relay.<node>.s0") relays, to the old hubs, exactly
//     the events up to the cut.
//  2. Per target whose hub shard is another database afterwards: its pull
//     queue and consumer are created on the new hub, and the events it has
//     not applied yet (its retry events included) are copied there from
//     the old hub, in order, exactly once (a RemoteConsumer tracked on the
//     new hub; batches the node has applied already, per its own tracking,
//     are skipped); then its pull consumer on the old hub is unregistered.
//  3. Per node: the relays of the new layout are registered at the cut
//     (an old relay with the same name is already there and is kept), the
//     others unregistered, and the guard removed.
//
// Every step is idempotent and exactly once: after a crash or an error,
// run Reshard again with the same arguments and it completes the work.
// It refuses (ErrReshardRefused), before changing anything, consumers that
// do not match OldHubs. Relay and move batches that fail are retried until
// ctx ends.
func Reshard(ctx context.Context, cfg ReshardConfig) (*ReshardReport, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	rs := &resharder{cfg: cfg, log: cfg.Logger}
	if err := rs.plan(ctx); err != nil {
		return nil, err
	}
	if rs.finishing {
		rs.log.Info("reshard: an interrupted run had switched every node; removing its markers")
		return rs.report(), rs.finish(ctx)
	}
	for _, step := range []struct {
		point string
		do    func(context.Context, *nodeState) error
	}{{"cut", rs.fixCut}, {"relayed", rs.relayToCut}, {"moved", rs.movePull}, {"switched", rs.switchRelays}} {
		for _, n := range rs.nodes {
			if err := step.do(ctx, n); err != nil {
				return rs.report(), err
			}
			reshardPoint(step.point, n.id)
		}
	}
	return rs.report(), rs.finish(ctx)
}

// testHookReshard, when set, is called at named points of Reshard (a test
// cancels the context there to interrupt it).
var testHookReshard func(point, node string)

func reshardPoint(point, node string) {
	if testHookReshard != nil {
		testHookReshard(point, node)
	}
}

// finish removes the guards once every node is switched: first a done
// marker on every node, then the guards, then the markers.
func (rs *resharder) finish(ctx context.Context) error {
	q := rs.cfg.PushQueue
	if !rs.finishing {
		for _, n := range rs.nodes {
			if _, err := pgq.RegisterConsumer(ctx, n.db, q, reshardDoneName(n.id)); err != nil {
				return fmt.Errorf("copier: reshard: node %s: %w", n.id, err)
			}
			reshardPoint("marked", n.id)
		}
	}
	for _, name := range []func(string) string{reshardGuardName, reshardDoneName} {
		for _, n := range rs.nodes {
			if _, err := pgq.UnregisterConsumer(ctx, n.db, q, name(n.id)); err != nil {
				return fmt.Errorf("copier: reshard: node %s: %w", n.id, err)
			}
			reshardPoint("unmarked", n.id)
		}
	}
	return nil
}

func (c ReshardConfig) withDefaults() ReshardConfig {
	c.PushQueue, c.PullQueue, c.Routing = layoutDefaults(c.PushQueue, c.PullQueue, c.Routing)
	c.Logger = logging.Default(c.Logger)
	if c.ErrorBackoff.Initial == 0 {
		c.ErrorBackoff = consumer.Backoff{Initial: 100 * time.Millisecond, Max: 5 * time.Second, Multiplier: 2}
	}
	return c
}

// warnHandler passes records of level Warn and above.
func (c ReshardConfig) validate() error {
	var errs []error
	if len(c.Nodes) == 0 {
		errs = append(errs, errors.New("copier: ReshardConfig.Nodes needs at least one node"))
	}
	for n, db := range c.Nodes {
		if err := route.ValidateNode(n); err != nil {
			errs = append(errs, fmt.Errorf("copier: ReshardConfig.Nodes: %w", err))
		}
		if db == nil {
			errs = append(errs, fmt.Errorf("copier: ReshardConfig.Nodes[%q] is nil", n))
		}
	}
	for _, hs := range []struct {
		field string
		hubs  []*pgxpool.Pool
	}{{"OldHubs", c.OldHubs}, {"NewHubs", c.NewHubs}} {
		if len(hs.hubs) == 0 {
			errs = append(errs, fmt.Errorf("copier: ReshardConfig.%s needs at least one hub", hs.field))
		}
		for i, h := range hs.hubs {
			if h == nil {
				errs = append(errs, fmt.Errorf("copier: ReshardConfig.%s[%d] is nil", hs.field, i))
			}
		}
	}
	for _, q := range []struct{ field, v string }{{"PushQueue", c.PushQueue}, {"PullQueue", c.PullQueue}} {
		if err := pgq.ValidateName("queue", q.v); err != nil {
			errs = append(errs, fmt.Errorf("copier: ReshardConfig.%s: %w", q.field, err))
		}
	}
	switch c.Routing {
	case RoutingShared:
	case RoutingPerTarget:
		if err := pgq.ValidateName("queue", route.PerTargetQueue(c.PullQueue, strings.Repeat("n", route.MaxNodeLen))); err != nil {
			errs = append(errs, fmt.Errorf("copier: ReshardConfig.PullQueue %q is too long for per-target routing: %w", c.PullQueue, err))
		}
	default:
		errs = append(errs, fmt.Errorf("copier: ReshardConfig.Routing: unknown %v", c.Routing))
	}
	return errors.Join(errs...)
}

// noApplier stands in for the Applier of the copiers Reshard builds to
// run relays: Reshard never pulls.
type noApplier struct{}

func (noApplier) Apply(context.Context, pgx.Tx, *pgq.Event) error {
	return errors.New("copier: reshard does not apply rows")
}

// hubRef is a hub shard of one layout.
type hubRef struct {
	db *pgxpool.Pool
	id string // Identity
}

// nodeState is Reshard's plan and progress for one node.
type nodeState struct {
	id       string // node id
	db       *pgxpool.Pool
	identity string
	relayKey string // tracking key of its relays on the hubs

	resumed  bool             // a guard was there: an earlier run fixed cut
	done     bool             // a done marker was there (see reshardDoneName)
	cut      int64            // push queue tick of the cut (0 until fixed)
	relays   map[string]int64 // relay consumers on the push queue → last tick
	oldNames []string         // the old layout's relays, by shard (legacy name for shard 0 if present)
	newNames []string         // the new layout's relays, by shard

	oldHub, newHub int
	rep            NodeReshard
}

type resharder struct {
	cfg      ReshardConfig
	log      *slog.Logger
	old, new []hubRef
	nodes    []*nodeState
	byID     map[string]*nodeState
	// finishing: an interrupted run had switched every node (a done
	// marker is left somewhere); only its markers remain to remove.
	finishing bool
}

func (rs *resharder) report() *ReshardReport {
	rep := &ReshardReport{}
	for _, n := range rs.nodes {
		r := n.rep
		r.Node, r.Cut, r.Resumed, r.OldHub, r.NewHub = n.id, n.cut, n.resumed, n.oldHub, n.newHub
		rep.Nodes = append(rep.Nodes, r)
	}
	return rep
}

// queueFor is target's hub queue.
func (rs *resharder) queueFor(target string) string {
	if rs.cfg.Routing == RoutingPerTarget {
		return route.PerTargetQueue(rs.cfg.PullQueue, target)
	}
	return rs.cfg.PullQueue
}

// plan reads the cluster and refuses inconsistent input before anything
// changes.
func (rs *resharder) plan(ctx context.Context) error {
	cfg := rs.cfg
	hubIDs := map[string]bool{}
	for _, l := range []struct {
		field string
		in    []*pgxpool.Pool
		out   *[]hubRef
	}{{"OldHubs", cfg.OldHubs, &rs.old}, {"NewHubs", cfg.NewHubs, &rs.new}} {
		seen := map[string]int{}
		for i, db := range l.in {
			id, err := prepareDB(ctx, db)
			if err != nil {
				return fmt.Errorf("copier: reshard: %s[%d]: %w", l.field, i, err)
			}
			if j, dup := seen[id]; dup {
				return fmt.Errorf("%w: %s[%d] and %s[%d] are the same database (identity %s)", ErrReshardRefused, l.field, j, l.field, i, id)
			}
			seen[id] = i
			hubIDs[id] = true
			*l.out = append(*l.out, hubRef{db, id})
		}
	}
	ids := make([]string, 0, len(cfg.Nodes))
	for id := range cfg.Nodes {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	rs.byID = map[string]*nodeState{}
	nodeIDs := map[string]string{}
	for _, id := range ids {
		db := cfg.Nodes[id]
		identity, err := prepareDB(ctx, db)
		if err != nil {
			return fmt.Errorf("copier: reshard: node %s: %w", id, err)
		}
		if other, dup := nodeIDs[identity]; dup {
			return fmt.Errorf("%w: nodes %s and %s are the same database (identity %s)", ErrReshardRefused, other, id, identity)
		}
		nodeIDs[identity] = id
		n := &nodeState{id: id, db: db, identity: identity, relayKey: TrackingKey(identity, cfg.PushQueue),
			oldHub: route.ShardOf(id, len(rs.old)), newHub: route.ShardOf(id, len(rs.new))}
		if err := rs.readNode(ctx, n); err != nil {
			return err
		}
		rs.finishing = rs.finishing || n.done
		rs.nodes = append(rs.nodes, n)
		rs.byID[id] = n
	}
	if rs.finishing {
		return nil
	}
	for _, n := range rs.nodes {
		if err := rs.checkRelays(n); err != nil {
			return err
		}
	}
	return rs.checkPulls(ctx)
}

// prepareDB checks a database has pgq, installs the tracking schema and
// returns its identity.
func prepareDB(ctx context.Context, db *pgxpool.Pool) (string, error) {
	if err := pgq.CheckExtension(ctx, db); err != nil {
		return "", err
	}
	if err := remote.Install(ctx, db); err != nil {
		return "", err
	}
	return remote.Identity(ctx, db)
}

// readNode reads a node's relays and Reshard's markers.
func (rs *resharder) readNode(ctx context.Context, n *nodeState) error {
	cfg := rs.cfg
	if _, err := pgq.GetQueueInfo(ctx, n.db, cfg.PushQueue); err != nil {
		return fmt.Errorf("copier: reshard: node %s: push queue %s: %w", n.id, cfg.PushQueue, err)
	}
	cs, err := pgq.ListConsumers(ctx, n.db, cfg.PushQueue)
	if err != nil {
		return fmt.Errorf("copier: reshard: node %s: %w", n.id, err)
	}
	n.relays = map[string]int64{}
	guard := reshardGuardName(n.id)
	prefix := "relay." + n.id
	for _, c := range cs {
		switch {
		case c.Name == guard:
			n.resumed, n.cut = true, c.LastTick
		case c.Name == reshardDoneName(n.id):
			n.done = true
		case c.Name == prefix || strings.HasPrefix(c.Name, prefix+".s"):
			n.relays[c.Name] = c.LastTick
		}
	}
	legacy := prefix + ".s0"
	for s := range rs.old {
		name := route.RelayConsumerName(n.id, s)
		if s == 0 && len(rs.old) > 1 {
			if _, ok := n.relays[legacy]; ok {
				name = legacy
			}
		}
		n.oldNames = append(n.oldNames, name)
	}
	for s := range rs.new {
		n.newNames = append(n.newNames, route.RelayConsumerName(n.id, s))
	}
	return nil
}

// checkRelays checks a node's relays against the old layout (and, for a
// run interrupted after the cut, the new one).
func (rs *resharder) checkRelays(n *nodeState) error {
	cfg := rs.cfg
	prefix, legacy := "relay."+n.id, "relay."+n.id+".s0"
	var stray []string
	for name, tick := range n.relays {
		switch {
		case slices.Contains(n.oldNames, name):
			if n.resumed && tick > n.cut {
				return fmt.Errorf("%w: node %s: relay %s is at tick %d, past the cut %d of an interrupted reshard: a copier ran meanwhile",
					ErrReshardRefused, n.id, name, tick, n.cut)
			}
		case n.resumed && slices.Contains(n.newNames, name) && tick == n.cut:
			// Registered at the cut by the interrupted run.
		default:
			stray = append(stray, fmt.Sprintf("%s (tick %d)", name, tick))
		}
	}
	if len(stray) > 0 {
		sort.Strings(stray)
		hint := ""
		if _, ok := n.relays[legacy]; ok {
			if _, both := n.relays[prefix]; both {
				hint = fmt.Sprintf("; %s and %s both exist: one is an orphan of a shard change made without reshard, whose unrelayed rows were skipped; "+
					"check which one the running layout used, then unregister the other (pgqctl consumer unregister)", prefix, legacy)
			}
		}
		return fmt.Errorf("%w: node %s has relay consumers %s on %s that the %d old hub(s) do not account for: is the --old-hub list the copiers' (in order)?%s",
			ErrReshardRefused, n.id, strings.Join(stray, ", "), cfg.PushQueue, len(rs.old), hint)
	}
	return nil
}

// pullSub is a pull consumer found on a hub.
type pullSub struct {
	target, queue string
}

// hubPulls lists the pull consumers on a hub: "pull.<target>" on the
// shared pull queue, or on "<pull queue>.<target>".
func (rs *resharder) hubPulls(ctx context.Context, db *pgxpool.Pool) ([]pullSub, error) {
	rows, err := db.Query(ctx, `select q.queue_name, substr(c.co_name, 6) from pgq.subscription s
		join pgq.queue q on q.queue_id = s.sub_queue join pgq.consumer c on c.co_id = s.sub_consumer
		where starts_with(c.co_name, 'pull.')
		  and (q.queue_name = $1 or ($2 and q.queue_name = $1 || '.' || substr(c.co_name, 6)))
		order by 2`, rs.cfg.PullQueue, rs.cfg.Routing == RoutingPerTarget)
	if err != nil {
		return nil, err
	}
	var out []pullSub
	var p pullSub
	_, err = pgx.ForEachRow(rows, []any{&p.queue, &p.target}, func() error {
		if rs.queueFor(p.target) == p.queue {
			out = append(out, p)
		}
		return nil
	})
	return out, err
}

// checkPulls refuses pull consumers Reshard would strand: a target whose
// hub changes but that is not a given node, or a pull on a hub that is
// not its target's (an orphan of an earlier shard change).
func (rs *resharder) checkPulls(ctx context.Context) error {
	type hubSeen struct {
		ref   hubRef
		label string
	}
	var hubs []hubSeen
	seen := map[string]bool{}
	for i, h := range rs.old {
		hubs = append(hubs, hubSeen{h, fmt.Sprintf("old hub %d", i)})
		seen[h.id] = true
	}
	for i, h := range rs.new {
		if !seen[h.id] {
			hubs = append(hubs, hubSeen{h, fmt.Sprintf("new hub %d", i)})
		}
	}
	var problems []string
	for _, h := range hubs {
		pulls, err := rs.hubPulls(ctx, h.ref.db)
		if err != nil {
			return fmt.Errorf("copier: reshard: %s: list pull consumers: %w", h.label, err)
		}
		for _, p := range pulls {
			oldID := rs.old[route.ShardOf(p.target, len(rs.old))].id
			newID := rs.new[route.ShardOf(p.target, len(rs.new))].id
			n := rs.byID[p.target]
			switch {
			case h.ref.id == oldID && (oldID == newID || n != nil):
				// Its shard: stays, or is moved.
			case h.ref.id == newID && n != nil && n.resumed:
				// Registered there by an interrupted run.
			case h.ref.id == oldID:
				problems = append(problems, fmt.Sprintf("target %s (pull consumer on %s) moves to another hub but is not given as a node", p.target, h.label))
			default:
				problems = append(problems, fmt.Sprintf("%s has %s on %s although %s's old hub is another: an orphan of a shard change made without reshard (unregister it once its rows are accounted for)",
					h.label, route.PullConsumerName(p.target), p.queue, p.target))
			}
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrReshardRefused, strings.Join(problems, "; "))
	}
	return nil
}

// fixCut forces a tick on the node's push queue (every row committed so
// far is in it) and records it as the cut with the guard consumer; an
// interrupted run's cut is kept.
func (rs *resharder) fixCut(ctx context.Context, n *nodeState) error {
	if n.resumed {
		rs.log.Info("reshard: resuming node at its recorded cut", "node", n.id, "cut", n.cut)
		return nil
	}
	q := rs.cfg.PushQueue
	tick, err := tickNow(ctx, n.db, q)
	if err != nil {
		return fmt.Errorf("copier: reshard: node %s: tick %s: %w", n.id, q, err)
	}
	if err := pgq.RegisterConsumerAt(ctx, n.db, q, reshardGuardName(n.id), tick); err != nil {
		return fmt.Errorf("copier: reshard: node %s: record the cut: %w", n.id, err)
	}
	n.cut = tick
	rs.log.Info("reshard: cut fixed", "node", n.id, "queue", q, "cut", tick)
	return nil
}

// tickNow makes a tick on queue that is younger than the call, and
// returns its id. A ticker daemon may run at the same time (pgqd, the
// ticker package): should its pgq.ticker() take the tick force_tick asked
// for, pgq.ticker(queue) makes none, and the daemon's tick is the one.
func tickNow(ctx context.Context, db *pgxpool.Pool, queue string) (int64, error) {
	for range 10 {
		before, err := pgq.ForceTick(ctx, db, queue)
		if err != nil {
			return 0, err
		}
		var id *int64
		if err := db.QueryRow(ctx, "select pgq.ticker($1)", queue).Scan(&id); err != nil {
			return 0, fmt.Errorf("tick %s: %w", queue, err)
		}
		if id != nil {
			return *id, nil
		}
		var latest int64
		if err := db.QueryRow(ctx, `select coalesce(max(t.tick_id), 0) from pgq.tick t
			join pgq.queue q on q.queue_id = t.tick_queue where q.queue_name = $1`, queue).Scan(&latest); err != nil {
			return 0, fmt.Errorf("tick %s: %w", queue, err)
		}
		if latest > before {
			return latest, nil
		}
	}
	return 0, fmt.Errorf("tick %s: no tick made (is its ticker paused, or external?)", queue)
}

// relayToCut runs every relay of the old layout until it has relayed
// exactly the events up to the cut. Batches without batch collection end
// on consecutive ticks, so a relay behind the cut reaches it exactly.
func (rs *resharder) relayToCut(ctx context.Context, n *nodeState) error {
	cfg := rs.cfg
	var hubs []*pgxpool.Pool
	for _, h := range rs.old {
		hubs = append(hubs, h.db)
	}
	tc, err := New(Config{Node: n.id, Local: n.db, Hubs: hubs, PushQueue: cfg.PushQueue,
		PullQueue: cfg.PullQueue, Routing: cfg.Routing, Applier: noApplier{}, QueueConfig: cfg.QueueConfig,
		Logger: rs.log})
	if err != nil {
		return fmt.Errorf("copier: reshard: node %s: %w", n.id, err)
	}
	for shard, name := range n.oldNames {
		tick, ok := n.relays[name]
		if !ok || tick == n.cut {
			continue
		}
		r := &relay{tc: tc, shard: shard, name: name, ensured: map[string]bool{}}
		before := tc.relayed.Load()
		// A relay's row of an older version (keyed by name only) is
		// adopted first, as the copier's Setup would.
		err := remote.AdoptPosition(ctx, rs.old[shard].db, name, n.relayKey)
		if err == nil {
			err = rs.runToTick(ctx, n.db, rs.old[shard].db, cfg.PushQueue, name, n.relayKey, nil, n.cut, r,
				func(*pgq.Batch) { r.batchCommitted() })
		}
		n.rep.Relayed += tc.relayed.Load() - before
		if err != nil {
			return fmt.Errorf("copier: reshard: node %s: relay %s to old hub %d up to the cut %d: %w", n.id, name, shard, n.cut, err)
		}
		n.relays[name] = n.cut
		rs.log.Info("reshard: relay at the cut", "node", n.id, "relay", name, "hub", shard, "cut", n.cut)
	}
	return nil
}

// runToTick runs a RemoteConsumer of queue on src as name, applying to dst
// under the tracking key (name, sub), until it has finished the batch
// ending at tick; then it checks the consumer is exactly there.
func (rs *resharder) runToTick(ctx context.Context, src, dst *pgxpool.Pool, queue, name, sub string, filter *pgq.Filter, tick int64,
	h remote.Handler, afterCommit func(*pgq.Batch)) error {
	info, err := pgq.GetConsumerInfo(ctx, src, queue, name)
	if err != nil {
		return err
	}
	if info.LastTick == tick {
		return nil
	}
	if info.LastTick > tick {
		return fmt.Errorf("%s/%s is at tick %d, past %d", queue, name, info.LastTick, tick)
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cc := consumer.Config{Queue: queue, Name: name, DisableListen: true, PollInterval: 100 * time.Millisecond,
		ErrorBackoff: rs.cfg.ErrorBackoff, Logger: rs.log,
		Hooks: consumer.Hooks{OnBatch: func(st consumer.BatchStats) {
			if st.TickID >= tick {
				cancel() // Run checks its context before the next batch
			}
		}}}
	if filter != nil {
		cc.Filter = *filter
	}
	rc, err := remote.New(src, dst, remote.Config{Consumer: cc, SubConsumer: sub, AfterCommit: afterCommit}, h)
	if err != nil {
		return err
	}
	if err := rc.Run(rctx); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if info, err = pgq.GetConsumerInfo(ctx, src, queue, name); err != nil {
		return err
	}
	if info.LastTick != tick {
		return fmt.Errorf("%s/%s stopped at tick %d instead of %d", queue, name, info.LastTick, tick)
	}
	return nil
}

// movePull moves the node's pull, as a target, to its new hub when that
// is another database: registers it there, copies its not yet applied
// events from the old hub in order and exactly once, and unregisters it
// from the old hub. Every relay is at its cut by now, so nothing else
// writes to either hub.
func (rs *resharder) movePull(ctx context.Context, n *nodeState) error {
	from, to := rs.old[n.oldHub], rs.new[n.newHub]
	qA, qB := rs.queueFor(n.id), rs.queueFor(n.id)
	pull := route.PullConsumerName(n.id)
	if err := ensureTarget(ctx, to.db, qB, n.id, rs.cfg.QueueConfig); err != nil {
		return fmt.Errorf("copier: reshard: node %s: register %s on new hub %d: %w", n.id, pull, n.newHub, err)
	}
	if from.id == to.id {
		return nil
	}
	n.rep.PullMoved = true
	if _, err := pgq.GetConsumerInfo(ctx, from.db, qA, pull); err != nil {
		if errors.Is(err, pgq.ErrNotRegistered) || errors.Is(err, pgq.ErrQueueNotFound) {
			return nil // never registered there, or moved by an interrupted run
		}
		return fmt.Errorf("copier: reshard: node %s: old hub %d: %w", n.id, n.oldHub, err)
	}
	// The node's retried events wait in the old hub's retry queue: make
	// them due and move them back into the queue, then tick, so that the
	// move sees every event the node has not applied.
	if _, err := from.db.Exec(ctx, `update pgq.retry_queue r set ev_retry_after = least(r.ev_retry_after, now())
		from pgq.subscription s join pgq.queue q on q.queue_id = s.sub_queue join pgq.consumer c on c.co_id = s.sub_consumer
		where q.queue_name = $1 and c.co_name = $2 and r.ev_owner = s.sub_id and r.ev_queue = q.queue_id`, qA, pull); err != nil {
		return fmt.Errorf("copier: reshard: node %s: old hub %d: make retries due: %w", n.id, n.oldHub, err)
	}
	if _, err := pgq.MaintRetryEvents(ctx, from.db); err != nil {
		return fmt.Errorf("copier: reshard: node %s: old hub %d: %w", n.id, n.oldHub, err)
	}
	last, err := tickNow(ctx, from.db, qA)
	if err != nil {
		return fmt.Errorf("copier: reshard: node %s: old hub %d: %w", n.id, n.oldHub, err)
	}
	// Tracking key of the node's pull for the old hub; a row of an older
	// version is adopted first, as the copier's Setup would.
	nodeKey := TrackingKey(from.id, qA)
	if err := remote.AdoptPosition(ctx, n.db, pull, nodeKey); err != nil {
		return fmt.Errorf("copier: reshard: node %s: %w", n.id, err)
	}
	m := &pullMover{node: n.db, pull: pull, nodeKey: nodeKey, queue: qB}
	if rs.cfg.Routing == RoutingShared {
		m.bell = route.PullBell(qB, n.id)
	}
	filter := pgq.Eq(pgq.FieldExtra1, n.id)
	err = rs.runToTick(ctx, from.db, to.db, qA, pull, "reshard:"+nodeKey, &filter, last, m, nil)
	n.rep.Moved += m.moved
	n.rep.MovedBatches += m.batches
	if err != nil {
		return fmt.Errorf("copier: reshard: node %s: move %s from old hub %d to new hub %d: %w", n.id, pull, n.oldHub, n.newHub, err)
	}
	if _, err := pgq.UnregisterConsumer(ctx, from.db, qA, pull); err != nil {
		return fmt.Errorf("copier: reshard: node %s: old hub %d: %w", n.id, n.oldHub, err)
	}
	if rs.cfg.Routing == RoutingPerTarget {
		// The node's own queue on the old hub is empty of work now.
		if err := pgq.DropQueue(ctx, from.db, qA, false); err != nil {
			rs.log.Warn("reshard: could not drop the old per-target queue", "node", n.id, "queue", qA, logging.KeyErr, err)
		}
	}
	rs.log.Info("reshard: pull moved", "node", n.id, "from", n.oldHub, "to", n.newHub, "events", m.moved)
	return nil
}

// pullMover copies a target's events from its old hub's queue into its new
// hub's queue, skipping what the node has applied already.
type pullMover struct {
	node    *pgxpool.Pool
	pull    string // the node's pull consumer
	nodeKey string // its tracking key for the old hub
	queue   string // the target's queue on the new hub
	bell    string // its pull's bell there (RoutingShared)

	moved, batches int64
}

func (m *pullMover) ProcessRemoteBatch(ctx context.Context, b *pgq.Batch, dst pgx.Tx) error {
	// The node may be ahead of the old hub: it applied a batch whose
	// finish on the hub was lost (a crash after its commit). Such a batch
	// is not moved, except the events it tagged for retry, which the node
	// has not applied.
	st, err := remote.CheckBatch(ctx, m.node, m.pull, m.nodeKey, b.Info)
	if err != nil {
		return fmt.Errorf("read the node's position: %w", err)
	}
	applied, tags := st.Applied, st.RetryTags
	if st.Overlap {
		// The node applied the first ticks of this batch under another
		// batch id: reposition, as the pull itself would, and go on.
		if err := pgq.RegisterConsumerAt(ctx, b.DB(), b.Queue, m.pull, st.PositionTick); err != nil {
			return err
		}
		return fmt.Errorf("batch %d covers ticks %d..%d, of which the node applied %d..%d; %s moved to tick %d",
			b.ID(), b.Info.PrevTickID, b.Info.TickID, b.Info.PrevTickID, st.PositionTick, m.pull, st.PositionTick)
	}
	if applied && len(tags) == 0 {
		m.batches++
		return nil
	}
	var rerr error
	events := func(yield func(pgq.EventData) bool) {
		for ev, err := range b.Events(ctx) {
			if err != nil {
				rerr = err
				return
			}
			if _, tagged := tags[ev.ID]; applied && !tagged {
				continue
			}
			if !yield(ev.EventData) {
				return
			}
		}
	}
	n, err := pgq.InsertEvents(ctx, dst, m.queue, iter.Seq[pgq.EventData](events))
	if rerr != nil {
		return rerr
	}
	if err != nil {
		return err
	}
	m.moved += n
	m.batches++
	if n > 0 {
		if err := ringHub(ctx, dst, bellOf(m.bell)...); err != nil {
			return err
		}
		reshardPoint("moving", m.pull)
	}
	return nil
}

// switchRelays registers the new layout's relays at the cut, unregisters
// the old ones it does not use, and removes the guard.
func (rs *resharder) switchRelays(ctx context.Context, n *nodeState) error {
	q := rs.cfg.PushQueue
	var cutTime time.Time
	if err := n.db.QueryRow(ctx, `select t.tick_time from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue
		where q.queue_name = $1 and t.tick_id = $2`, q, n.cut).Scan(&cutTime); err != nil {
		return fmt.Errorf("copier: reshard: node %s: cut tick %d on %s: %w", n.id, n.cut, q, err)
	}
	for shard, name := range n.newNames {
		// A position on the new hub past the cut would make the relay skip
		// rows as done. Positions only grow with ticks, so this means the
		// push queue's history is not what this hub saw.
		pos, found, err := remote.LastPosition(ctx, rs.new[shard].db, name, n.relayKey)
		if err != nil {
			return fmt.Errorf("copier: reshard: node %s: new hub %d: %w", n.id, shard, err)
		}
		if found && pos.TickID > n.cut && !pos.TickTime.Before(cutTime) {
			return fmt.Errorf("%w: node %s: new hub %d records relay %s at tick %d, past the cut %d",
				ErrReshardRefused, n.id, shard, name, pos.TickID, n.cut)
		}
		if tick, ok := n.relays[name]; ok {
			if tick != n.cut {
				return fmt.Errorf("copier: reshard: node %s: relay %s is at tick %d, not at the cut %d", n.id, name, tick, n.cut)
			}
			n.rep.Kept = append(n.rep.Kept, name)
			continue
		}
		if err := pgq.RegisterConsumerAt(ctx, n.db, q, name, n.cut); err != nil {
			return fmt.Errorf("copier: reshard: node %s: %w", n.id, err)
		}
		n.relays[name] = n.cut
		n.rep.Registered = append(n.rep.Registered, name)
	}
	var drop []string
	for name := range n.relays {
		if !slices.Contains(n.newNames, name) {
			drop = append(drop, name)
		}
	}
	sort.Strings(drop)
	for _, name := range drop {
		if _, err := pgq.UnregisterConsumer(ctx, n.db, q, name); err != nil {
			return fmt.Errorf("copier: reshard: node %s: %w", n.id, err)
		}
		delete(n.relays, name)
		n.rep.Unregistered = append(n.rep.Unregistered, name)
	}
	rs.log.Info("reshard: node switched to the new hubs", "node", n.id, "cut", n.cut,
		"registered", n.rep.Registered, "unregistered", n.rep.Unregistered)
	return nil
}

// bellOf is the bells to ring: bell, if set.
func bellOf(bell string) []string {
	if bell == "" {
		return nil
	}
	return []string{bell}
}
