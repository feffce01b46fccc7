// Command bench measures pgq-go on one PostgreSQL server and prints each
// figure beside the raw PostgreSQL ceiling measured in the same run; "make
// bench" runs it. It lives apart from the operator's binary (pgqctl): it
// starts throwaway clusters and carries the measurement harness
// (bench/internal/harness), which an operator never needs.
//
//	go run ./bench [flags]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"os/signal"
	"syscall"

	"github.com/pgq-go/pgq/bench/internal/harness"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const benchUsage = `usage: go run ./bench [flags]

Measures pgq-go on one server and prints each figure beside the raw
PostgreSQL ceiling measured in the same run (median of --runs runs), then
writes the results as JSON (bench/results.json). "make bench" runs it.

Without --dsn it starts a throwaway PostgreSQL cluster (initdb in a temp
directory, fsync off; needs the server and its pgq extension installed:
scripts/ensure-deps) and removes it afterwards.

With --dsn it uses that server: it creates scratch databases named
pgq_bench_<pid>_<case> (create database + create extension pgq, so the
role needs CREATEDB and the right to create the pgq extension, which must
be installed on the server), runs an in-process ticker on them only, and
drops them (drop database ... with (force)) when it ends. It touches no
other database. Hub CPU figures need the server on this machine (/proc).

Case families (--cases): insert, apply, consume, latency, ticker, targeted,
seed (the TargetedCopier against the seed it replaces, N = 4 nodes + hub).

flags:
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	// The peak-RSS case re-executes this binary in child mode.
	if ran, code := harness.ChildMain(); ran {
		return code
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, benchUsage)
		fs.PrintDefaults()
	}
	dsn := fs.String("dsn", "", "server to use (superuser or CREATEDB role); default: a throwaway cluster")
	runs := fs.Int("runs", 3, "measurements per case; the median is reported")
	scale := fs.Float64("scale", 1, "multiply event counts (1: 1M-event batches)")
	cases := fs.String("cases", "", "comma-separated case families to run (default: all)")
	nodes := fs.String("nodes", "4,16,64,256", "targeted-copy cluster sizes (comma-separated)")
	hubPool := fs.Int("hub-conns", 0, "targeted copy: connections of the hub pool the copiers share (0: 8, N/8 from N = 128)")
	routing := fs.String("routing", "", "targeted copy: \"shared\" or \"per-target\" only (default: both)")
	out := fs.String("out", "bench/results.json", "where to write the JSON results (\"\" for none)")
	quiet := fs.Bool("quiet", false, "no progress lines on stderr")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *hubPool < 0 {
		fmt.Fprintf(stderr, "bench: --hub-conns: %d is negative\n", *hubPool)
		return 2
	}
	switch *routing {
	case "", "shared", "per-target":
	default:
		fmt.Fprintf(stderr, "bench: --routing: %q is not shared or per-target\n", *routing)
		return 2
	}
	o := harness.Options{DSN: *dsn, Runs: *runs, Scale: *scale, Out: *out, Log: stderr, HubConns: *hubPool, Routing: *routing,
		Command: "go run ./bench " + strings.Join(args, " ")}
	if *quiet {
		o.Log = nil
	}
	if *cases != "" {
		o.Cases = strings.Split(*cases, ",")
	}
	for _, f := range strings.Split(*nodes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 2 {
			fmt.Fprintf(stderr, "bench: --nodes: %q is not a node count >= 2\n", f)
			return 2
		}
		o.Nodes = append(o.Nodes, n)
	}
	if exe, err := os.Executable(); err == nil {
		o.Child = []string{exe}
	}
	if _, err := harness.Run(ctx, o, stdout); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	return 0
}
