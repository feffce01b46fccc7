package main

import (
	"context"
	"encoding/json"
	"sync"
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

func TestCopyReshardUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"copy", "reshard"},
		{"copy", "reshard", "--old-hub", "host=a", "--node", "n1=host=b"},
		{"copy", "reshard", "--old-hub", "host=a", "--new-hub", "host=a"},
		{"copy", "reshard", "--old-hub", "host=a", "--new-hub", "host=b", "--new-hub", "host=b", "--node", "n1=host=c"},
		{"copy", "reshard", "--old-hub", "host=a", "--new-hub", "host=b", "--node", "n1=host=c", "--node", "n1=host=d"},
		{"copy", "reshard", "--old-hub", "host=a", "--new-hub", "host=b", "--node", "bad node=host=c"},
		{"copy", "reshard", "--old-hub", "host=a", "--new-hub", "host=b", "--node", "n1=host=c", "--routing", "star"},
	} {
		code, _, errOut := pgqctl(t, args...)
		require.Equal(t, exitUsage, code, "%v: %s", args, errOut)
	}
	code, _, errOut := pgqctl(t, "copy", "reshard", "--help")
	require.Equal(t, 0, code)
	require.Contains(t, errOut, "--old-hub")
}

// TestCopyReshard moves a cluster from one hub to two with rows waiting:
// the command reports what it did per node, a second run refuses, and the
// copiers started with the new hubs deliver every row once.
func TestCopyReshard(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	h1, h2 := cluster.NewDB(t), cluster.NewDB(t)
	nodes := map[string]*pgtest.DB{}
	for _, n := range []string{"n1", "n2"} {
		nodes[n] = cluster.NewDB(t)
		_, err := nodes[n].Pool.Exec(ctx, "create table rows (id text primary key, origin text, payload text)")
		require.NoError(t, err)
	}
	require.Equal(t, 1, route.ShardOf("n2", 2), "n2 moves to the second hub")
	config := func(n string, hubs ...*pgtest.DB) copier.Config {
		ra, err := apply.NewRowApplier("rows", []string{"id"})
		require.NoError(t, err)
		var hp []*pgxpool.Pool
		for _, h := range hubs {
			hp = append(hp, h.Pool)
		}
		return copier.Config{Node: n, Local: nodes[n].Pool, Hubs: hp, Applier: ra, Routing: copier.RoutingPerTarget,
			PollInterval: 20 * time.Millisecond,
			ErrorBackoff: consumer.Backoff{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond}}
	}
	for n := range nodes {
		tc, err := copier.New(config(n, h1))
		require.NoError(t, err)
		require.NoError(t, tc.Setup(ctx))
	}
	// Rows produced while the copiers are stopped: the relays carry them
	// to h1 up to the cut, and n2's are moved on to h2.
	send := func(origin, target string, ids ...string) {
		tx, err := nodes[origin].Pool.Begin(ctx)
		require.NoError(t, err)
		defer tx.Rollback(context.Background())
		for _, id := range ids {
			_, err := route.Sender{Queue: "push_queue"}.Send(ctx, tx, []string{target}, urlenc.Fields{"action": "ins", "id": id, "origin": origin})
			require.NoError(t, err)
		}
		require.NoError(t, tx.Commit(ctx))
	}
	send("n1", "n2", "a", "b", "c")
	send("n2", "n1", "d")

	args := []string{"copy", "reshard", "--routing", "per-target", "--old-hub", h1.DSN, "--new-hub", h1.DSN, "--new-hub", h2.DSN,
		"--node", "n1=" + nodes["n1"].DSN, "--node", "n2=" + nodes["n2"].DSN}
	code, out, errOut := pgqctl(t, append(args, "--json")...)
	require.Equal(t, 0, code, "stdout: %s\nstderr: %s", out, errOut)
	var rep reshardReportJSON
	require.NoError(t, json.Unmarshal([]byte(out), &rep), out)
	require.True(t, rep.Done)
	require.Len(t, rep.Nodes, 2)
	for _, n := range rep.Nodes {
		require.Equal(t, []string{route.RelayConsumerName(n.Node, 1)}, n.Registered, n.Node)
		require.Equal(t, []string{route.RelayConsumerName(n.Node, 0)}, n.Kept, n.Node)
		require.Positive(t, n.Cut)
	}
	n1, n2 := rep.Nodes[0], rep.Nodes[1]
	require.Equal(t, "n1", n1.Node)
	require.EqualValues(t, 3, n1.Relayed)
	require.False(t, n1.PullMoved)
	require.True(t, n2.PullMoved)
	require.Equal(t, 1, n2.NewHub)
	require.EqualValues(t, 3, n2.Moved, "n2's three rows moved to the second hub")

	// Done: the same command now refuses (the relays are the new layout's)
	// and changes nothing.
	code, _, errOut = pgqctl(t, args...)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "reshard refused")
	require.Contains(t, errOut, "relay.n1.s1")

	// The copiers with the new hubs deliver everything.
	tctx, stopTicker := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for tctx.Err() == nil {
			for _, p := range []*pgxpool.Pool{h1.Pool, h2.Pool, nodes["n1"].Pool, nodes["n2"].Pool} {
				_, _ = pgq.Ticker(tctx, p)
			}
			select {
			case <-tctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	defer func() { stopTicker(); wg.Wait() }()
	var stops []func()
	for n := range nodes {
		tc, err := copier.New(config(n, h1, h2))
		require.NoError(t, err)
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- tc.Run(cctx) }()
		var once sync.Once
		stop := func() { once.Do(func() { cancel(); require.NoError(t, <-done) }) }
		t.Cleanup(stop)
		stops = append(stops, stop)
	}
	count := func(n string) int {
		var c int
		require.NoError(t, nodes[n].Pool.QueryRow(ctx, "select count(*) from rows").Scan(&c))
		return c
	}
	require.Eventually(t, func() bool { return count("n1") == 1 && count("n2") == 3 }, 60*time.Second, 20*time.Millisecond)

	for _, stop := range stops {
		stop()
	}

	// The same hubs again (what renames legacy relays): nothing to move;
	// the table has a line per node.
	code, out, errOut = pgqctl(t, "copy", "reshard", "--routing", "per-target", "--old-hub", h1.DSN, "--old-hub", h2.DSN,
		"--new-hub", h1.DSN, "--new-hub", h2.DSN, "--node", "n1="+nodes["n1"].DSN, "--node", "n2="+nodes["n2"].DSN)
	require.Equal(t, 0, code, "stdout: %s\nstderr: %s", out, errOut)
	require.Regexp(t, `(?m)^n1\s+\d+\s+0\s+0 -> 0\s+-\s+-\s+relay\.n1,relay\.n1\.s1\s+-$`, out)
	require.Regexp(t, `(?m)^n2\s+\d+\s+0\s+1 -> 1\s+-\s+-\s+relay\.n2,relay\.n2\.s1\s+-$`, out)
	require.Contains(t, out, "reshard: done")
}
