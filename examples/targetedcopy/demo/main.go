// Command demo runs the targeted-copy pattern end to end: a hub and N node
// databases (--nodes, default 4, from 2 to 256), a ticker, N node processes
// (examples/targetedcopy/node) and N producers
// (examples/targetedcopy/produce) writing rows with random targets. It
// shows live progress (a line per node up to 8 nodes, a summary line
// beyond), then verifies that every row reached exactly its targets, once,
// and exits non-zero otherwise. The verification table has a line per node
// up to 64 nodes; beyond, it lists only the nodes that failed, then totals.
//
// `make demo` runs it inside a throwaway cluster (internal/sandbox), and
// `make demo NODES=16` with 16 nodes; by hand:
//
//	go run ./internal/sandbox -db hub,n1..n16 -- go run ./examples/targetedcopy/demo --nodes 16
//
// To use your own databases: demo --hub DSN --node n1=DSN --node n2=DSN ...
// (it truncates the demo tables rows, applies and sent on the nodes).
// Before it starts anything, it checks that every server's max_connections
// leaves room for the connections the run opens (see connsPerNodeHub).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/apply"
	"github.com/pgq-go/pgq/copier"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/route"
	"github.com/pgq-go/pgq/ticker"
)

// The node count bounds of --nodes.
const (
	minNodes = 2
	maxNodes = 256
)

// Above these node counts, progress prints one summary line per poll and
// the verification table lists only the nodes that failed.
const (
	maxProgressLines = 8
	maxTableLines    = 64
)

// demoSQL is the node schema (--schema): rows receives copied rows, a
// trigger logs every write into applies (a row applied twice shows up even
// though the applier upserts), sent records what the node sent.
var demoSQL string

type nodeFlags []string

func (n *nodeFlags) String() string     { return strings.Join(*n, ",") }
func (n *nodeFlags) Set(v string) error { *n = append(*n, v); return nil }

type node struct {
	name, dsn string
	pool      *pgxpool.Pool
	proc      *exec.Cmd
}

func main() {
	var nodeList nodeFlags
	hub := flag.String("hub", os.Getenv("PGQ_DSN_HUB"), "hub database DSN (env PGQ_DSN_HUB)")
	nodes := flag.Int("nodes", 4, fmt.Sprintf("number of nodes, %d..%d; their DSNs come from PGQ_DSN_N1..PGQ_DSN_N<nodes> (what the sandbox exports) unless --node is given", minNodes, maxNodes))
	flag.Var(&nodeList, "node", "name=DSN of a node database, repeatable (default: PGQ_DSN_N1..N<nodes>)")
	rows := flag.Int("rows", 0, "rows each node produces (default: about 3000 rows reach each node up to 16 nodes, 48000 rows in all beyond; 2000 per node at 4 nodes)")
	schema := flag.String("schema", "testdata/demo.sql", "node schema, run on every node first (the repository's shared fixture)")
	timeout := flag.Duration("timeout", 0, "give up delivering after this long (default 50s, plus 1s per node beyond 4)")
	flag.Parse()
	nodesSet := false
	flag.Visit(func(f *flag.Flag) { nodesSet = nodesSet || f.Name == "nodes" })
	specs, err := nodeSpecs(nodeList, *nodes, nodesSet, os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(2)
	}
	if *rows == 0 {
		*rows = defaultRows(len(specs))
	}
	if *timeout == 0 {
		*timeout = defaultTimeout(len(specs))
	}
	if *rows < 1 || *timeout < 0 {
		fmt.Fprintln(os.Stderr, "demo: --rows must be positive and --timeout not negative")
		os.Exit(2)
	}
	b, err := os.ReadFile(*schema)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo: node schema:", err)
		os.Exit(2)
	}
	demoSQL = string(b)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout+30*time.Second+time.Duration(len(specs))*time.Second)
	defer cancel()
	ok, err := run(ctx, *hub, specs, *rows, *timeout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(2)
	}
	if !ok {
		os.Exit(1)
	}
}

// nodeSpecs returns the name=DSN of every node: the --node flags when
// given (their count must match --nodes when that is set too), else n
// nodes n1..n<n> from PGQ_DSN_N1..PGQ_DSN_N<n>.
func nodeSpecs(given []string, n int, nSet bool, getenv func(string) string) ([]string, error) {
	if len(given) > 0 {
		if nSet && n != len(given) {
			return nil, fmt.Errorf("--nodes %d but %d --node flags", n, len(given))
		}
		n = len(given)
	}
	if n < minNodes || n > maxNodes {
		return nil, fmt.Errorf("--nodes %d: want %d..%d nodes", n, minNodes, maxNodes)
	}
	if len(given) > 0 {
		return given, nil
	}
	specs := make([]string, 0, n)
	for i := 1; i <= n; i++ {
		key := fmt.Sprintf("PGQ_DSN_N%d", i)
		dsn := getenv(key)
		if dsn == "" {
			return nil, fmt.Errorf("%s is not set: %d nodes need PGQ_DSN_N1..PGQ_DSN_N%d; run `make demo NODES=%d`, "+
				"or go run ./internal/sandbox -db hub,n1..n%d -- go run ./examples/targetedcopy/demo --nodes %d, "+
				"or pass --hub DSN and --node name=DSN for each node", key, n, n, n, n, n)
		}
		specs = append(specs, fmt.Sprintf("n%d=%s", i, dsn))
	}
	return specs, nil
}

// defaultRows sizes the run: about 3000 rows reach each node up to 16
// nodes; beyond, about 48000 rows are delivered in all, so that 64 nodes
// still finish in a few minutes on a 2-core machine (every pull scans the
// shared pull queue's batches, and 64 node processes share the CPU). A
// producer sends each row to about half the other nodes.
func defaultRows(n int) int {
	perNode := 3000
	if n > 16 {
		perNode = 48000 / n
	}
	return max(1, perNode*2/(n-1))
}

// defaultTimeout gives larger runs more time to deliver.
func defaultTimeout(n int) time.Duration {
	return 50*time.Second + time.Duration(max(0, n-4))*time.Second
}

// tickPeriod is the ticker's period and the queues' ticker_max_lag: 50ms
// up to 4 nodes, 12.5ms per node beyond (800ms at 64), at most 2s. Every
// tick of the shared pull queue wakes all N pulls, each of which then runs
// a batch on the hub and on its node: at 64 nodes a 50ms tick would spend
// a small machine's CPU on near-empty batches instead of rows.
func tickPeriod(n int) time.Duration {
	return min(2*time.Second, max(50*time.Millisecond, time.Duration(n)*25*time.Millisecond/2))
}

// Connections one node costs while the demo runs, from the peaks of
// pg_stat_activity per database at 4, 16 and 64 nodes (hub 14, 50 and 205;
// each node at most 6), with a margin: on the hub, the
// node process's relay and pull (their batches, the pull's LISTEN
// connection and the relay's target registration); on the node, the node
// process (pull batch, relay LISTEN), its producer, the demo's pool and the
// ticker. The hub also has the demo's pool and the ticker's connection.
const (
	connsPerNodeHub   = 4
	connsPerNodeLocal = 6
	connsHubFixed     = 6
)

// checkConnections fails when a server's max_connections leaves too little
// room for the run, instead of letting node processes fail one by one.
func checkConnections(ctx context.Context, hubDSN string, nodes []*node) error {
	need := map[string]int{}
	dsnOf := map[string]string{}
	add := func(dsn string, n int) error {
		cfg, err := pgx.ParseConfig(dsn)
		if err != nil {
			return err
		}
		key := net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
		need[key] += n
		dsnOf[key] = dsn
		return nil
	}
	if err := add(hubDSN, connsHubFixed+connsPerNodeHub*len(nodes)); err != nil {
		return fmt.Errorf("hub DSN: %w", err)
	}
	for _, n := range nodes {
		if err := add(n.dsn, connsPerNodeLocal); err != nil {
			return fmt.Errorf("node %s DSN: %w", n.name, err)
		}
	}
	for key, want := range need {
		conn, err := pgx.Connect(ctx, dsnOf[key])
		if err != nil {
			return fmt.Errorf("check max_connections on %s: %w", key, err)
		}
		var maxConns, reserved, used int
		err = conn.QueryRow(ctx, `select current_setting('max_connections')::int,
			current_setting('superuser_reserved_connections')::int,
			(select count(*) from pg_stat_activity where backend_type = 'client backend')`).Scan(&maxConns, &reserved, &used)
		conn.Close(ctx)
		if err != nil {
			return fmt.Errorf("check max_connections on %s: %w", key, err)
		}
		if free := maxConns - reserved - used; free < want {
			return fmt.Errorf("%d nodes need about %d connections on %s, which has %d free "+
				"(max_connections %d, %d reserved, %d in use): raise max_connections or run fewer nodes",
				len(nodes), want, key, free, maxConns, reserved, used)
		}
	}
	return nil
}

func run(ctx context.Context, hubDSN string, specs []string, rows int, timeout time.Duration) (bool, error) {
	if hubDSN == "" || len(specs) < minNodes {
		return false, errors.New("need --hub and at least two --node name=DSN (or run it through make demo)")
	}
	var nodes []*node
	var names []string
	for _, s := range specs {
		name, dsn, ok := strings.Cut(s, "=")
		if !ok {
			return false, fmt.Errorf("--node %q: want name=DSN", s)
		}
		nodes = append(nodes, &node{name: name, dsn: dsn})
		names = append(names, name)
	}
	if err := checkConnections(ctx, hubDSN, nodes); err != nil {
		return false, err
	}
	hub, err := pgxpool.New(ctx, hubDSN)
	if err != nil {
		return false, err
	}
	defer hub.Close()
	for _, n := range nodes {
		p, err := pgxpool.New(ctx, n.dsn)
		if err != nil {
			return false, err
		}
		defer p.Close()
		if _, err := p.Exec(ctx, demoSQL); err != nil {
			return false, fmt.Errorf("node %s schema: %w", n.name, err)
		}
		n.pool = p
	}

	// Register every node's consumers before anything is produced.
	ra, err := apply.NewRowApplier("rows", []string{"id"})
	if err != nil {
		return false, err
	}
	lag := tickPeriod(len(nodes))
	for _, n := range nodes {
		tc, err := copier.New(copier.Config{Node: n.name, Local: n.pool,
			Hubs: []*pgxpool.Pool{hub}, Applier: ra, QueueConfig: pgq.QueueConfig{TickerMaxLag: &lag}})
		if err != nil {
			return false, err
		}
		if err := tc.Setup(ctx); err != nil {
			return false, fmt.Errorf("setup %s: %w", n.name, err)
		}
	}

	bin, err := os.MkdirTemp("", "pgq-demo-")
	if err != nil {
		return false, err
	}
	defer os.RemoveAll(bin)
	fmt.Println("building examples/targetedcopy/node and produce ...")
	for _, p := range []string{"node", "produce"} {
		out, err := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(bin, p), "./examples/targetedcopy/"+p).CombinedOutput()
		if err != nil {
			return false, fmt.Errorf("go build %s: %w\n%s", p, err, out)
		}
	}

	// One ticker for the hub and every node (what pgqctl ticker does).
	servers := []ticker.Server{{ConnString: hubDSN}}
	for _, n := range nodes {
		servers = append(servers, ticker.Server{ConnString: n.dsn})
	}
	tk, err := ticker.New(ticker.Config{Servers: servers, TickPeriod: lag, RetryPeriod: time.Second,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		return false, err
	}
	tctx, stopTicker := context.WithCancel(ctx)
	tickDone := make(chan error, 1)
	go func() { tickDone <- tk.Run(tctx) }()
	defer func() { stopTicker(); <-tickDone }()

	// Stop every node process first, then wait for them all: they shut
	// down side by side.
	defer func() {
		for _, n := range nodes {
			if n.proc != nil {
				_ = n.proc.Process.Signal(syscall.SIGTERM)
			}
		}
		for _, n := range nodes {
			if n.proc != nil {
				_ = n.proc.Wait()
			}
		}
	}()
	for _, n := range nodes {
		proc := exec.Command(filepath.Join(bin, "node"), "--node", n.name, "--local", n.dsn, "--hub", hubDSN, "--max-lag", lag.String())
		proc.Stdout, proc.Stderr = os.Stdout, os.Stderr
		if err := proc.Start(); err != nil {
			return false, err
		}
		n.proc = proc
	}
	fmt.Printf("%d node processes, 1 ticker (every %v); producing %d rows per node with random targets\n", len(nodes), lag, rows)
	started := time.Now()
	prodErr := make(chan error, len(nodes))
	for _, n := range nodes {
		cmd := exec.CommandContext(ctx, filepath.Join(bin, "produce"), "--local", n.dsn, "--node", n.name,
			"--nodes", strings.Join(names, ","), "--rows", fmt.Sprint(rows))
		cmd.Stderr = os.Stderr
		go func() { prodErr <- cmd.Run() }()
	}
	poll := 300 * time.Millisecond
	if len(nodes) > maxProgressLines {
		poll = time.Second
	}
	produced := 0
	deadline := time.Now().Add(timeout)
	for {
		select {
		case err := <-prodErr:
			if err != nil {
				return false, fmt.Errorf("producer: %w", err)
			}
			if produced++; produced == len(nodes) {
				fmt.Printf("produced in %v\n", time.Since(started).Round(time.Millisecond))
			}
			continue
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(poll):
		}
		st, err := progress(ctx, hub, nodes)
		if err != nil {
			fmt.Println("progress:", err)
			continue
		}
		printProgress(st)
		if allApplied(st) && produced == len(nodes) || time.Now().After(deadline) {
			break
		}
	}
	fmt.Printf("delivered in %v\n\n", time.Since(started).Round(time.Millisecond))
	expected, err := expectedRows(ctx, nodes)
	if err != nil {
		return false, err
	}
	return verify(ctx, nodes, expected)
}

// nodeProgress is one node's progress: rows committed for it so far by
// the producers, rows applied, events waiting on the hub (-1 before its
// pull consumer exists), rows parked.
type nodeProgress struct {
	name              string
	expected, applied int
	pending           int64
	parked            int
}

func progress(ctx context.Context, hub *pgxpool.Pool, nodes []*node) ([]nodeProgress, error) {
	// What the producers committed so far, from their sent tables.
	expected := map[string]int{}
	for _, n := range nodes {
		rs, err := n.pool.Query(ctx, "select t, count(*) from sent, unnest(targets) t group by t")
		if err != nil {
			return nil, err
		}
		for rs.Next() {
			var t string
			var c int
			if err := rs.Scan(&t, &c); err != nil {
				rs.Close()
				return nil, err
			}
			expected[t] += c
		}
		rs.Close()
		if err := rs.Err(); err != nil {
			return nil, err
		}
	}
	pending := map[string]int64{}
	// Before the first relay creates pull_queue there is nothing pending to list.
	if cs, err := pgq.ListConsumers(ctx, hub, "pull_queue"); err == nil {
		for _, c := range cs {
			pending[c.Name] = c.PendingEvents
		}
	}
	out := make([]nodeProgress, 0, len(nodes))
	for _, n := range nodes {
		p := nodeProgress{name: n.name, expected: expected[n.name], pending: -1}
		if err := n.pool.QueryRow(ctx, "select count(*) from rows").Scan(&p.applied); err != nil {
			return nil, err
		}
		parked, err := copier.CountParked(ctx, n.pool, "")
		if err != nil {
			return nil, err
		}
		p.parked = int(parked)
		if v, ok := pending[route.PullConsumerName(n.name)]; ok {
			p.pending = v
		}
		out = append(out, p)
	}
	return out, nil
}

func allApplied(st []nodeProgress) bool {
	for _, p := range st {
		if p.applied < p.expected {
			return false
		}
	}
	return true
}

// printProgress prints a line per node for a few nodes, else one summary.
func printProgress(st []nodeProgress) {
	if len(st) <= maxProgressLines {
		parts := make([]string, 0, len(st))
		for _, p := range st {
			parts = append(parts, fmt.Sprintf("%s applied %d/%d pending %d parked %d", p.name, p.applied, p.expected, p.pending, p.parked))
		}
		fmt.Println(strings.Join(parts, " | "))
		return
	}
	fmt.Println(progressSummary(st))
}

func progressSummary(st []nodeProgress) string {
	var applied, expected, done, parked int
	// With the shared pull queue every pull's pending count covers the
	// whole queue, so the largest is the backlog, not the sum.
	var backlog int64
	for _, p := range st {
		applied += p.applied
		expected += p.expected
		parked += p.parked
		backlog = max(backlog, p.pending)
		if p.applied >= p.expected {
			done++
		}
	}
	return fmt.Sprintf("applied %d/%d rows | nodes caught up %d/%d | hub backlog %d events | parked %d",
		applied, expected, done, len(st), backlog, parked)
}

// expectedRows reads every node's sent table: node → ids meant for it.
func expectedRows(ctx context.Context, nodes []*node) (map[string]map[string]bool, error) {
	exp := map[string]map[string]bool{}
	for _, n := range nodes {
		exp[n.name] = map[string]bool{}
	}
	for _, n := range nodes {
		rs, err := n.pool.Query(ctx, "select id, targets from sent")
		if err != nil {
			return nil, err
		}
		for rs.Next() {
			var id string
			var targets []string
			if err := rs.Scan(&id, &targets); err != nil {
				rs.Close()
				return nil, err
			}
			for _, t := range targets {
				if exp[t] == nil {
					rs.Close()
					return nil, fmt.Errorf("row %s sent to unknown node %s", id, t)
				}
				exp[t][id] = true
			}
		}
		rs.Close()
		if err := rs.Err(); err != nil {
			return nil, err
		}
	}
	return exp, nil
}

// nodeResult is one line of the verification table.
type nodeResult struct {
	name                                          string
	expected, applied, missing, dups, mis, parked int
}

func (r nodeResult) ok() bool { return r.missing == 0 && r.dups == 0 && r.mis == 0 && r.parked == 0 }

func verify(ctx context.Context, nodes []*node, exp map[string]map[string]bool) (bool, error) {
	results := make([]nodeResult, 0, len(nodes))
	for _, n := range nodes {
		ids, err := collect(ctx, n.pool, "select id from rows")
		if err != nil {
			return false, err
		}
		r := nodeResult{name: n.name, expected: len(exp[n.name]), applied: len(ids)}
		// A row written twice is logged twice in applies, even though the
		// applier upserts: this is the exactly-once check.
		if err := n.pool.QueryRow(ctx, "select count(*) from (select id from applies group by id having count(*) > 1) d").Scan(&r.dups); err != nil {
			return false, err
		}
		for _, id := range ids {
			if !exp[n.name][id] {
				r.mis++
			}
		}
		r.missing = r.expected - (r.applied - r.mis)
		parked, err := copier.CountParked(ctx, n.pool, "")
		if err != nil {
			return false, err
		}
		r.parked = int(parked)
		results = append(results, r)
	}
	ok := printTable(os.Stdout, results)
	if ok {
		fmt.Println("\nOK: every row reached exactly its targets, once.")
	} else {
		fmt.Println("\nFAILED: see the table above.")
	}
	return ok, nil
}

// printTable writes the verification table: a line per node up to
// maxTableLines nodes, else only the failed nodes (at most maxTableLines);
// then the totals. It reports whether every node is OK.
func printTable(w io.Writer, results []nodeResult) bool {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "node\texpected\tapplied\tmissing\tduplicates\tmisdelivered\tparked\t")
	line := func(r nodeResult) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t\n", r.name, r.expected, r.applied, r.missing, r.dups, r.mis, r.parked)
	}
	all := len(results) <= maxTableLines
	total := nodeResult{name: "total"}
	failed, shown := 0, 0
	minExp, maxExp := -1, 0
	for _, r := range results {
		if !r.ok() {
			failed++
		}
		if all || !r.ok() && shown < maxTableLines {
			line(r)
			shown++
		}
		total.expected += r.expected
		total.applied += r.applied
		total.missing += r.missing
		total.dups += r.dups
		total.mis += r.mis
		total.parked += r.parked
		if minExp < 0 || r.expected < minExp {
			minExp = r.expected
		}
		maxExp = max(maxExp, r.expected)
	}
	if !all && failed > shown {
		fmt.Fprintf(tw, "... %d more failed nodes\t\t\t\t\t\t\t\n", failed-shown)
	}
	line(total)
	tw.Flush()
	if !all {
		fmt.Fprintf(w, "%d nodes (table lists only failed ones), %d OK, %d failed; %d to %d rows expected per node\n",
			len(results), len(results)-failed, failed, minExp, maxExp)
	}
	return failed == 0
}

func collect(ctx context.Context, p *pgxpool.Pool, sql string) ([]string, error) {
	rs, err := p.Query(ctx, sql)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []string
	for rs.Next() {
		var s string
		if err := rs.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return out, rs.Err()
}
