package main

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/apply"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/copier"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/remote"
	"github.com/stretchr/testify/require"
)

func TestTracking(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := cluster.NewPlainDB(t)

	code, out, errOut := pgqctl(t, "tracking", "status", "--dsn", db.DSN)
	require.Equal(t, 1, code)
	require.Contains(t, out, "pgq_ext: not installed")
	require.Contains(t, errOut, "tracking schema not installed")

	code, out, errOut = pgqctl(t, "tracking", "install", "--dsn", db.DSN)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "tracking schema installed: pgq_ext")
	st, err := remote.Status(ctx, db.Pool)
	require.NoError(t, err)
	require.NotEmpty(t, st.PgqExtVersion)
	require.True(t, st.PgqExtOurs)
	code, _, errOut = pgqctl(t, "tracking", "install", "--dsn", db.DSN)
	require.Equal(t, 0, code, "idempotent: %s", errOut)

	_, err = db.Pool.Exec(ctx, "select pgq_ext.set_batch_done('pull.n1', 42), pgq_ext.set_last_tick('serial', 'sub', 7)")
	require.NoError(t, err)
	code, out, _ = pgqctl(t, "tracking", "status", "--dsn", db.DSN)
	require.Equal(t, 0, code)
	require.Contains(t, out, "installed by pgq-go")
	require.Regexp(t, `pull\.n1\s+42\s+-`, out)
	require.Regexp(t, `serial\s+sub\s+-\s+7`, out)

	code, out, _ = pgqctl(t, "tracking", "status", "--dsn", db.DSN, "--json")
	require.Equal(t, 0, code)
	var rep trackingReport
	require.NoError(t, json.Unmarshal([]byte(out), &rep), out)
	require.True(t, rep.Installed)
	require.NotEmpty(t, rep.Migrations)
	require.ElementsMatch(t, []trackingPosition{
		{Consumer: "pull.n1", Kind: "batch", ID: 42},
		{Consumer: "serial", SubConsumer: "sub", Kind: "tick", ID: 7},
	}, rep.Positions)
}

// copySetup is a targeted-copy cluster on the test server: one hub and
// nodes n1, n2 with a "rows" table, copiers running, a ticker loop.
type copySetup struct {
	ctx   context.Context
	hub   *pgtest.DB
	nodes map[string]*pgtest.DB
	stops map[string]func()
}

func newCopySetup(t *testing.T) *copySetup {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	s := &copySetup{ctx: ctx, hub: cluster.NewDB(t), nodes: map[string]*pgtest.DB{}, stops: map[string]func(){}}
	pools := []*pgxpool.Pool{s.hub.Pool}
	for _, n := range []string{"n1", "n2"} {
		db := cluster.NewDB(t)
		_, err := db.Pool.Exec(ctx, "create table rows (id text primary key, origin text, payload text)")
		require.NoError(t, err)
		s.nodes[n] = db
		pools = append(pools, db.Pool)
	}
	// Set every node up before producing (registers the pull consumers).
	for n := range s.nodes {
		tc, err := copier.New(s.config(t, n))
		require.NoError(t, err)
		require.NoError(t, tc.Setup(ctx))
	}
	// The ticker: pgq.ticker() (never force_tick, which inflates pending
	// counts) and retry maintenance, on every database.
	tctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for tctx.Err() == nil {
			for _, p := range pools {
				_, _ = pgq.Ticker(tctx, p)
				_, _ = pgq.MaintRetryEvents(tctx, p)
			}
			select {
			case <-tctx.Done():
			case <-time.After(15 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { stop(); wg.Wait() })
	for n := range s.nodes {
		s.start(t, n)
	}
	return s
}

func (s *copySetup) config(t *testing.T, node string) copier.Config {
	ra, err := apply.NewRowApplier("rows", []string{"id"})
	require.NoError(t, err)
	return copier.Config{
		Node: node, Local: s.nodes[node].Pool, Hubs: []*pgxpool.Pool{s.hub.Pool}, Applier: ra,
		Routing:    copier.RoutingPerTarget, // per-node pending counts are exact with one queue per node
		RetryDelay: 10 * time.Millisecond, MaxRetries: 1,
		QueueConfig:  pgq.QueueConfig{TickerMaxLag: pgq.Ptr(time.Duration(0))},
		PollInterval: 20 * time.Millisecond,
		ErrorBackoff: consumer.Backoff{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond},
	}
}

func (s *copySetup) start(t *testing.T, node string) {
	tc, err := copier.New(s.config(t, node))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(s.ctx)
	done := make(chan error, 1)
	go func() { done <- tc.Run(ctx) }()
	var once sync.Once
	s.stops[node] = func() {
		once.Do(func() {
			cancel()
			require.NoError(t, <-done)
		})
	}
	t.Cleanup(s.stops[node])
}

// send commits events from node origin to target: rows as payloads.
func (s *copySetup) send(t *testing.T, origin, target string, payloads ...string) {
	tx, err := s.nodes[origin].Pool.Begin(s.ctx)
	require.NoError(t, err)
	for _, p := range payloads {
		_, err := pgq.InsertEvent(s.ctx, tx, "push_queue", pgq.EventData{Type: pgq.T("copy"), Extra1: pgq.T(target), Extra2: pgq.T(p)})
		require.NoError(t, err)
	}
	require.NoError(t, tx.Commit(s.ctx))
}

func (s *copySetup) rows(t *testing.T, node string) int {
	var n int
	require.NoError(t, s.nodes[node].Pool.QueryRow(s.ctx, "select count(*) from rows").Scan(&n))
	return n
}

func (s *copySetup) status(t *testing.T, extra ...string) (int, copyReport) {
	t.Helper()
	args := append([]string{"copy", "status", "--json", "--routing", "per-target", "--hub", s.hub.DSN,
		"--node", "n1=" + s.nodes["n1"].DSN, "--node", "n2=" + s.nodes["n2"].DSN}, extra...)
	code, out, errOut := pgqctl(t, args...)
	var rep copyReport
	require.NoError(t, json.Unmarshal([]byte(out), &rep), "stdout: %s\nstderr: %s", out, errOut)
	return code, rep
}

func TestCopyStatusAndParked(t *testing.T) {
	t.Parallel()
	s := newCopySetup(t)

	s.send(t, "n1", "n2", "action=ins&id=a&origin=n1", "action=ins&id=b&origin=n1")
	s.send(t, "n2", "n1", "action=ins&id=c&origin=n2")
	require.Eventually(t, func() bool { return s.rows(t, "n2") == 2 && s.rows(t, "n1") == 1 }, 30*time.Second, 20*time.Millisecond)

	// Everything applied: healthy, one row per node, applied batches known.
	var rep copyReport
	require.Eventually(t, func() bool {
		code, r := s.status(t)
		rep = r
		return code == 0 && r.Nodes[0].Pending == 0 && r.Nodes[1].Pending == 0 && r.Nodes[0].RelayPending == 0 && r.Nodes[1].RelayPending == 0
	}, 30*time.Second, 50*time.Millisecond, "%+v", rep)
	require.Equal(t, "per-target", rep.Routing)
	require.Len(t, rep.Nodes, 2)
	for i, n := range []string{"n1", "n2"} {
		require.Equal(t, n, rep.Nodes[i].Node)
		require.Equal(t, "pull_queue."+n, rep.Nodes[i].PullQueue)
		require.Equal(t, "pull."+n, rep.Nodes[i].PullConsumer)
		require.Positive(t, rep.Nodes[i].Applied, "node %s applied batch", n)
		require.Zero(t, rep.Nodes[i].Parked)
		require.Empty(t, rep.Nodes[i].Problems)
	}
	code, out, _ := pgqctl(t, "copy", "status", "--routing", "per-target", "--hub", s.hub.DSN, "--node", "n1="+s.nodes["n1"].DSN, "--node", "n2="+s.nodes["n2"].DSN)
	require.Equal(t, 0, code, out)
	require.Regexp(t, `(?m)^n2\s+0\s+0\s+\S+\s+batch \d+\s+0\s+\S+\s+0\s+ok$`, out)

	// A down node's events wait for it on the hub: pending.
	s.stops["n2"]()
	s.send(t, "n1", "n2", "action=ins&id=d&origin=n1", "action=ins&id=e&origin=n1", "action=ins&id=f&origin=n1")
	require.Eventually(t, func() bool {
		_, r := s.status(t)
		return r.Nodes[1].Pending == 3
	}, 30*time.Second, 50*time.Millisecond)

	// Back up, with two events it cannot apply: one malformed (parked at
	// once), one update of a missing row (parked after its retry).
	s.start(t, "n2")
	s.send(t, "n1", "n2", "action=ins&id=%zz&origin=n1", "action=upd&id=missing&origin=n1")
	require.Eventually(t, func() bool {
		code, r := s.status(t)
		rep = r
		return code == 1 && r.Nodes[1].Parked == 2
	}, 30*time.Second, 50*time.Millisecond, "%+v", rep)
	require.Equal(t, 5, s.rows(t, "n2"))
	require.Contains(t, rep.Nodes[1].Problems, "2 event(s) parked on the node, 0 on the hub (pgqctl parked list)")
	require.Empty(t, rep.Nodes[0].Problems)
	code, out, _ = pgqctl(t, "copy", "status", "--routing", "per-target", "--hub", s.hub.DSN, "--node", "n1="+s.nodes["n1"].DSN, "--node", "n2="+s.nodes["n2"].DSN)
	require.Equal(t, 1, code)
	require.Contains(t, out, "status: UNHEALTHY")
	require.Contains(t, out, "  - n2: 2 event(s) parked on the node")

	// parked list shows them, with their errors.
	node := s.nodes["n2"].DSN
	code, out, errOut := pgqctl(t, "parked", "list", "--dsn", node, "--json")
	require.Equal(t, 0, code, errOut)
	var parked []parkedJSON
	require.NoError(t, json.Unmarshal([]byte(out), &parked))
	require.Len(t, parked, 2)
	byPayload := map[string]parkedJSON{}
	for _, p := range parked {
		require.Equal(t, "pull.n2", p.Consumer)
		require.Equal(t, "n2", *p.Extra1)
		require.NotEmpty(t, p.Error)
		byPayload[*p.Extra2] = p
	}
	malformed, missing := byPayload["action=ins&id=%zz&origin=n1"], byPayload["action=upd&id=missing&origin=n1"]
	require.NotZero(t, malformed.ParkID)
	require.NotZero(t, missing.ParkID)
	code, out, _ = pgqctl(t, "parked", "list", "--dsn", node, "--consumer", "pull.n2")
	require.Equal(t, 0, code)
	require.Regexp(t, `PARK ID\s+CONSUMER`, out)
	require.Contains(t, out, "pull_queue.n2")
	code, out, _ = pgqctl(t, "parked", "list", "--dsn", node, "--consumer", "pull.other")
	require.Equal(t, 0, code)
	require.Contains(t, out, "no parked events")

	// The operator creates the missing row and replays: that one applies,
	// the malformed one stays parked (exit 1).
	_, err := s.nodes["n2"].Pool.Exec(s.ctx, "insert into rows values ('missing', 'n1', 'x')")
	require.NoError(t, err)
	code, out, errOut = pgqctl(t, "parked", "replay", "--dsn", node, "--applier", "row", "--table", "rows", "--keys", "id")
	require.Equal(t, 1, code, errOut)
	require.Contains(t, out, "replayed 1, still parked 1")
	require.Contains(t, out, "park id "+itoa(malformed.ParkID)+":")
	left, err := copier.ListParked(s.ctx, s.nodes["n2"].Pool, copier.ParkedFilter{})
	require.NoError(t, err)
	require.Len(t, left, 1)
	require.Equal(t, malformed.ParkID, left[0].ParkID)

	code, out, errOut = pgqctl(t, "parked", "purge", "--dsn", node, "--id", itoa(malformed.ParkID))
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "purged 1 parked event(s)")
	n, err := copier.CountParked(s.ctx, s.nodes["n2"].Pool, "")
	require.NoError(t, err)
	require.Zero(t, n)
	code, _ = s.status(t)
	require.Equal(t, 0, code)

	// An unknown, unreachable node is reported, not fatal to the others.
	code, out, _ = pgqctl(t, "copy", "status", "--json", "--routing", "per-target", "--hub", s.hub.DSN, "--node", "n1="+s.nodes["n1"].DSN,
		"--node", "n3=postgres://nobody@127.0.0.1:1/none?connect_timeout=5")
	require.Equal(t, 1, code)
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	require.Empty(t, rep.Nodes[0].Problems)
	require.Contains(t, rep.Nodes[1].Problems, "pull pull.n3 on hub 0: queue missing")
	require.Len(t, rep.Nodes[1].Problems, 2)
	require.Contains(t, rep.Nodes[1].Problems[1], `node: cannot connect to database "none" on 127.0.0.1:1 as user "nobody": connection refused`)
}

func TestCopyParkedTrackingUsageErrors(t *testing.T) {
	t.Parallel()
	const dsn = "postgres://nobody@127.0.0.1:1/none"
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"copy"}, "usage: pgqctl copy status"},
		{[]string{"copy", "stats"}, `unknown subcommand "stats"`},
		{[]string{"copy", "status", "--node", "n1=" + dsn}, "give at least one --hub"},
		{[]string{"copy", "status", "--hub", dsn}, "give at least one --node"},
		{[]string{"copy", "status", "--hub", dsn, "--node", "n1"}, `--node "n1": want name=dsn`},
		{[]string{"copy", "status", "--hub", dsn, "--node", "bad name=" + dsn}, "invalid node"},
		{[]string{"copy", "status", "--hub", dsn, "--node", "n1=" + dsn, "--node", "n1=" + dsn}, "given twice"},
		{[]string{"copy", "status", "--hub", dsn, "--node", "n1=" + dsn, "--routing", "mesh"}, `--routing "mesh"`},
		{[]string{"copy", "status", "--hub", "host=x port=nan", "--node", "n1=" + dsn}, "invalid --hub"},
		{[]string{"parked"}, "usage: pgqctl parked"},
		{[]string{"parked", "list", "--dsn", dsn, "--limit", "0"}, "--limit must be at least 1"},
		{[]string{"parked", "list", "--dsn", dsn, "--id", "x"}, "want integers"},
		{[]string{"parked", "replay", "--dsn", dsn}, "--applier row|func is required"},
		{[]string{"parked", "replay", "--dsn", dsn, "--applier", "sql"}, `want row or func`},
		{[]string{"parked", "replay", "--dsn", dsn, "--applier", "row", "--table", "t"}, "needs --table and --keys"},
		{[]string{"parked", "replay", "--dsn", dsn, "--applier", "func"}, "needs --func"},
		{[]string{"parked", "replay", "--dsn", dsn, "--applier", "row", "--table", "t", "--keys", "a,a"}, "listed twice"},
		{[]string{"parked", "purge", "--dsn", dsn}, "name what to purge"},
		{[]string{"tracking"}, "usage: pgqctl tracking"},
		{[]string{"tracking", "status", "--dsn", dsn, "extra"}, `unexpected argument "extra"`},
	} {
		code, _, errOut := pgqctl(t, tc.args...)
		require.Equal(t, exitUsage, code, "%q: %s", tc.args, errOut)
		require.Contains(t, errOut, tc.msg, "%q", tc.args)
	}
}

// TestParkedNotACopierNode: the parked commands on a database without the
// copier's tables say so, naming the database, instead of PostgreSQL's
// "relation does not exist".
func TestParkedNotACopierNode(t *testing.T) {
	t.Parallel()
	for _, db := range []*pgtest.DB{newDB(t), cluster.NewPlainDB(t)} { // pgq without a copier; no pgq at all
		want := `database "` + db.Name + `" is not a targeted-copy node: no parked events table (pgq_go.parked_event)`
		for _, tc := range []struct {
			name string
			args []string
		}{
			{"parked list", []string{"parked", "list", "--dsn", db.DSN}},
			{"parked list", []string{"parked", "list", "--dsn", db.DSN, "--json", "--consumer", "pull.n1"}},
			{"parked replay", []string{"parked", "replay", "--dsn", db.DSN, "--applier", "func", "--func", "public.apply_row"}},
			{"parked replay", []string{"parked", "replay", "--dsn", db.DSN, "--applier", "func", "--func", "public.apply_row", "--node", "n1"}},
			{"parked purge", []string{"parked", "purge", "--dsn", db.DSN, "--consumer", "pull.n1"}},
		} {
			code, out, errOut := pgqctl(t, tc.args...)
			require.Equal(t, 1, code, "%q: %s%s", tc.args, out, errOut)
			require.True(t, strings.HasPrefix(errOut, "pgqctl "+tc.name+": "+want), "%q: %s", tc.args, errOut)
			require.NotContains(t, errOut, "relation")
			require.Empty(t, out)
		}
	}
}
