package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/copier"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/remote"
	"github.com/pgq-go/pgq/route"
)

func init() {
	register("copy", "targeted copy: per-node status of a cluster (copy status), change of hub shards (copy reshard), target index on the hubs (copy hub-index), table capture (copy capture, copy backfill)", runCopy)
}

const copyUsage = `usage: pgqctl copy status --hub DSN [--hub DSN...] --node NAME=DSN [--node ...] [flags]
       pgqctl copy reshard --old-hub DSN... --new-hub DSN... --node NAME=DSN... (see copy reshard --help)
       pgqctl copy hub-index --hub DSN... (see copy hub-index --help)
       pgqctl copy capture add|remove|list --dsn NODE ... (see copy capture --help)
       pgqctl copy backfill --dsn NODE --table T --target ID (see copy backfill --help)

Shows, for every node of a targeted-copy cluster, in one table:

  PENDING   events waiting on the node's hub shard for its pull consumer
            (shared routing: every target's events after its position)
  PULL LAG  how far the pull consumer is behind its hub queue's newest tick
  APPLIED   the last batch the pull recorded as applied on the node
            (pgq_ext.completed_batch)
  PARKED    events parked on the node (pgqctl parked list), plus relay-side
            ones on the hub (bad targets)
  RELAY     how far the node's relay is behind its push queue's newest
            tick, and its pending events

--hub must list the hub shards in the same order as every node's
configuration (a node's shard is route.ShardOf(node, number of hubs)).

Exit status: 0 when every node is reachable, registered, has nothing
parked and lags within --max-lag; 1 otherwise (see PROBLEMS); 2 usage error.
`

func runCopy(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return subcommands(ctx, "copy", copyUsage, map[string]runFunc{"status": runCopyStatus, "reshard": runCopyReshard, "hub-index": runCopyHubIndex, "capture": runCopyCapture, "backfill": runCopyBackfill}, args, stdout, stderr)
}

// copyNode is one --node.
type copyNode struct{ name, dsn string }

// parseCopyLayout checks the --routing, --pull-queue and --push-queue
// flags every copy command shares.
func parseCopyLayout(routing, pullQueue, pushQueue string) (copier.Routing, error) {
	var r copier.Routing
	switch routing {
	case "per-target":
		r = copier.RoutingPerTarget
	case "shared":
		r = copier.RoutingShared
	default:
		return 0, usagef("--routing %q: want per-target or shared", routing)
	}
	for _, q := range []string{pullQueue, pushQueue} {
		if err := pgq.ValidateName("queue", q); err != nil {
			return 0, usagef("%v", err)
		}
	}
	return r, nil
}

// parseCopyNodes checks --node name=dsn arguments: valid node ids, each
// given once, parsable connection strings.
func parseCopyNodes(args []string) ([]copyNode, error) {
	nodes := make([]copyNode, 0, len(args))
	seen := map[string]bool{}
	for _, a := range args {
		name, dsn, ok := strings.Cut(a, "=")
		if !ok || dsn == "" {
			return nil, usagef("--node %q: want name=dsn", a)
		}
		if err := route.ValidateNode(name); err != nil {
			return nil, usagef("--node: %v", err)
		}
		if seen[name] {
			return nil, usagef("--node %s given twice", name)
		}
		if _, err := pgxpool.ParseConfig(dsn); err != nil {
			return nil, usagef("invalid connection string for --node %s", name)
		}
		seen[name] = true
		nodes = append(nodes, copyNode{name, dsn})
	}
	return nodes, nil
}

// copyNodeStatus is one row of "copy status" (and its JSON).
type copyNodeStatus struct {
	Node         string   `json:"node"`
	Hub          int      `json:"hub"`
	PullQueue    string   `json:"pull_queue"`
	PullConsumer string   `json:"pull_consumer"`
	Pending      int64    `json:"pending_events"`
	PullLag      seconds  `json:"pull_lag_seconds"`
	PullBehind   seconds  `json:"pull_behind_seconds"`
	PullBatch    int64    `json:"pull_open_batch"`
	Applied      int64    `json:"applied_batch"`
	Parked       int64    `json:"parked"`
	RelayParked  int64    `json:"relay_parked_on_hub"`
	RelayBehind  seconds  `json:"relay_behind_seconds"`
	RelayPending int64    `json:"relay_pending_events"`
	Problems     []string `json:"problems"`
}

type copyReport struct {
	Routing   string           `json:"routing"`
	PushQueue string           `json:"push_queue"`
	PullQueue string           `json:"pull_queue"`
	Hubs      int              `json:"hubs"`
	Healthy   bool             `json:"healthy"`
	Nodes     []copyNodeStatus `json:"nodes"`
}

func runCopyStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newCmdFlags("copy status", copyUsage, stderr)
	f.jsonFlag()
	f.timeoutFlag(30 * time.Second)
	var hubs, nodeArgs []string
	f.Var(stringList{&hubs}, "hub", "a hub shard's `dsn` (repeatable, in shard order)")
	f.Var(stringList{&nodeArgs}, "node", "a node as `name=dsn` (repeatable)")
	routing := f.String("routing", "shared", "hub layout: shared or per-target (as the copiers' Routing)")
	pullQueue := f.String("pull-queue", "pull_queue", "the copiers' PullQueue")
	pushQueue := f.String("push-queue", "push_queue", "the copiers' PushQueue")
	maxLag := defaultMaxConsumerLag
	f.Var(durationValue{&maxLag}, "max-lag", "how far behind its queue's newest tick a relay or pull may be (`duration`)")
	pos, err := f.parse(args)
	if err != nil {
		return parseFailure(err)
	}
	if len(pos) > 0 {
		return f.fail(usagef("unexpected argument %q", pos[0]))
	}
	if len(hubs) == 0 {
		return f.fail(usagef("give at least one --hub"))
	}
	if len(nodeArgs) == 0 {
		return f.fail(usagef("give at least one --node name=dsn"))
	}
	r, err := parseCopyLayout(*routing, *pullQueue, *pushQueue)
	if err != nil {
		return f.fail(err)
	}
	nodes, err := parseCopyNodes(nodeArgs)
	if err != nil {
		return f.fail(err)
	}
	for _, h := range hubs {
		if _, err := pgxpool.ParseConfig(h); err != nil {
			return f.fail(usagef("invalid --hub connection string"))
		}
	}
	ctx, cancel := f.context(ctx)
	defer cancel()

	rep := collectCopyStatus(ctx, hubs, nodes, r, *pullQueue, *pushQueue, maxLag)
	if f.json {
		if err := writeJSON(stdout, rep); err != nil {
			return f.fail(err)
		}
	} else {
		printCopyStatus(stdout, rep)
	}
	if !rep.Healthy {
		return 1
	}
	return 0
}

func collectCopyStatus(ctx context.Context, hubDSNs []string, nodes []copyNode, routing copier.Routing, pullQueue, pushQueue string, maxLag time.Duration) *copyReport {
	rep := &copyReport{Routing: routing.String(), PushQueue: pushQueue, PullQueue: pullQueue, Hubs: len(hubDSNs), Healthy: true}
	hubs := make([]*pgxpool.Pool, len(hubDSNs))
	for i, dsn := range hubDSNs {
		cfg, _ := pgxpool.ParseConfig(dsn) // checked by the caller
		cfg.MaxConns = 4
		hubs[i], _ = pgxpool.NewWithConfig(ctx, cfg) // connects lazily; only fails on a bad config
		if hubs[i] != nil {
			defer hubs[i].Close()
		}
	}
	rep.Nodes = make([]copyNodeStatus, len(nodes))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			rep.Nodes[i] = nodeCopyStatus(ctx, hubs, n, routing, pullQueue, pushQueue, maxLag)
		}()
	}
	wg.Wait()
	for _, n := range rep.Nodes {
		if len(n.Problems) > 0 {
			rep.Healthy = false
		}
	}
	return rep
}

// behind is how far a consumer's position is from its queue's newest tick.
func behind(ctx context.Context, db pgq.DB, queue, consumer string) (pgq.ConsumerInfo, time.Duration, error) {
	q, err := pgq.GetQueueInfo(ctx, db, queue)
	if err != nil {
		return pgq.ConsumerInfo{}, 0, err
	}
	c, err := pgq.GetConsumerInfo(ctx, db, queue, consumer)
	if err != nil {
		return c, 0, err
	}
	return c, max(c.Lag-q.TickerLag, 0), nil
}

func nodeCopyStatus(ctx context.Context, hubs []*pgxpool.Pool, n copyNode, routing copier.Routing, pullQueue, pushQueue string, maxLag time.Duration) copyNodeStatus {
	st := copyNodeStatus{Node: n.name, Hub: route.ShardOf(n.name, len(hubs)), PullConsumer: route.PullConsumerName(n.name), Problems: []string{}}
	st.PullQueue = pullQueue
	if routing == copier.RoutingPerTarget {
		st.PullQueue = route.PerTargetQueue(pullQueue, n.name)
	}
	problem := func(format string, args ...any) { st.Problems = append(st.Problems, fmt.Sprintf(format, args...)) }
	describe := func(err error) string {
		switch {
		case errors.Is(err, pgq.ErrNotRegistered):
			return "not registered"
		case errors.Is(err, pgq.ErrQueueNotFound):
			return "queue missing"
		}
		return readableConnectError(err).Error()
	}

	// On the hub shard: the pull consumer's backlog, and relay-side parked events.
	hub := hubs[st.Hub]
	if hub == nil {
		problem("hub %d: cannot connect", st.Hub)
	} else {
		c, b, err := behind(ctx, hub, st.PullQueue, st.PullConsumer)
		if err != nil {
			problem("pull %s on hub %d: %s", st.PullConsumer, st.Hub, describe(err))
		} else {
			st.Pending, st.PullLag, st.PullBehind, st.PullBatch = c.PendingEvents, seconds(c.Lag), seconds(b), c.CurrentBatch
			if b > maxLag {
				problem("pull lagging: %s behind the newest tick", fmtDur(b))
			}
		}
		for s := range hubs {
			name := route.RelayConsumerName(n.name, s)
			if hubs[s] == nil {
				continue
			}
			if k, err := countParkedIfInstalled(ctx, hubs[s], name); err != nil {
				problem("hub %d: parked: %s", s, describe(err))
			} else {
				st.RelayParked += k
			}
		}
	}

	// On the node: applied position, parked events, relay consumers.
	conn, err := connect(ctx, n.dsn)
	if err != nil {
		problem("node: %v", err)
		return st
	}
	defer conn.Close(context.Background())
	// The pull's position on the node is keyed by its hub's identity and
	// queue (copier.TrackingKey); an older version's row by name only.
	key := ""
	if hub != nil {
		if id, err := remote.Identity(ctx, hub); err == nil {
			key = copier.TrackingKey(id, st.PullQueue)
		}
	}
	if st.Applied, err = remote.LastBatch(ctx, conn, st.PullConsumer, key); err == nil && st.Applied == 0 && key != "" {
		st.Applied, err = remote.LastBatch(ctx, conn, st.PullConsumer, "")
	}
	if err != nil {
		var pgErr interface{ SQLState() string }
		if errors.As(err, &pgErr) && pgErr.SQLState() == "42P01" {
			problem("node: tracking schema missing (has the node's copier run?)")
		} else {
			problem("node: applied: %v", err)
		}
	}
	if st.Parked, err = countParkedIfInstalled(ctx, conn, st.PullConsumer); err != nil {
		problem("node: parked: %v", err)
	}
	if st.Parked > 0 || st.RelayParked > 0 {
		problem("%d event(s) parked on the node, %d on the hub (pgqctl parked list)", st.Parked, st.RelayParked)
	}
	for s := range hubs {
		name := route.RelayConsumerName(n.name, s)
		c, b, err := behind(ctx, conn, pushQueue, name)
		if err != nil {
			problem("relay %s: %s", name, describe(err))
			continue
		}
		st.RelayPending += c.PendingEvents
		st.RelayBehind = max(st.RelayBehind, seconds(b))
	}
	if b := time.Duration(st.RelayBehind); b > maxLag {
		problem("relay lagging: %s behind the newest tick", fmtDur(b))
	}
	return st
}

// countParkedIfInstalled is copier.CountParked, 0 when pgq_go is absent.
func countParkedIfInstalled(ctx context.Context, db pgq.DB, consumer string) (int64, error) {
	var ok bool
	if err := db.QueryRow(ctx, "select to_regclass('pgq_go.parked_event') is not null").Scan(&ok); err != nil || !ok {
		return 0, err
	}
	return copier.CountParked(ctx, db, consumer)
}

func printCopyStatus(w io.Writer, rep *copyReport) {
	fmt.Fprintf(w, "routing %s   push queue %s   pull queue %s   hubs %d\n\n", rep.Routing, rep.PushQueue, rep.PullQueue, rep.Hubs)
	t := newTable(w)
	fmt.Fprintln(t, "NODE\tHUB\tPENDING\tPULL LAG\tAPPLIED\tPARKED\tRELAY LAG\tRELAY PENDING\tHEALTH")
	for _, n := range rep.Nodes {
		parked := fmt.Sprint(n.Parked)
		if n.RelayParked > 0 {
			parked += fmt.Sprintf(" (+%d hub)", n.RelayParked)
		}
		applied := "-"
		if n.Applied != 0 {
			applied = "batch " + fmt.Sprint(n.Applied)
		}
		health := "ok"
		if len(n.Problems) > 0 {
			health = "PROBLEM"
		}
		fmt.Fprintf(t, "%s\t%d\t%d\t%s\t%s\t%s\t%s\t%d\t%s\n", n.Node, n.Hub, n.Pending, fmtDur(time.Duration(n.PullBehind)),
			applied, parked, fmtDur(time.Duration(n.RelayBehind)), n.RelayPending, health)
	}
	t.Flush()
	fmt.Fprintln(w)
	if rep.Healthy {
		fmt.Fprintln(w, "status: ok")
		return
	}
	fmt.Fprintln(w, "status: UNHEALTHY")
	for _, n := range rep.Nodes {
		for _, p := range n.Problems {
			fmt.Fprintf(w, "  - %s: %s\n", n.Node, p)
		}
	}
}
