// Command demo runs the targeted-copy pattern end to end: a hub and four
// node databases, a ticker, four node processes (examples/targetedcopy/node)
// and four producers (examples/targetedcopy/produce) writing rows with
// random targets. It shows live progress per node, then verifies that every
// row reached exactly its targets, once, and exits non-zero otherwise.
//
// `make demo` runs it inside a throwaway cluster (internal/sandbox). To use
// your own databases: demo --hub DSN --node n1=DSN --node n2=DSN ...
// (it truncates the demo tables rows, applies and sent on the nodes).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/apply"
	"github.com/pgq-go/pgq/copier"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/route"
	"github.com/pgq-go/pgq/ticker"
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
	flag.Var(&nodeList, "node", "name=DSN of a node database, repeatable (default: PGQ_DSN_N1..N4)")
	rows := flag.Int("rows", 2000, "rows each node produces")
	schema := flag.String("schema", "testdata/demo.sql", "node schema, run on every node first (the repository's shared fixture)")
	timeout := flag.Duration("timeout", 50*time.Second, "give up after this long")
	flag.Parse()
	b, err := os.ReadFile(*schema)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo: node schema:", err)
		os.Exit(2)
	}
	demoSQL = string(b)
	if len(nodeList) == 0 {
		for i := 1; i <= 4; i++ {
			if dsn := os.Getenv(fmt.Sprintf("PGQ_DSN_N%d", i)); dsn != "" {
				nodeList = append(nodeList, fmt.Sprintf("n%d=%s", i, dsn))
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout+30*time.Second)
	defer cancel()
	ok, err := run(ctx, *hub, nodeList, *rows, *timeout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(2)
	}
	if !ok {
		os.Exit(1)
	}
}

func run(ctx context.Context, hubDSN string, specs []string, rows int, timeout time.Duration) (bool, error) {
	if hubDSN == "" || len(specs) < 2 {
		return false, errors.New("need --hub and at least two --node name=DSN (or run it through make demo)")
	}
	hub, err := pgxpool.New(ctx, hubDSN)
	if err != nil {
		return false, err
	}
	defer hub.Close()
	var nodes []*node
	var names []string
	for _, s := range specs {
		name, dsn, ok := strings.Cut(s, "=")
		if !ok {
			return false, fmt.Errorf("--node %q: want name=DSN", s)
		}
		p, err := pgxpool.New(ctx, dsn)
		if err != nil {
			return false, err
		}
		defer p.Close()
		if _, err := p.Exec(ctx, demoSQL); err != nil {
			return false, fmt.Errorf("node %s schema: %w", name, err)
		}
		nodes = append(nodes, &node{name: name, dsn: dsn, pool: p})
		names = append(names, name)
	}

	// Register every node's consumers before anything is produced.
	ra, err := apply.NewRowApplier("rows", []string{"id"})
	if err != nil {
		return false, err
	}
	lag := 50 * time.Millisecond
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
	tk, err := ticker.New(ticker.Config{Servers: servers, TickPeriod: 50 * time.Millisecond, RetryPeriod: time.Second,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		return false, err
	}
	tctx, stopTicker := context.WithCancel(ctx)
	tickDone := make(chan error, 1)
	go func() { tickDone <- tk.Run(tctx) }()
	defer func() { stopTicker(); <-tickDone }()

	for _, n := range nodes {
		n.proc = exec.Command(filepath.Join(bin, "node"), "--node", n.name, "--local", n.dsn, "--hub", hubDSN)
		n.proc.Stdout, n.proc.Stderr = os.Stdout, os.Stderr
		if err := n.proc.Start(); err != nil {
			return false, err
		}
	}
	defer func() {
		for _, n := range nodes {
			_ = n.proc.Process.Signal(syscall.SIGTERM)
			_ = n.proc.Wait()
		}
	}()
	fmt.Printf("4 node processes, 1 ticker; producing %d rows per node with random targets\n", rows)
	started := time.Now()
	prodErr := make(chan error, len(nodes))
	for _, n := range nodes {
		cmd := exec.CommandContext(ctx, filepath.Join(bin, "produce"), "--local", n.dsn, "--node", n.name,
			"--nodes", strings.Join(names, ","), "--rows", fmt.Sprint(rows))
		cmd.Stderr = os.Stderr
		go func() { prodErr <- cmd.Run() }()
	}
	produced := 0
	deadline := time.Now().Add(timeout)
	var expected map[string]map[string]bool
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
		case <-time.After(300 * time.Millisecond):
		}
		// What the producers committed so far, from their sent tables.
		if expected, err = expectedRows(ctx, nodes); err != nil {
			return false, err
		}
		done, err := progress(ctx, hub, nodes, expected)
		if err != nil {
			fmt.Println("progress:", err)
		}
		if done && produced == len(nodes) || time.Now().After(deadline) {
			break
		}
	}
	fmt.Printf("delivered in %v\n\n", time.Since(started).Round(time.Millisecond))
	if expected, err = expectedRows(ctx, nodes); err != nil {
		return false, err
	}
	return verify(ctx, nodes, expected)
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

func progress(ctx context.Context, hub *pgxpool.Pool, nodes []*node, exp map[string]map[string]bool) (bool, error) {
	done := true
	var parts []string
	for _, n := range nodes {
		var applied int
		if err := n.pool.QueryRow(ctx, "select count(*) from rows").Scan(&applied); err != nil {
			return false, err
		}
		parked, err := copier.CountParked(ctx, n.pool, "")
		if err != nil {
			return false, err
		}
		pending := int64(-1)
		if ci, err := pgq.GetConsumerInfo(ctx, hub, "pull_queue", route.PullConsumerName(n.name)); err == nil {
			pending = ci.PendingEvents
		}
		parts = append(parts, fmt.Sprintf("%s applied %d/%d pending %d parked %d", n.name, applied, len(exp[n.name]), pending, parked))
		if applied < len(exp[n.name]) {
			done = false
		}
	}
	fmt.Println(strings.Join(parts, " | "))
	return done, nil
}

func verify(ctx context.Context, nodes []*node, exp map[string]map[string]bool) (bool, error) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "node\texpected\tapplied\tmissing\tduplicates\tmisdelivered\tparked\t")
	ok := true
	for _, n := range nodes {
		ids, err := collect(ctx, n.pool, "select id from rows")
		if err != nil {
			return false, err
		}
		var dups int
		if err := n.pool.QueryRow(ctx, "select count(*) from (select id from applies group by id having count(*) > 1) d").Scan(&dups); err != nil {
			return false, err
		}
		mis := 0
		for _, id := range ids {
			if !exp[n.name][id] {
				mis++
			}
		}
		missing := len(exp[n.name]) - (len(ids) - mis)
		parked, err := copier.CountParked(ctx, n.pool, "")
		if err != nil {
			return false, err
		}
		if missing != 0 || dups != 0 || mis != 0 || parked != 0 {
			ok = false
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t\n", n.name, len(exp[n.name]), len(ids), missing, dups, mis, parked)
	}
	tw.Flush()
	if ok {
		fmt.Println("\nOK: every row reached exactly its targets, once.")
	} else {
		fmt.Println("\nFAILED: see the table above.")
	}
	return ok, nil
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
