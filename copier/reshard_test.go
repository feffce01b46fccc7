package copier_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/copier"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/route"
	"github.com/pgq-go/pgq/urlenc"
	"github.com/stretchr/testify/require"
)

// hubConfig is the node's copier configuration with the given hub shards.
func (cc *copyCluster) hubConfig(node string, hubs ...*pgtest.DB) copier.Config {
	cfg := cc.config(node)
	cfg.Hubs = dbPools(hubs)
	return cfg
}

func dbPools(dbs []*pgtest.DB) []*pgxpool.Pool {
	var ps []*pgxpool.Pool
	for _, d := range dbs {
		ps = append(ps, d.Pool)
	}
	return ps
}

// runCopiers runs every node's copier with the given hubs; stop ends them
// and checks each ended cleanly.
func (cc *copyCluster) runCopiers(hubs ...*pgtest.DB) (stop func()) {
	var stops []func() error
	for _, n := range cc.nodes {
		s, _ := runCopier(cc.t, cc.ctx, cc.hubConfig(n, hubs...))
		stops = append(stops, s)
	}
	return func() {
		for i, s := range stops {
			require.NoError(cc.t, s(), "copier of %s", cc.nodes[i])
		}
	}
}

// produceCommitted is produce for a goroutine: it returns errors, and a
// row is expected on its targets only once its transaction committed.
func (cc *copyCluster) produceCommitted(origin string, k int, rng *rand.Rand) error {
	type row struct {
		id      string
		targets []string
	}
	var rows []row
	var msgs []route.Message
	cc.mu.Lock()
	for range k {
		cc.seq++
		id := fmt.Sprintf("%s-%d", origin, cc.seq)
		var targets []string
		for _, n := range cc.nodes {
			if n != origin && rng.IntN(2) == 0 {
				targets = append(targets, n)
			}
		}
		if len(targets) == 0 {
			continue
		}
		rows = append(rows, row{id, targets})
		msgs = append(msgs, route.Message{Targets: targets, Row: urlenc.Fields{
			"action": "ins", "id": id, "origin": origin, "payload": "it's \\ a; -- row " + id}})
	}
	cc.mu.Unlock()
	err := pgx.BeginFunc(cc.ctx, cc.local[origin].Pool, func(tx pgx.Tx) error {
		_, err := route.Sender{Queue: "push_queue", Origin: origin}.SendBulk(cc.ctx, tx, msgs)
		return err
	})
	if err != nil {
		return err
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for _, r := range rows {
		for _, tg := range r.targets {
			cc.expected[tg][r.id] = true
		}
	}
	return nil
}

// startProducers writes rows from random nodes to random targets until
// stop is called; stop returns how many transactions committed.
func (cc *copyCluster) startProducers(seed uint64) (stop func() int64) {
	var halt atomic.Bool
	var commits atomic.Int64
	done := make(chan error, 1)
	go func() {
		rng := rand.New(rand.NewPCG(seed, seed+1))
		for !halt.Load() {
			if err := cc.produceCommitted(cc.nodes[rng.IntN(len(cc.nodes))], 1+rng.IntN(6), rng); err != nil {
				done <- err
				return
			}
			commits.Add(1)
			// A producer's pace, not a wait for a condition. Slow enough
			// that a slow machine is not also given more rows: at 10ms a
			// busy run made 17,000 rows and outlived its context.
			time.Sleep(40 * time.Millisecond)
		}
		done <- nil
	}()
	var once sync.Once
	stop = func() int64 {
		once.Do(func() {
			halt.Store(true)
			require.NoError(cc.t, <-done, "producer")
		})
		return commits.Load()
	}
	cc.t.Cleanup(func() { stop() })
	return stop
}

// rowsApplied counts the rows on every node.
func (cc *copyCluster) rowsApplied() int {
	total := 0
	for _, n := range cc.nodes {
		var c int
		require.NoError(cc.t, cc.local[n].Pool.QueryRow(cc.ctx, "select count(*) from rows").Scan(&c))
		total += c
	}
	return total
}

// waitProgress waits until at least more rows are applied than now.
func (cc *copyCluster) waitProgress(more int) {
	start := cc.rowsApplied()
	require.Eventually(cc.t, func() bool { return cc.rowsApplied() >= start+more }, 90*time.Second, 20*time.Millisecond)
}

// waitDelivered waits until every node has its rows, logging what is
// missing if they do not come.
func (cc *copyCluster) waitDelivered() {
	t := cc.t
	deadline := time.Now().Add(150 * time.Second)
	for !cc.delivered() {
		if time.Now().After(deadline) {
			cc.mu.Lock()
			for _, n := range cc.nodes {
				var got int
				// Not cc.ctx: it may be what ran out.
				err := cc.local[n].Pool.QueryRow(context.Background(), "select count(*) from rows").Scan(&got)
				t.Logf("node %s: %d of %d rows (%v)", n, got, len(cc.expected[n]), err)
			}
			cc.mu.Unlock()
			for i, h := range cc.hubs {
				t.Logf("hub %d: %v", i, subscriptions(t, context.Background(), h.Pool))
			}
			t.Fatal("rows not delivered")
		}
		time.Sleep(50 * time.Millisecond) // polling interval of the wait
	}
}

// startSlowTicker plays a ticker daemon at a production-like pace: a tick
// (forced) of every queue and retry maintenance every 100ms.
func (cc *copyCluster) startSlowTicker() {
	ctx, cancel := context.WithCancel(cc.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for {
			for _, p := range cc.allPools() {
				_, _ = p.Exec(ctx, "select pgq.force_tick(queue_name) from pgq.queue")
				_, _ = p.Exec(ctx, "select pgq.ticker()")
				_, _ = pgq.MaintRetryEvents(ctx, p)
			}
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
		}
	}()
	cc.t.Cleanup(func() { cancel(); <-done })
}

// subscriptions lists "queue consumer" for every consumer of db.
func subscriptions(t *testing.T, ctx context.Context, db *pgxpool.Pool) []string {
	t.Helper()
	rows, err := db.Query(ctx, `select q.queue_name || ' ' || c.co_name from pgq.subscription s
		join pgq.queue q on q.queue_id = s.sub_queue join pgq.consumer c on c.co_id = s.sub_consumer order by 1`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}

func (cc *copyCluster) reshard(old, new []*pgtest.DB) *copier.ReshardReport {
	cc.t.Helper()
	nodes := map[string]*pgxpool.Pool{}
	for _, n := range cc.nodes {
		nodes[n] = cc.local[n].Pool
	}
	rep, err := copier.Reshard(cc.ctx, copier.ReshardConfig{Nodes: nodes, OldHubs: dbPools(old), NewHubs: dbPools(new), Routing: cc.routing})
	require.NoError(cc.t, err)
	for _, n := range rep.Nodes {
		cc.t.Logf("reshard %s: %+v", n.Node, n)
	}
	return rep
}

// checkConsumers checks that only the consumers of the layout with hubs
// are left: one relay per shard on every push queue, and each node's pull
// on its own shard; nothing else pins a queue.
func (cc *copyCluster) checkConsumers(hubs ...*pgtest.DB) {
	t := cc.t
	for _, n := range cc.nodes {
		var want []string
		for s := range hubs {
			want = append(want, "push_queue "+route.RelayConsumerName(n, s))
		}
		sort.Strings(want)
		require.Equal(t, want, subscriptions(t, cc.ctx, cc.local[n].Pool), "consumers on node %s", n)
	}
	for i, h := range hubs {
		var want []string
		for _, n := range cc.nodes {
			if route.ShardOf(n, len(hubs)) != i {
				continue
			}
			q := "pull_queue"
			if cc.routing == copier.RoutingPerTarget {
				q = route.PerTargetQueue(q, n)
			}
			want = append(want, q+" "+route.PullConsumerName(n))
		}
		sort.Strings(want)
		got := subscriptions(t, cc.ctx, h.Pool)
		if len(want) == 0 {
			require.Empty(t, got, "consumers on hub %d", i)
		} else {
			require.Equal(t, want, got, "consumers on hub %d", i)
		}
	}
}

// TestReshardOneTwoOne goes from one hub to two and back while producers
// keep writing: every row reaches exactly its targets, once, and no relay
// or pull consumer is left behind to pin a queue (B3).
func TestReshardOneTwoOne(t *testing.T) {
	t.Parallel()
	for _, routing := range []copier.Routing{copier.RoutingShared, copier.RoutingPerTarget} {
		t.Run(routing.String(), func(t *testing.T) {
			t.Parallel()
			cc := newCopyCluster(t, 4, 2, routing, func(int) *pgtest.Cluster { return cluster }, cluster)
			h1, h2 := cc.hubs[0], cc.hubs[1]
			for _, n := range cc.nodes {
				tc, err := copier.New(cc.hubConfig(n, h1))
				require.NoError(t, err)
				require.NoError(t, tc.Setup(cc.ctx))
			}
			cc.startSlowTicker()
			stopProducers := cc.startProducers(11)

			stop := cc.runCopiers(h1)
			cc.waitProgress(50)
			stop()
			// A backlog for the reshard: rows not relayed yet, for every node.
			rng := rand.New(rand.NewPCG(12, 13))
			for _, n := range cc.nodes {
				require.NoError(t, cc.produceCommitted(n, 10, rng))
			}
			rep := cc.reshard([]*pgtest.DB{h1}, []*pgtest.DB{h1, h2})
			for _, n := range rep.Nodes {
				require.Positive(t, n.Relayed, "node %s relayed its backlog to the cut", n.Node)
				require.Equal(t, []string{route.RelayConsumerName(n.Node, 1)}, n.Registered)
				require.Equal(t, []string{route.RelayConsumerName(n.Node, 0)}, n.Kept)
				require.Empty(t, n.Unregistered)
				require.Equal(t, route.ShardOf(n.Node, 2) == 1, n.PullMoved, "node %s", n.Node)
				if n.PullMoved {
					require.Positive(t, n.Moved, "node %s had rows waiting on hub 0", n.Node)
				}
			}
			cc.checkConsumers(h1, h2)

			stop = cc.runCopiers(h1, h2)
			cc.waitProgress(50)
			stop()
			for _, n := range cc.nodes {
				require.NoError(t, cc.produceCommitted(n, 10, rng))
			}
			rep = cc.reshard([]*pgtest.DB{h1, h2}, []*pgtest.DB{h1})
			for _, n := range rep.Nodes {
				require.Empty(t, n.Registered)
				require.Equal(t, []string{route.RelayConsumerName(n.Node, 0)}, n.Kept)
				require.Equal(t, []string{route.RelayConsumerName(n.Node, 1)}, n.Unregistered)
				require.Equal(t, route.ShardOf(n.Node, 2) == 1, n.PullMoved, "node %s", n.Node)
			}
			cc.checkConsumers(h1)

			stop = cc.runCopiers(h1)
			cc.waitProgress(50)
			commits := stopProducers()
			cc.waitDelivered()
			stop()
			cc.verify()
			cc.checkConsumers(h1)
			t.Logf("%d producer transactions", commits)
		})
	}
}

// TestReshardSetupRefusesStrayRelays: a copier started with fewer hubs
// than its node's relays refuses (ErrReshardNeeded) instead of pinning the
// push queue with the relay it no longer runs.
func TestReshardSetupRefusesStrayRelays(t *testing.T) {
	t.Parallel()
	cc := newCopyCluster(t, 1, 2, copier.RoutingShared, func(int) *pgtest.Cluster { return cluster }, cluster)
	tc, err := copier.New(cc.hubConfig("n1", cc.hubs...))
	require.NoError(t, err)
	require.NoError(t, tc.Setup(cc.ctx))
	tc, err = copier.New(cc.hubConfig("n1", cc.hubs[0]))
	require.NoError(t, err)
	err = tc.Setup(cc.ctx)
	require.ErrorIs(t, err, copier.ErrReshardNeeded)
	require.ErrorContains(t, err, "relay.n1.s1")
	require.ErrorIs(t, tc.Run(cc.ctx), copier.ErrReshardNeeded)
}

// TestSetupRefusesGrowthWithoutReshard: a node set up with one hub and
// restarted with two would register relay.<node>.s1 at the latest tick,
// never sending the rows waiting for the targets that move to hub 2, and
// the targets' pull consumers would stay on hub 1 holding their events.
// Setup refuses both, and registers nothing.
func TestSetupRefusesGrowthWithoutReshard(t *testing.T) {
	t.Parallel()
	cc := newCopyCluster(t, 2, 2, copier.RoutingShared, func(int) *pgtest.Cluster { return cluster }, cluster)
	for _, n := range cc.nodes {
		tc, err := copier.New(cc.hubConfig(n, cc.hubs[0]))
		require.NoError(t, err)
		require.NoError(t, tc.Setup(cc.ctx))
	}
	for _, n := range cc.nodes {
		tc, err := copier.New(cc.hubConfig(n, cc.hubs...))
		require.NoError(t, err)
		err = tc.Setup(cc.ctx)
		require.ErrorIs(t, err, copier.ErrReshardNeeded, n)
		var registered bool
		require.NoError(t, cc.local[n].Pool.QueryRow(cc.ctx, `select exists (select 1 from pgq.consumer
			where co_name = $1)`, route.RelayConsumerName(n, 1)).Scan(&registered))
		require.False(t, registered, "%s: nothing registered", n)
	}
	// A node whose relays are in place but whose pull consumer sits on
	// another hub than its shard (moved without reshard) is refused too.
	const moved = "n2"
	require.Equal(t, 1, route.ShardOf(moved, 2), "n2 belongs to hub 2")
	_, err := pgq.RegisterConsumer(cc.ctx, cc.local[moved].Pool, "push_queue", route.RelayConsumerName(moved, 1))
	require.NoError(t, err)
	tc, err := copier.New(cc.hubConfig(moved, cc.hubs...))
	require.NoError(t, err)
	err = tc.Setup(cc.ctx)
	require.ErrorIs(t, err, copier.ErrReshardNeeded)
	require.ErrorContains(t, err, "pull."+moved)
}

// TestReshardRenamesLegacyRelay: an older version named shard 0 of
// several hubs "relay.<node>.s0". The copier refuses to start next to it;
// a reshard onto the same hubs relays what it holds up to the cut, renames
// it "relay.<node>" and the copiers then deliver every row exactly once.
func TestReshardRenamesLegacyRelay(t *testing.T) {
	t.Parallel()
	cc := newCopyCluster(t, 3, 2, copier.RoutingShared, func(int) *pgtest.Cluster { return cluster }, cluster)
	hubs := cc.hubs
	cc.setupAll()
	n1 := cc.local["n1"].Pool
	// The older version's layout on n1: relay.n1.s0 where relay.n1 was.
	info, err := pgq.GetConsumerInfo(cc.ctx, n1, "push_queue", "relay.n1")
	require.NoError(t, err)
	require.NoError(t, pgq.RegisterConsumerAt(cc.ctx, n1, "push_queue", "relay.n1.s0", info.LastTick))
	_, err = pgq.UnregisterConsumer(cc.ctx, n1, "push_queue", "relay.n1")
	require.NoError(t, err)
	cc.startSlowTicker()
	require.Equal(t, 0, route.ShardOf("n3", 2), "n3 is carried by shard 0")
	rng := rand.New(rand.NewPCG(21, 22))
	for range 3 {
		require.NoError(t, cc.produceCommitted("n1", 10, rng))
	}

	tc, err := copier.New(cc.hubConfig("n1", hubs...))
	require.NoError(t, err)
	err = tc.Setup(cc.ctx)
	require.ErrorIs(t, err, copier.ErrReshardNeeded)
	require.ErrorContains(t, err, "relay.n1.s0")

	rep := cc.reshard(hubs, hubs)
	byNode := map[string]copier.NodeReshard{}
	for _, n := range rep.Nodes {
		byNode[n.Node] = n
		require.False(t, n.PullMoved)
	}
	require.Equal(t, []string{"relay.n1"}, byNode["n1"].Registered)
	require.Equal(t, []string{"relay.n1.s0"}, byNode["n1"].Unregistered)
	require.Positive(t, byNode["n1"].Relayed, "the legacy relay carried its rows to the cut")
	cc.checkConsumers(hubs...)

	stop := cc.runCopiers(hubs...)
	require.NoError(t, cc.produceCommitted("n1", 10, rng))
	require.Eventually(t, cc.delivered, 90*time.Second, 50*time.Millisecond)
	stop()
	cc.verify()
}

// TestReshardResumesAfterInterruption interrupts a reshard at every step
// in turn (its context cancelled, as by a crash or a timeout) while
// producers keep writing: copiers refuse to start in between, and running
// it again completes it without losing or repeating a row.
func TestReshardResumesAfterInterruption(t *testing.T) {
	t.Parallel()
	cc := newCopyCluster(t, 3, 2, copier.RoutingShared, func(int) *pgtest.Cluster { return cluster }, cluster)
	h1, h2 := cc.hubs[0], cc.hubs[1]
	for _, n := range cc.nodes {
		tc, err := copier.New(cc.hubConfig(n, h1))
		require.NoError(t, err)
		require.NoError(t, tc.Setup(cc.ctx))
	}
	cc.startSlowTicker()
	stopProducers := cc.startProducers(31)
	stop := cc.runCopiers(h1)
	cc.waitProgress(30)
	stop()
	rng := rand.New(rand.NewPCG(32, 33))
	for _, n := range cc.nodes {
		require.NoError(t, cc.produceCommitted(n, 20, rng))
	}

	nodes := map[string]*pgxpool.Pool{}
	for _, n := range cc.nodes {
		nodes[n] = cc.local[n].Pool
	}
	cfg := copier.ReshardConfig{Nodes: nodes, OldHubs: dbPools([]*pgtest.DB{h1}), NewHubs: dbPools([]*pgtest.DB{h1, h2})}
	var mu sync.Mutex
	var stopAt string // "point node": where the current run is interrupted
	var cancelRun context.CancelFunc
	copier.SetReshardHook(func(point, node string) {
		mu.Lock()
		defer mu.Unlock()
		if point+" "+node == stopAt && cancelRun != nil {
			cancelRun()
		}
	})
	t.Cleanup(func() { copier.SetReshardHook(nil) })
	// n2 is the node that moves to the second hub.
	require.Equal(t, 1, route.ShardOf("n2", 2))
	for _, at := range []string{"cut n2", "relayed n1", "moving pull.n2", "moved n2", "switched n1", "marked n2", "unmarked n1"} {
		ctx, cancel := context.WithCancel(cc.ctx)
		mu.Lock()
		stopAt, cancelRun = at, cancel
		mu.Unlock()
		_, err := copier.Reshard(ctx, cfg)
		cancel()
		require.ErrorIs(t, err, context.Canceled, "interrupted at %s", at)
		t.Logf("interrupted at %s: %v", at, err)
		// No copier starts in a half-resharded cluster (but for a node
		// not reached yet when the first run stopped at its cuts, or one
		// whose markers are removed).
		for _, n := range cc.nodes {
			if at == "cut n2" && n == "n3" || at == "unmarked n1" && n == "n1" {
				continue
			}
			tc, err := copier.New(cc.hubConfig(n, h1, h2))
			require.NoError(t, err)
			require.ErrorIs(t, tc.Setup(cc.ctx), copier.ErrReshardNeeded, "node %s after %s", n, at)
		}
	}
	mu.Lock()
	stopAt = ""
	mu.Unlock()
	rep, err := copier.Reshard(cc.ctx, cfg)
	require.NoError(t, err)
	t.Logf("%+v", rep.Nodes)
	// Once done, a run with the same arguments refuses: the relays are
	// the new layout's now.
	_, err = copier.Reshard(cc.ctx, cfg)
	require.ErrorIs(t, err, copier.ErrReshardRefused)
	cc.checkConsumers(h1, h2)

	stop = cc.runCopiers(h1, h2)
	cc.waitProgress(30)
	stopProducers()
	cc.waitDelivered()
	stop()
	cc.verify()
	cc.checkConsumers(h1, h2)
}

// TestReshardRefusesBadInput: inconsistent arguments are refused before
// anything changes.
func TestReshardRefusesBadInput(t *testing.T) {
	t.Parallel()
	cc := newCopyCluster(t, 2, 2, copier.RoutingShared, func(int) *pgtest.Cluster { return cluster }, cluster)
	h1, h2 := cc.hubs[0], cc.hubs[1]
	for _, n := range cc.nodes {
		tc, err := copier.New(cc.hubConfig(n, h1, h2))
		require.NoError(t, err)
		require.NoError(t, tc.Setup(cc.ctx))
	}
	before := map[string][]string{}
	all := append(append([]*pgtest.DB{}, cc.hubs...), cc.local["n1"], cc.local["n2"])
	for i, db := range all {
		before[fmt.Sprint(i)] = subscriptions(t, cc.ctx, db.Pool)
	}
	nodes := map[string]*pgxpool.Pool{"n1": cc.local["n1"].Pool, "n2": cc.local["n2"].Pool}
	for _, tc := range []struct {
		name string
		cfg  copier.ReshardConfig
		want string
	}{
		{"wrong old hubs", copier.ReshardConfig{Nodes: nodes, OldHubs: dbPools([]*pgtest.DB{h1}), NewHubs: dbPools([]*pgtest.DB{h1})}, "relay.n1.s1"},
		{"hub twice", copier.ReshardConfig{Nodes: nodes, OldHubs: dbPools([]*pgtest.DB{h1, h2}), NewHubs: dbPools([]*pgtest.DB{h1, h1})}, "same database"},
		{"node missing", copier.ReshardConfig{Nodes: map[string]*pgxpool.Pool{"n1": cc.local["n1"].Pool},
			OldHubs: dbPools([]*pgtest.DB{h1, h2}), NewHubs: dbPools([]*pgtest.DB{h1})}, "not given as a node"},
		{"same node twice", copier.ReshardConfig{Nodes: map[string]*pgxpool.Pool{"n1": cc.local["n1"].Pool, "x": cc.local["n1"].Pool},
			OldHubs: dbPools([]*pgtest.DB{h1, h2}), NewHubs: dbPools([]*pgtest.DB{h1})}, "same database"},
	} {
		_, err := copier.Reshard(cc.ctx, tc.cfg)
		require.ErrorIs(t, err, copier.ErrReshardRefused, tc.name)
		require.ErrorContains(t, err, tc.want, tc.name)
	}
	_, err := copier.Reshard(cc.ctx, copier.ReshardConfig{Nodes: nodes, OldHubs: dbPools([]*pgtest.DB{h1})})
	require.ErrorContains(t, err, "NewHubs")
	for i, db := range all {
		require.Equal(t, before[fmt.Sprint(i)], subscriptions(t, cc.ctx, db.Pool), "database %d unchanged", i)
	}
}
