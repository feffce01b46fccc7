package copier_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/apply"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/copier"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/route"
	"github.com/pgq-go/pgq/urlenc"
	"github.com/stretchr/testify/require"
)

// rowsDDL is the demo's node schema (testdata/demo.sql): rows are copied
// into rows; its trigger logs every write into applies, so a row applied
// twice is seen even though the applier upserts.
var rowsDDL = func() string {
	b, err := pgtest.ReadFixture("demo.sql")
	if err != nil {
		panic(err)
	}
	return string(b)
}()

// cluster of nodes and hubs for targeted-copy tests.
type copyCluster struct {
	ctx      context.Context
	t        *testing.T
	nodes    []string
	local    map[string]*pgtest.DB
	hubs     []*pgtest.DB
	routing  copier.Routing
	expected map[string]map[string]bool // node → row ids it must get
	mu       sync.Mutex
	seq      int
}

func newCopyCluster(t *testing.T, n, hubs int, routing copier.Routing, nodeCluster func(i int) *pgtest.Cluster, hubCluster *pgtest.Cluster) *copyCluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	cc := &copyCluster{ctx: ctx, t: t, local: map[string]*pgtest.DB{}, routing: routing, expected: map[string]map[string]bool{}}
	for i := range hubs {
		_ = i
		cc.hubs = append(cc.hubs, hubCluster.NewDB(t))
	}
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		db := nodeCluster(i).NewDB(t)
		_, err := db.Pool.Exec(ctx, rowsDDL)
		require.NoError(t, err)
		cc.nodes = append(cc.nodes, name)
		cc.local[name] = db
		cc.expected[name] = map[string]bool{}
	}
	return cc
}

func (cc *copyCluster) config(node string) copier.Config {
	var hubs []*pgxpool.Pool
	for _, h := range cc.hubs {
		hubs = append(hubs, h.Pool)
	}
	ra, err := apply.NewRowApplier("rows", []string{"id"})
	require.NoError(cc.t, err)
	return copier.Config{
		Node: node, Local: cc.local[node].Pool, Hubs: hubs, Routing: cc.routing,
		Applier: ra, RetryDelay: 10 * time.Millisecond, MaxRetries: 2,
		PollInterval: 20 * time.Millisecond, LazyFetch: 50,
		ErrorBackoff: consumer.Backoff{Initial: 10 * time.Millisecond, Max: 200 * time.Millisecond},
	}
}

// produce writes k rows on node origin, each to random other targets.
func (cc *copyCluster) produce(origin string, k int, rng *rand.Rand) {
	t := cc.t
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
		for _, tg := range targets {
			cc.expected[tg][id] = true
		}
		msgs = append(msgs, route.Message{Targets: targets, Row: urlenc.Fields{
			"action": "ins", "id": id, "origin": origin, "payload": "it's \\ a; -- row " + id}})
	}
	cc.mu.Unlock()
	tx, err := cc.local[origin].Pool.Begin(cc.ctx)
	require.NoError(t, err)
	defer tx.Rollback(context.Background()) // a failed require must not leak the connection
	_, err = route.Sender{Queue: "push_queue", Origin: origin}.SendBulk(cc.ctx, tx, msgs)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(cc.ctx))
}

// tickLoop plays the ticker daemon for every database until ctx ends:
// ticks every queue and moves due retries.
func tickLoop(ctx context.Context, pools ...*pgxpool.Pool) {
	t := time.NewTicker(15 * time.Millisecond)
	defer t.Stop()
	for {
		for _, p := range pools {
			_, _ = p.Exec(ctx, "select pgq.force_tick(queue_name) from pgq.queue")
			_, _ = p.Exec(ctx, "select pgq.ticker()")
			_, _ = pgq.MaintRetryEvents(ctx, p)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// localDBs are the nodes' databases, in node order.
func (cc *copyCluster) localDBs() []*pgtest.DB {
	var dbs []*pgtest.DB
	for _, n := range cc.nodes {
		dbs = append(dbs, cc.local[n])
	}
	return dbs
}

func (cc *copyCluster) allPools() []*pgxpool.Pool {
	var ps []*pgxpool.Pool
	for _, h := range cc.hubs {
		ps = append(ps, h.Pool)
	}
	for _, n := range cc.nodes {
		ps = append(ps, cc.local[n].Pool)
	}
	return ps
}

// startTicker runs tickLoop until the test ends.
func (cc *copyCluster) startTicker() {
	ctx, cancel := context.WithCancel(cc.ctx)
	done := make(chan struct{})
	go func() { tickLoop(ctx, cc.allPools()...); close(done) }()
	cc.t.Cleanup(func() { cancel(); <-done })
}

// delivered reports whether every node has every row meant for it.
func (cc *copyCluster) delivered() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for _, n := range cc.nodes {
		var got int
		if err := cc.local[n].Pool.QueryRow(cc.ctx, "select count(*) from rows").Scan(&got); err != nil {
			return false
		}
		if got < len(cc.expected[n]) {
			return false
		}
	}
	return true
}

// verify checks exactly the expected rows are on each node: none missing,
// none extra (misdelivered), payload intact.
func (cc *copyCluster) verify() {
	t := cc.t
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for _, n := range cc.nodes {
		rows, err := cc.local[n].Pool.Query(cc.ctx, "select id, origin, payload from rows")
		require.NoError(t, err)
		got := map[string]bool{}
		for rows.Next() {
			var id, origin, payload string
			require.NoError(t, rows.Scan(&id, &origin, &payload))
			require.True(t, cc.expected[n][id], "node %s has row %s not meant for it", n, id)
			require.True(t, strings.HasPrefix(id, origin+"-"))
			require.Equal(t, "it's \\ a; -- row "+id, payload)
			got[id] = true
		}
		require.NoError(t, rows.Err())
		require.Len(t, got, len(cc.expected[n]), "node %s rows", n)
		var dups int
		require.NoError(t, cc.local[n].Pool.QueryRow(cc.ctx,
			"select count(*) from (select id from applies group by id having count(*) > 1) d").Scan(&dups))
		require.Zero(t, dups, "node %s applied some rows more than once", n)
	}
}

func runCopier(t *testing.T, ctx context.Context, cfg copier.Config) (stop func() error, tc *copier.TargetedCopier) {
	t.Helper()
	tc, err := copier.New(cfg)
	require.NoError(t, err)
	return pgtest.Background(t, ctx, tc.Run), tc
}

func TestTargetedCopyFourNodes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		routing copier.Routing
		hubs    int
	}{
		{"per-target", copier.RoutingPerTarget, 1},
		{"shared", copier.RoutingShared, 1},
		{"two-hub-shards", copier.RoutingPerTarget, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cc := newCopyCluster(t, 4, tc.hubs, tc.routing, func(int) *pgtest.Cluster { return cluster }, cluster)
			cc.setupAll()
			cc.startTicker()
			var copiers []*copier.TargetedCopier
			for _, n := range cc.nodes {
				_, c := runCopier(t, cc.ctx, cc.config(n))
				copiers = append(copiers, c)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			for round := range 5 {
				for _, n := range cc.nodes {
					cc.produce(n, 20+round, rng)
				}
			}
			require.Eventually(t, cc.delivered, 90*time.Second, 50*time.Millisecond)
			cc.verify()
			var applied int64
			for _, c := range copiers {
				applied += c.Stats().Applied
			}
			require.Positive(t, applied)
			if tc.hubs == 2 {
				// Both shards carried traffic.
				for i, h := range cc.hubs {
					var n int
					require.NoError(t, h.Pool.QueryRow(cc.ctx, "select count(*) from pgq.queue where queue_name like 'pull_queue.%'").Scan(&n))
					require.Positive(t, n, "hub %d holds some targets", i)
				}
			}
		})
	}
}

// setupAll runs Setup for every node, so that no row is produced before
// the consumers that carry it are registered.
func (cc *copyCluster) setupAll() {
	for _, n := range cc.nodes {
		tc, err := copier.New(cc.config(n))
		require.NoError(cc.t, err)
		require.NoError(cc.t, tc.Setup(cc.ctx))
	}
}

func TestTargetedCopyNodeDownThenBack(t *testing.T) {
	t.Parallel()
	down := pgtest.NewCluster(t)
	cc := newCopyCluster(t, 4, 1, copier.RoutingPerTarget, func(i int) *pgtest.Cluster {
		if i == 3 {
			return down
		}
		return cluster
	}, cluster)
	cc.setupAll()
	cc.startTicker()
	for _, n := range cc.nodes {
		runCopier(t, cc.ctx, cc.config(n))
	}
	rng := rand.New(rand.NewPCG(3, 4))
	cc.produce("n1", 20, rng)
	require.Eventually(t, cc.delivered, 60*time.Second, 50*time.Millisecond)

	// n4's PostgreSQL goes away while the others keep producing for it.
	require.NoError(t, down.Stop())
	for range 3 {
		for _, n := range cc.nodes[:3] {
			cc.produce(n, 30, rng)
		}
	}
	// The others get theirs; n4's rows wait on the hub.
	others := func() bool {
		cc.mu.Lock()
		defer cc.mu.Unlock()
		for _, n := range cc.nodes[:3] {
			var got int
			if err := cc.local[n].Pool.QueryRow(cc.ctx, "select count(*) from rows").Scan(&got); err != nil || got < len(cc.expected[n]) {
				return false
			}
		}
		return true
	}
	require.Eventually(t, others, 60*time.Second, 50*time.Millisecond)
	require.NoError(t, down.Start())
	cc.local["n4"].Pool.Reset()
	require.Eventually(t, cc.delivered, 90*time.Second, 50*time.Millisecond)
	cc.verify()
}

func TestTargetedCopyHubRestart(t *testing.T) {
	t.Parallel()
	hubC := pgtest.NewCluster(t)
	cc := newCopyCluster(t, 3, 1, copier.RoutingShared, func(int) *pgtest.Cluster { return cluster }, hubC)
	cc.setupAll()
	cc.startTicker()
	for _, n := range cc.nodes {
		runCopier(t, cc.ctx, cc.config(n))
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 6 {
		for _, n := range cc.nodes {
			cc.produce(n, 15, rng)
		}
		if i == 2 {
			require.NoError(t, hubC.Restart())
			cc.hubs[0].Pool.Reset()
		}
	}
	require.Eventually(t, cc.delivered, 90*time.Second, 50*time.Millisecond)
	cc.verify()
}

func TestTargetedCopyHostilePayloadsParked(t *testing.T) {
	t.Parallel()
	cc := newCopyCluster(t, 2, 1, copier.RoutingPerTarget, func(int) *pgtest.Cluster { return cluster }, cluster)
	cc.setupAll()
	cc.startTicker()
	stop1, _ := runCopier(t, cc.ctx, cc.config("n1"))
	_, c2 := runCopier(t, cc.ctx, cc.config("n2"))
	defer func() { _ = stop1() }()

	hostile := `'); drop table rows; -- \ "q" ünï`
	good := []route.Payload{
		urlenc.Fields{"action": "ins", "id": "good-1", "origin": "n1", "payload": hostile},
		urlenc.Fields{"action": "ins", "id": "good-2", "origin": "n1", "payload": nil},
	}
	enc := func(f urlenc.Fields) string {
		s, err := f.Encode()
		require.NoError(t, err)
		return s
	}
	bad := []string{ // written past the producer API's checks, as a buggy producer would
		"action=ins&id=%zz&origin=n1", // malformed escape
		enc(urlenc.Fields{"action": "ins", "id": "b2", "origin": "n1", "nope": "x"}),   // unknown column
		enc(urlenc.Fields{"action": "ins", "origin": "n1"}),                            // missing key
		enc(urlenc.Fields{"action": "explode", "id": "b4", "origin": "n1"}),            // bad action
		"action=ins&id=b5&origin=n1&payload=" + strings.Repeat("x", urlenc.MaxRowSize), // oversized
		enc(urlenc.Fields{"action": "upd", "id": "missing", "origin": "n1"}),           // update of a missing row: retried, then parked
	}
	tx, err := cc.local["n1"].Pool.Begin(cc.ctx)
	require.NoError(t, err)
	defer tx.Rollback(context.Background())
	for _, p := range good {
		_, err := route.Sender{Queue: "push_queue"}.Send(cc.ctx, tx, []string{"n2"}, p)
		require.NoError(t, err)
	}
	for _, row := range bad {
		_, err := pgq.InsertEvent(cc.ctx, tx, "push_queue", pgq.EventData{Type: pgq.T("copy"), Extra1: pgq.T("n2"), Extra2: pgq.T(row)})
		require.NoError(t, err)
	}
	// A non-copy event addressed to n2 is ignored, per the documented policy.
	_, err = pgq.InsertEvent(cc.ctx, tx, "push_queue", pgq.EventData{Type: pgq.T("note"), Extra1: pgq.T("n2"), Extra2: pgq.T("action=ins&id=note&origin=n1")})
	require.NoError(t, err)
	require.NoError(t, tx.Commit(cc.ctx))

	require.Eventually(t, func() bool {
		n, err := copier.CountParked(cc.ctx, cc.local["n2"].Pool, "")
		return err == nil && n == int64(len(bad))
	}, 60*time.Second, 50*time.Millisecond)
	parked, err := copier.ListParked(cc.ctx, cc.local["n2"].Pool, copier.ParkedFilter{})
	require.NoError(t, err)
	require.Len(t, parked, len(bad))
	for _, p := range parked {
		require.Contains(t, p.Error, fmt.Sprint(p.Event.ID), "error names the event id")
		require.Equal(t, "pull.n2", p.Consumer)
	}
	var payload *string
	require.NoError(t, cc.local["n2"].Pool.QueryRow(cc.ctx, "select payload from rows where id = 'good-1'").Scan(&payload))
	require.Equal(t, hostile, *payload, "hostile text applied verbatim")
	var rowsN int
	require.NoError(t, cc.local["n2"].Pool.QueryRow(cc.ctx, "select count(*) from rows").Scan(&rowsN))
	require.Equal(t, 2, rowsN, "only the good rows are applied")
	require.Eventually(t, func() bool { return c2.Stats().Ignored >= 1 }, 10*time.Second, 20*time.Millisecond)

	// The operator fixes the cause and replays: the missing row now exists.
	_, err = cc.local["n2"].Pool.Exec(cc.ctx, "insert into rows values ('missing', 'n1', 'x')")
	require.NoError(t, err)
	ra, err := apply.NewRowApplier("rows", []string{"id"})
	require.NoError(t, err)
	res, err := copier.ReplayParked(cc.ctx, cc.local["n2"].Pool, "n2", ra, copier.ParkedFilter{})
	require.NoError(t, err)
	require.Equal(t, 1, res.Replayed)
	require.Len(t, res.Failed, len(bad)-1)
	n, err := copier.PurgeParked(cc.ctx, cc.local["n2"].Pool, copier.ParkedFilter{Consumer: "pull.n2"})
	require.NoError(t, err)
	require.EqualValues(t, len(bad)-1, n)
}

// TestTargetedCopyKilledNodes SIGKILLs node processes at random moments in
// a loop while rows are produced, restarting them each time: every row
// still ends on its targets exactly once and nowhere else.
func TestTargetedCopyKilledNodes(t *testing.T) {
	t.Parallel()
	cc := newCopyCluster(t, 4, 1, copier.RoutingPerTarget, func(int) *pgtest.Cluster { return cluster }, cluster)
	cc.setupAll()
	cc.startTicker()
	rng := rand.New(rand.NewPCG(7, 8))
	procs := map[string]*exec.Cmd{}
	startNode := func(n string) {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"=node", "NODE="+n,
			"LOCAL_DSN="+cc.local[n].DSN, "HUB_DSN="+cc.hubs[0].DSN)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		require.NoError(t, cmd.Start())
		procs[n] = cmd
	}
	kill := func(n string) {
		_ = procs[n].Process.Signal(syscall.SIGKILL)
		_ = procs[n].Wait()
	}
	t.Cleanup(func() {
		for n := range procs {
			kill(n)
		}
	})
	for _, n := range cc.nodes {
		startNode(n)
	}
	kills := 0
	for round := range 12 {
		for _, n := range cc.nodes {
			cc.produce(n, 10+round, rng)
		}
		// Kill a random node at a random moment of its work, then restart it.
		victim := cc.nodes[rng.IntN(len(cc.nodes))]
		time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond) // the random moment, not a wait for a condition
		kill(victim)
		kills++
		startNode(victim)
	}
	require.Eventually(t, cc.delivered, 120*time.Second, 50*time.Millisecond)
	cc.verify()
	t.Logf("%d kills", kills)
}

// grantsSQL is the least-privilege grant list from the README, for a node
// process role on a node database or a hub (tracking schema installed by
// the owner first: pgqctl tracking install).
const grantsSQL = `grant pgq_admin to %[1]s;
grant usage on schema pgq_ext, pgq_go to %[1]s;
grant select, insert, update, delete on all tables in schema pgq_ext, pgq_go to %[1]s;
grant usage on all sequences in schema pgq_go to %[1]s;`

// TestTargetedCopyLeastPrivilegeRole: copiers run under the README's
// grants. In shared routing the role does not own PgQ's event tables:
// Setup leaves the target index to the owner (pgqctl copy hub-index) and
// runs without it.
func TestTargetedCopyLeastPrivilegeRole(t *testing.T) {
	t.Parallel()
	for _, routing := range []copier.Routing{copier.RoutingPerTarget, copier.RoutingShared} {
		t.Run(routing.String(), func(t *testing.T) {
			t.Parallel()
			testLeastPrivilegeRole(t, routing)
		})
	}
}

func testLeastPrivilegeRole(t *testing.T, routing copier.Routing) {
	cc := newCopyCluster(t, 2, 1, routing, func(int) *pgtest.Cluster { return cluster }, cluster)
	role := fmt.Sprintf("copier_%d_%d", os.Getpid(), routing)
	_, err := cc.hubs[0].Pool.Exec(cc.ctx, "create role "+role+" login")
	require.NoError(t, err)
	t.Cleanup(func() {
		for _, db := range append([]*pgtest.DB{cc.hubs[0]}, cc.local["n1"], cc.local["n2"]) {
			_, _ = db.Pool.Exec(context.Background(), "drop owned by "+role)
		}
		_, _ = cc.hubs[0].Pool.Exec(context.Background(), "drop role if exists "+role)
	})
	var superuser bool
	asRole := func(db *pgtest.DB) *pgxpool.Pool {
		p, err := pgxpool.New(cc.ctx, strings.Replace(db.DSN, "user=postgres", "user="+role, 1))
		require.NoError(t, err)
		t.Cleanup(p.Close)
		return p
	}
	for _, db := range append([]*pgtest.DB{cc.hubs[0]}, cc.local["n1"], cc.local["n2"]) {
		require.NoError(t, copier.Install(cc.ctx, db.Pool)) // by the owner
		_, err := db.Pool.Exec(cc.ctx, fmt.Sprintf(grantsSQL, role))
		require.NoError(t, err)
	}
	for _, n := range cc.nodes {
		_, err := cc.local[n].Pool.Exec(cc.ctx, "grant select, insert, update, delete on rows, applies to "+role)
		require.NoError(t, err)
	}
	hub := asRole(cc.hubs[0])
	require.NoError(t, hub.QueryRow(cc.ctx, "select rolsuper from pg_roles where rolname = current_user").Scan(&superuser))
	require.False(t, superuser)
	cc.startTicker() // the ticker runs as the owner
	for _, n := range cc.nodes {
		cfg := cc.config(n)
		cfg.Local, cfg.Hubs = asRole(cc.local[n]), []*pgxpool.Pool{hub}
		tc, err := copier.New(cfg)
		require.NoError(t, err)
		require.NoError(t, tc.Setup(cc.ctx))
		pgtest.Background(t, cc.ctx, tc.Run)
	}
	if routing == copier.RoutingShared {
		_, err := copier.IndexHubQueue(cc.ctx, hub, "pull_queue")
		require.ErrorIs(t, err, copier.ErrHubIndexPrivilege)
	}
	rng := rand.New(rand.NewPCG(9, 10))
	for range 3 {
		cc.produce("n1", 20, rng)
		cc.produce("n2", 20, rng)
	}
	require.Eventually(t, cc.delivered, 60*time.Second, 50*time.Millisecond)
	cc.verify()
	if routing == copier.RoutingShared {
		n, err := copier.IndexHubQueue(cc.ctx, cc.hubs[0].Pool, "pull_queue") // the owner
		require.NoError(t, err)
		require.Equal(t, 3, n)
	}
}
