// Command capture shows targeted replication without application
// changes: a table on node n1 is captured (copier.AddCapture), and plain
// INSERT, UPDATE and DELETE statements on it make its rows appear, change,
// move and disappear on exactly the nodes each row's targets column
// names, through a hub, with one in-process TargetedCopier per node and a
// ticker. It prints each statement, then a verification table, and exits
// non-zero if a node does not hold exactly its rows.
//
// `make demo` runs it in a throwaway cluster; by hand:
//
//	go run ./internal/sandbox -db hub,n1..n3 -- go run ./examples/capture
//
// or against your own databases (it drops and creates the table
// capture_demo on each): capture --hub DSN --node n1=DSN --node n2=DSN --node n3=DSN
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/apply"
	"github.com/pgq-go/pgq/copier"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/ticker"
)

// The demo's table, the same on every node; n1's is captured.
const ddl = `drop table if exists capture_demo;
create table capture_demo (id int primary key, targets text[], owner text, balance numeric)`

// The statements run on n1, as an application would run them.
var statements = []struct{ sql, says string }{
	{`insert into capture_demo values (1, '{n2}', 'alice', 100), (2, '{n2,n3}', 'bob', 250),
	  (3, '{n3}', 'carol', 75), (4, '{}', 'dave', 5)`, "four rows: to n2, to n2 and n3, to n3, to nobody"},
	{`update capture_demo set balance = balance + 10 where id = 2`, "bob's balance changes on n2 and n3"},
	{`update capture_demo set targets = '{n3}' where id = 1`, "alice moves from n2 to n3"},
	{`delete from capture_demo where id = 3`, "carol disappears from n3"},
	{`update capture_demo set targets = '{n2}', owner = 'dave r.' where id = 4`, "dave appears on n2"},
}

type node struct {
	name string
	dsn  string
	pool *pgxpool.Pool
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hub := flag.String("hub", os.Getenv("PGQ_DSN_HUB"), "the hub database (default $PGQ_DSN_HUB)")
	var specs []string
	flag.Func("node", "a node as name=DSN (n1, n2, n3; default $PGQ_DSN_N1..3)", func(s string) error {
		specs = append(specs, s)
		return nil
	})
	flag.Parse()
	if len(specs) == 0 {
		for _, n := range []string{"n1", "n2", "n3"} {
			specs = append(specs, n+"="+os.Getenv("PGQ_DSN_"+strings.ToUpper(n)))
		}
	}
	ok, err := run(ctx, *hub, specs, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "capture demo:", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(1)
	}
}

// run runs the demo and reports whether every node holds exactly its rows.
func run(ctx context.Context, hubDSN string, specs []string, out io.Writer) (bool, error) {
	if hubDSN == "" {
		return false, errors.New("no hub: give --hub DSN (or run under internal/sandbox -db hub,n1..n3)")
	}
	var nodes []*node
	for _, s := range specs {
		name, dsn, ok := strings.Cut(s, "=")
		if !ok || dsn == "" {
			return false, fmt.Errorf("--node %q: want name=DSN (n1, n2 and n3)", s)
		}
		nodes = append(nodes, &node{name: name, dsn: dsn})
	}
	if got := names(nodes); !slices.Equal(got, []string{"n1", "n2", "n3"}) {
		return false, fmt.Errorf("want nodes n1, n2 and n3, got %v", got)
	}
	hub, err := pgxpool.New(ctx, hubDSN)
	if err != nil {
		return false, fmt.Errorf("hub: %w", err)
	}
	defer hub.Close()
	for _, n := range nodes {
		if n.pool, err = pgxpool.New(ctx, n.dsn); err != nil {
			return false, fmt.Errorf("%s: %w", n.name, err)
		}
		defer n.pool.Close()
		if _, err := n.pool.Exec(ctx, ddl); err != nil {
			return false, fmt.Errorf("%s: %w", n.name, err)
		}
	}

	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	applier, err := apply.NewRowApplier("capture_demo", []string{"id"})
	if err != nil {
		return false, err
	}
	var copiers []*copier.TargetedCopier
	for _, n := range nodes {
		tc, err := copier.New(copier.Config{Node: n.name, Local: n.pool, Hubs: []*pgxpool.Pool{hub},
			PushQueue: "capture_push", PullQueue: "capture_pull", Applier: applier, Logger: quiet,
			QueueConfig: pgq.QueueConfig{TickerMaxLag: pgq.Ptr(50 * time.Millisecond)}})
		if err != nil {
			return false, err
		}
		if err := tc.Setup(ctx); err != nil {
			return false, fmt.Errorf("setup %s: %w", n.name, err)
		}
		copiers = append(copiers, tc)
	}
	// The one line that makes n1's table replicate by its targets column.
	if err := copier.AddCapture(ctx, nodes[0].pool, copier.CaptureConfig{
		Table: "capture_demo", Queue: "capture_push", Origin: "n1", TargetColumn: "targets"}); err != nil {
		return false, err
	}
	fmt.Fprintln(out, "n1: capture_demo captured: each row goes to the nodes of its targets column")

	servers := []ticker.Server{{ConnString: hubDSN}}
	for _, n := range nodes {
		servers = append(servers, ticker.Server{ConnString: n.dsn})
	}
	tk, err := ticker.New(ticker.Config{Servers: servers, TickPeriod: 50 * time.Millisecond, Logger: quiet})
	if err != nil {
		return false, err
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, len(copiers)+1)
	go func() { done <- tk.Run(rctx) }()
	for _, tc := range copiers {
		go func() { done <- tc.Run(rctx) }()
	}
	defer func() {
		cancel()
		for range len(copiers) + 1 {
			<-done
		}
	}()

	for _, st := range statements {
		fmt.Fprintf(out, "\nn1=> %s;\n     -- %s\n", strings.Join(strings.Fields(st.sql), " "), st.says)
		if _, err := nodes[0].pool.Exec(ctx, st.sql); err != nil {
			return false, fmt.Errorf("n1: %w", err)
		}
		if _, err := waitConverged(ctx, nodes, 30*time.Second); err != nil {
			return false, err
		}
		for _, n := range nodes[1:] {
			rows, err := tableRows(ctx, n.pool, "")
			if err != nil {
				return false, err
			}
			fmt.Fprintf(out, "     %s: %s\n", n.name, strings.Join(rows, "  "))
		}
	}

	ok, err := waitConverged(ctx, nodes, 30*time.Second)
	if err != nil {
		return false, err
	}
	fmt.Fprintln(out, "\nverification (rows of n1 addressed to each node, against what the node holds):")
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "node\texpected\tholds\tresult")
	for _, n := range nodes[1:] {
		want, got, err := rowsOf(ctx, nodes[0], n)
		if err != nil {
			return false, err
		}
		res := "OK"
		if !slices.Equal(want, got) {
			res = "MISMATCH"
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%s\n", n.name, len(want), len(got), res)
	}
	if err := w.Flush(); err != nil {
		return false, err
	}
	return ok, nil
}

func names(nodes []*node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.name)
	}
	return out
}

// tableRows lists capture_demo's rows (those addressed to target, if
// given) as text, by id.
func tableRows(ctx context.Context, pool *pgxpool.Pool, target string) ([]string, error) {
	q := "select format('%s:%s/%s', id, owner, balance) from capture_demo"
	var args []any
	if target != "" {
		q += " where $1 = any(targets)"
		args = append(args, target)
	}
	rows, err := pool.Query(ctx, q+" order by id", args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// rowsOf returns the rows origin addresses to n, and the rows n holds.
func rowsOf(ctx context.Context, origin, n *node) (want, got []string, err error) {
	if want, err = tableRows(ctx, origin.pool, n.name); err != nil {
		return nil, nil, err
	}
	got, err = tableRows(ctx, n.pool, "")
	return want, got, err
}

// waitConverged waits until every target node holds exactly n1's rows
// addressed to it, or the timeout; it reports which.
func waitConverged(ctx context.Context, nodes []*node, timeout time.Duration) (bool, error) {
	deadline := time.Now().Add(timeout)
	for {
		same := true
		for _, n := range nodes[1:] {
			want, got, err := rowsOf(ctx, nodes[0], n)
			if err != nil {
				return false, err
			}
			same = same && slices.Equal(want, got)
		}
		if same {
			return true, nil
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
