package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/copier"
)

const reshardUsage = `usage: pgqctl copy reshard --old-hub DSN [--old-hub DSN...] --new-hub DSN [--new-hub DSN...] --node NAME=DSN [--node ...] [flags]

Changes the hub shards of a targeted-copy cluster without losing or
repeating a row. Producers may keep writing; every copier (relay and pull)
of the cluster must be stopped first, and started again with the new hub
list afterwards.

  1. per node: a cut is fixed on its push queue, and the relays of the old
     layout relay the events up to it to the old hubs;
  2. per node whose hub shard becomes another database: its pull is
     registered on the new hub and its not yet applied events are moved
     there, in order, exactly once;
  3. per node: the new layout's relays start at the cut; relays it does not
     use (and the legacy name relay.<node>.s0) are unregistered.

--old-hub and --new-hub list the hub shards in the copiers' order, before
and after. A hub listed in both keeps what it holds. With the same list
twice the command renames legacy relays only. List every node of the
cluster. Interrupted (crash, error, --timeout), run it again with the same
arguments: it completes the work. Copiers refuse to start while a reshard
is unfinished.

Exit status: 0 done; 1 refused or failed (nothing lost: run it again once
the cause is fixed); 2 usage error.
`

func runCopyReshard(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newCmdFlags("copy reshard", reshardUsage, stderr)
	f.jsonFlag()
	f.timeoutFlag(0)
	var oldHubs, newHubs, nodeArgs []string
	f.Var(stringList{&oldHubs}, "old-hub", "a hub shard the copiers ran with, as a `dsn` (repeatable, in shard order)")
	f.Var(stringList{&newHubs}, "new-hub", "a hub shard the copiers will run with, as a `dsn` (repeatable, in shard order)")
	f.Var(stringList{&nodeArgs}, "node", "a node as `name=dsn` (repeatable; every node of the cluster)")
	routing := f.String("routing", "shared", "hub layout: shared or per-target (as the copiers' Routing)")
	pullQueue := f.String("pull-queue", "pull_queue", "the copiers' PullQueue")
	pushQueue := f.String("push-queue", "push_queue", "the copiers' PushQueue")
	verbose := f.Bool("verbose", false, "log progress to stderr")
	pos, err := f.parse(args)
	if err != nil {
		return parseFailure(err)
	}
	if len(pos) > 0 {
		return f.fail(usagef("unexpected argument %q", pos[0]))
	}
	if len(oldHubs) == 0 || len(newHubs) == 0 {
		return f.fail(usagef("give at least one --old-hub and one --new-hub"))
	}
	if len(nodeArgs) == 0 {
		return f.fail(usagef("give every node as --node name=dsn"))
	}
	r, err := parseCopyLayout(*routing, *pullQueue, *pushQueue)
	if err != nil {
		return f.fail(err)
	}
	for _, hs := range []struct {
		flag string
		dsns []string
	}{{"--old-hub", oldHubs}, {"--new-hub", newHubs}} {
		seen := map[string]int{}
		for i, dsn := range hs.dsns {
			if _, err := pgxpool.ParseConfig(dsn); err != nil {
				return f.fail(usagef("invalid %s connection string (number %d)", hs.flag, i+1))
			}
			if j, dup := seen[dsn]; dup {
				return f.fail(usagef("%s number %d repeats number %d", hs.flag, i+1, j+1))
			}
			seen[dsn] = i
		}
	}
	nodeList, err := parseCopyNodes(nodeArgs)
	if err != nil {
		return f.fail(err)
	}
	nodes := make(map[string]string, len(nodeList))
	for _, n := range nodeList {
		nodes[n.name] = n.dsn
	}
	ctx, cancel := f.context(ctx)
	defer cancel()

	open := func(dsn string) (*pgxpool.Pool, error) {
		cfg, err := pgxpool.ParseConfig(dsn) // checked above
		if err != nil {
			return nil, err
		}
		cfg.MaxConns = 4
		return pgxpool.NewWithConfig(ctx, cfg) // connects lazily
	}
	var pools []*pgxpool.Pool
	defer func() {
		for _, p := range pools {
			p.Close()
		}
	}()
	openAll := func(dsns []string) ([]*pgxpool.Pool, error) {
		var out []*pgxpool.Pool
		for _, dsn := range dsns {
			p, err := open(dsn)
			if err != nil {
				return nil, err
			}
			pools = append(pools, p)
			out = append(out, p)
		}
		return out, nil
	}
	cfg := copier.ReshardConfig{Nodes: map[string]*pgxpool.Pool{}, PushQueue: *pushQueue, PullQueue: *pullQueue, Routing: r}
	if cfg.OldHubs, err = openAll(oldHubs); err != nil {
		return f.fail(err)
	}
	if cfg.NewHubs, err = openAll(newHubs); err != nil {
		return f.fail(err)
	}
	for name, dsn := range nodes {
		p, err := openAll([]string{dsn})
		if err != nil {
			return f.fail(err)
		}
		cfg.Nodes[name] = p[0]
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	rep, err := copier.Reshard(ctx, cfg)
	if rep != nil {
		if f.json {
			if jerr := writeJSON(stdout, reshardJSON(rep, err)); jerr != nil && err == nil {
				err = jerr
			}
		} else {
			printReshard(stdout, rep, err)
		}
	}
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			err = fmt.Errorf("%w (interrupted: run the same command again to complete the reshard)", err)
		}
		return f.fail(err)
	}
	return 0
}

// reshardNodeJSON is one node of "copy reshard --json".
type reshardNodeJSON struct {
	Node         string   `json:"node"`
	Cut          int64    `json:"cut_tick"`
	Resumed      bool     `json:"resumed"`
	Relayed      int64    `json:"relayed_to_cut"`
	Registered   []string `json:"relays_registered"`
	Kept         []string `json:"relays_kept"`
	Unregistered []string `json:"relays_unregistered"`
	OldHub       int      `json:"old_hub"`
	NewHub       int      `json:"new_hub"`
	PullMoved    bool     `json:"pull_moved"`
	Moved        int64    `json:"events_moved"`
}

type reshardReportJSON struct {
	Done  bool              `json:"done"`
	Error string            `json:"error,omitempty"`
	Nodes []reshardNodeJSON `json:"nodes"`
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func reshardJSON(rep *copier.ReshardReport, err error) reshardReportJSON {
	out := reshardReportJSON{Done: err == nil, Nodes: []reshardNodeJSON{}}
	if err != nil {
		out.Error = err.Error()
	}
	for _, n := range rep.Nodes {
		out.Nodes = append(out.Nodes, reshardNodeJSON{Node: n.Node, Cut: n.Cut, Resumed: n.Resumed, Relayed: n.Relayed,
			Registered: nonNil(n.Registered), Kept: nonNil(n.Kept), Unregistered: nonNil(n.Unregistered),
			OldHub: n.OldHub, NewHub: n.NewHub, PullMoved: n.PullMoved, Moved: n.Moved})
	}
	return out
}

func printReshard(w io.Writer, rep *copier.ReshardReport, err error) {
	t := newTable(w)
	fmt.Fprintln(t, "NODE\tCUT\tRELAYED\tHUB\tMOVED\tRELAYS REGISTERED\tKEPT\tUNREGISTERED")
	list := func(s []string) string {
		if len(s) == 0 {
			return "-"
		}
		return strings.Join(s, ",")
	}
	for _, n := range rep.Nodes {
		cut := fmt.Sprint(n.Cut)
		if n.Resumed {
			cut += " (resumed)"
		}
		hub := fmt.Sprintf("%d -> %d", n.OldHub, n.NewHub)
		moved := "-"
		if n.PullMoved {
			moved = fmt.Sprintf("%d events", n.Moved)
		}
		fmt.Fprintf(t, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", n.Node, cut, n.Relayed, hub, moved,
			list(n.Registered), list(n.Kept), list(n.Unregistered))
	}
	t.Flush()
	if err == nil {
		fmt.Fprintln(w, "\nreshard: done; start the copiers with the new hub list")
	}
}
