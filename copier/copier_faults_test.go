package copier_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/apply"
	"github.com/pgq-go/pgq/copier"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/route"
	"github.com/pgq-go/pgq/urlenc"
	"github.com/stretchr/testify/require"
)

// TestCopierConfigErrors: the copier sets its consumers' queue, name,
// registration and filter itself (Config has no field for them, so a
// filter cannot hide events from a relay); what it does take is
// validated, each error naming its field.
func TestCopierConfigErrors(t *testing.T) {
	t.Parallel()
	cc := newCopyCluster(t, 1, 1, copier.RoutingShared, func(int) *pgtest.Cluster { return cluster }, cluster)
	for field, set := range map[string]func(*copier.Config){
		"Node":         func(c *copier.Config) { c.Node = "bad node" },
		"Applier":      func(c *copier.Config) { c.Applier = nil },
		"LazyFetch":    func(c *copier.Config) { c.LazyFetch = -1 },
		"PollInterval": func(c *copier.Config) { c.PollInterval = -time.Second },
		"MaxRetries":   func(c *copier.Config) { c.MaxRetries = -1 },
		"PushQueue":    func(c *copier.Config) { c.PushQueue = strings.Repeat("q", pgq.MaxNameLen+1) },
	} {
		cfg := cc.config("n1")
		set(&cfg)
		_, err := copier.New(cfg)
		require.ErrorContains(t, err, "copier: Config."+field, field)
	}
}

// TestCopierOwnHubSmallPool runs a node that is its own hub with one pool
// of two connections for both roles: each of its relay and pull holds a
// source connection for its batch; taking a second one for the destination
// from the same exhausted pool would wait forever.
func TestCopierOwnHubSmallPool(t *testing.T) {
	t.Parallel()
	hubDB := cluster.NewDB(t)
	other := cluster.NewDB(t)
	cc := &copyCluster{t: t, local: map[string]*pgtest.DB{"n1": hubDB, "n2": other}, hubs: []*pgtest.DB{hubDB},
		nodes: []string{"n1", "n2"}, routing: copier.RoutingShared,
		expected: map[string]map[string]bool{"n1": {}, "n2": {}}}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	cc.ctx = ctx
	for _, db := range []*pgtest.DB{hubDB, other} {
		_, err := db.Pool.Exec(ctx, rowsDDL)
		require.NoError(t, err)
	}
	pc, err := pgxpool.ParseConfig(hubDB.DSN)
	require.NoError(t, err)
	pc.MaxConns = 2
	small, err := pgxpool.NewWithConfig(ctx, pc)
	require.NoError(t, err)
	t.Cleanup(small.Close)

	cfg1 := cc.config("n1")
	cfg1.Local, cfg1.Hubs = small, []*pgxpool.Pool{small}
	cfg2 := cc.config("n2")
	for _, cfg := range []copier.Config{cfg1, cfg2} {
		tc, err := copier.New(cfg)
		require.NoError(t, err)
		require.NoError(t, tc.Setup(ctx))
	}
	cc.startTicker()
	runCopier(t, ctx, cfg1)
	runCopier(t, ctx, cfg2)
	rng := rand.New(rand.NewPCG(3, 4))
	for range 5 {
		cc.produce("n1", 20, rng)
		cc.produce("n2", 20, rng)
	}
	require.Eventually(t, cc.delivered, 90*time.Second, 50*time.Millisecond, "rows delivered through a node that is its own hub")
	cc.verify()
}

// freezeApplier applies rows with ra; the first call signals reached and
// waits for release, so the test can freeze the network mid-batch while the
// node transaction holds a row lock.
type freezeApplier struct {
	ra      *apply.RowApplier
	reached chan struct{}
	release chan struct{}
	first   bool
}

func (f *freezeApplier) Apply(ctx context.Context, tx pgx.Tx, ev *pgq.Event) error {
	if err := f.ra.Apply(ctx, tx, ev); err != nil {
		return err
	}
	if !f.first {
		f.first = true
		// Like any apply, this transaction now holds a row lock on the node.
		if _, err := tx.Exec(ctx, "update sentinel set n = n + 1"); err != nil {
			return err
		}
		close(f.reached)
		<-f.release
	}
	return nil
}

// TestCopierHubHangReleasesNodeLocks: the hub goes silent (no reset, no
// error) while the pull is mid-batch, holding row locks on the node. The
// node server must end that transaction on its own and free the rows; once
// the network is back, every row arrives exactly once.
func TestCopierHubHangReleasesNodeLocks(t *testing.T) {
	t.Parallel()
	cc := newCopyCluster(t, 2, 1, copier.RoutingShared, func(int) *pgtest.Cluster { return cluster }, cluster)
	cc.setupAll()
	_, err := cc.local["n2"].Pool.Exec(cc.ctx, "create table sentinel (n int); insert into sentinel values (0)")
	require.NoError(t, err)
	proxy := pgtest.NewProxy(t, cluster.Addr())
	viaProxy, err := pgxpool.New(cc.ctx, cluster.DSNVia(proxy.Addr(), cc.hubs[0].Name))
	require.NoError(t, err)
	t.Cleanup(viaProxy.Close)

	ra, err := apply.NewRowApplier("rows", []string{"id"})
	require.NoError(t, err)
	fa := &freezeApplier{ra: ra, reached: make(chan struct{}), release: make(chan struct{})}
	cfg := cc.config("n2")
	cfg.Hubs = []*pgxpool.Pool{viaProxy}
	cfg.Applier = fa
	cfg.LazyFetch = 1 // a hub round trip after every row
	cfg.IdleTimeout = time.Second
	rng := rand.New(rand.NewPCG(5, 6))
	cc.produce("n1", 30, rng)
	cc.startTicker()
	runCopier(t, cc.ctx, cc.config("n1"))
	runCopier(t, cc.ctx, cfg)

	select {
	case <-fa.reached:
	case <-time.After(90 * time.Second):
		t.Fatal("pull never applied a row")
	}
	proxy.Freeze()
	close(fa.release)
	node := cc.local["n2"]
	// The pull's transaction holds a row lock on the node until the node
	// ends that transaction; then another writer gets the row at once.
	require.Eventually(t, func() bool {
		tx, err := node.Pool.Begin(cc.ctx)
		require.NoError(t, err)
		defer tx.Rollback(context.Background())
		_, err = tx.Exec(cc.ctx, "select 1 from sentinel for update nowait")
		return err == nil
	}, 30*time.Second, 50*time.Millisecond, "the node ends the stalled pull transaction by itself")
	proxy.Thaw()
	require.Eventually(t, cc.delivered, 90*time.Second, 50*time.Millisecond)
	cc.verify()
}

// TestCopierFlowsKeepTheirOwnPosition runs two copiers on one node, each
// with its own push and pull queues and its own hub. Their pull consumers
// share a name ("pull.n1"); keyed by name only, the second flow took the
// first flow's batch as done when its hub's batch ids reached the same
// number, and lost it.
func TestCopierFlowsKeepTheirOwnPosition(t *testing.T) {
	t.Parallel()
	cc := newCopyCluster(t, 2, 2, copier.RoutingShared, func(int) *pgtest.Cluster { return cluster }, cluster)
	flow := func(i int, node string) copier.Config {
		cfg := cc.config(node)
		cfg.Hubs = []*pgxpool.Pool{cc.hubs[i].Pool}
		cfg.PushQueue, cfg.PullQueue = fmt.Sprintf("push_%d", i), fmt.Sprintf("pull_%d", i)
		return cfg
	}
	send := func(i int, id string) {
		tx, err := cc.local["n2"].Pool.Begin(cc.ctx)
		require.NoError(t, err)
		defer tx.Rollback(context.Background())
		_, err = route.Sender{Queue: fmt.Sprintf("push_%d", i), Origin: "n2"}.Send(cc.ctx, tx, []string{"n1"},
			urlenc.Fields{"action": "ins", "id": id, "origin": "n2", "payload": "it's \\ a; -- row " + id})
		require.NoError(t, err)
		require.NoError(t, tx.Commit(cc.ctx))
		cc.mu.Lock()
		cc.expected["n1"][id] = true
		cc.mu.Unlock()
	}
	for i := range 2 {
		for _, n := range cc.nodes {
			tc, err := copier.New(flow(i, n))
			require.NoError(t, err)
			require.NoError(t, tc.Setup(cc.ctx))
		}
	}
	tick := func(dbs ...*pgtest.DB) {
		for _, db := range dbs {
			_, err := db.Pool.Exec(cc.ctx, "select pgq.force_tick(queue_name) from pgq.queue")
			require.NoError(t, err)
			_, err = db.Pool.Exec(cc.ctx, "select pgq.ticker()")
			require.NoError(t, err)
		}
	}
	n1, n2, h0, h1 := cc.local["n1"], cc.local["n2"], cc.hubs[0], cc.hubs[1]
	// Flow 0 delivers a row and stops.
	stop0, _ := runCopier(t, cc.ctx, flow(0, "n1"))
	stopR0, _ := runCopier(t, cc.ctx, flow(0, "n2"))
	send(0, "n2-1")
	require.Eventually(t, func() bool { tick(n1, n2, h0); return cc.delivered() }, 60*time.Second, 20*time.Millisecond)
	require.NoError(t, stop0())
	require.NoError(t, stopR0())
	var last int64
	require.NoError(t, n1.Pool.QueryRow(cc.ctx, `select coalesce(max(last_batch_id), 0)
		from pgq_ext.completed_batch where consumer_id = 'pull.n1'`).Scan(&last))
	require.Positive(t, last)

	// Flow 1: n2 relays a row to hub 1 (hub 1 not ticked meanwhile).
	send(1, "n2-2")
	stopR1, _ := runCopier(t, cc.ctx, flow(1, "n2"))
	require.Eventually(t, func() bool {
		tick(n2)
		var n int
		require.NoError(t, h1.Pool.QueryRow(cc.ctx, `select count(*) from pgq.event_template e
			join pgq.queue q on e.tableoid::regclass::text like q.queue_data_pfx || '%'
			where q.queue_name = 'pull_1'`).Scan(&n))
		return n > 0
	}, 60*time.Second, 20*time.Millisecond, "row relayed to hub 1")
	require.NoError(t, stopR1())
	// Hub 1 hands out batch ids from its own sequence: make the batch that
	// holds the row get the number flow 0 recorded last (as two hubs'
	// sequences meet sooner or later).
	_, err := h1.Pool.Exec(cc.ctx, "select setval('pgq.batch_id_seq', $1, false)", last) // next: last (1 too)
	require.NoError(t, err)
	tick(h1)
	// Only n1's copier runs from here: its pull takes hub 1's next batch id.
	runCopier(t, cc.ctx, flow(1, "n1"))
	cc.startTicker()
	require.Eventually(t, cc.delivered, 60*time.Second, 20*time.Millisecond, "flow 1's row arrives")
	cc.verify()
}
