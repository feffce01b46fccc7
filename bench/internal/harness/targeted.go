package harness

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/apply"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/copier"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/route"
	"github.com/pgq-go/pgq/ticker"
	"github.com/pgq-go/pgq/urlenc"
)

// Targeted copy settings: cluster sizes, rows delivered per run at scale
// 1 (spread evenly over the producing nodes, one random other node each),
// the ticker period serving the hub and every node, and the queues'
// ticker_max_lag.
var targetedSizes = []int{4, 16, 64, 256} // from targetedLowRate on, few rows per node

// targetedLowRate is the size from which a run carries few rows per node
// (targetedLowRateRows each): the case shows that a cluster of that size
// runs at all on one machine, exactly once, and what it costs the hub.
const (
	targetedLowRate     = 256
	targetedLowRateRows = 10
)

// Goal 1 (flat per-row cost) compares N = 64 with N = 4 in shared
// routing twice: on the runs above (40k rows: 625 per node at N = 64, so
// per-batch and per-node costs weigh on few rows) and on longer runs of
// targetedSustained times the rows (5,000 per node at N = 64), which
// show the per-row cost once those are spread.
var goal1Sizes = [2]int{4, 64}

const (
	targetedSustained     = 8
	targetedSustainedRuns = 2
	goal1HubCPU           = 1.5 // at most, N = 64 / N = 4
	goal1Rate             = 0.7 // at least
)

const (
	targetedIdleWindow = 3 * time.Second
	targetedRows       = 40_000
	targetedTick       = 200 * time.Millisecond
	targetedMaxLag     = 200 * time.Millisecond
)

// tickerAppName is the application_name of the ticker package's
// connections; copierAppName the copiers' hub connections (pool,
// listener, registration).
const (
	tickerAppName = "pgq-go ticker"
	copierAppName = "pgq-go copier"
)

// nodeDDL is each node's table the rows are applied to.
const nodeDDL = `create table rows (id text primary key, origin text not null, payload text)`

// connsPerNode is the server connections one node costs: its pool (relay
// batch, pull destination, checks), the relay's listener and the ticker's
// connection to the node database. The hub's connections are shared by
// every copier of the process: hubPoolSize(N) in its pool, one listener, at most
// a few registration connections while targets are first met.
const (
	connsPerNode = 5
	hubConns     = 8
)

// hubPoolSize is the shared hub pool of an N-node cluster: hubConns, and
// one connection per 8 nodes beyond 64. Every relay and pull batch holds
// one of them for its duration; at N = 256 a pool of 8 starved (relays
// waited 30 s for a hub connection while holding their node's, and the
// warm-up had 241 of 256 rows after 5 minutes).
func hubPoolSize(n int) int32 { return int32(max(hubConns, n/8)) }

// targetedNodes holds the node databases, shared by every configuration
// (each configuration uses its own node ids, queues and hub, so their
// tracking rows never meet).
type targetedNodes struct {
	dbs []*DB
}

func (s *suite) newTargetedNodes(ctx context.Context, n int) (*targetedNodes, error) {
	t := &targetedNodes{}
	for i := range n {
		db, err := s.env.CreateDB(ctx, "node"+strconv.Itoa(i+1), true, 3)
		if err != nil {
			return nil, err
		}
		if _, err := db.Pool.Exec(ctx, nodeDDL); err != nil {
			return nil, err
		}
		t.dbs = append(t.dbs, db)
	}
	return t, nil
}

func (t *targetedNodes) drop(env *Env) {
	for _, db := range t.dbs {
		env.DropDB(db)
	}
}

// figures are one configuration's runs: rows/s, CPU per row in µs (hub,
// the hub's ticker, the whole server, this process) and hub backends.
type figures struct {
	rate, hub, hubTicker, cluster, client, backends []float64
	nodeTicker, nodeCopier                          []float64 // the node databases' backends: the ticker's, the rest
}

func (f *figures) add(r targetedRun) {
	perRow := func(seconds float64) float64 { return seconds / float64(r.rows) * 1e6 }
	f.rate = append(f.rate, r.rate)
	f.hub = append(f.hub, perRow(r.hubCPU))
	f.hubTicker = append(f.hubTicker, perRow(r.hubTicker))
	f.cluster = append(f.cluster, perRow(r.clusterCPU))
	f.client = append(f.client, perRow(r.clientCPU))
	f.nodeTicker = append(f.nodeTicker, perRow(r.nodeTicker))
	f.nodeCopier = append(f.nodeCopier, perRow(r.nodeCopier))
	f.backends = append(f.backends, float64(r.backends))
}

// targetedRun is one measurement of one configuration.
type targetedRun struct {
	rate       float64 // rows applied per second, production commit → last apply
	hubCPU     float64 // seconds of the hub database's backends
	hubTicker  float64 // of which the ticker's backend
	clusterCPU float64 // seconds of the whole server
	clientCPU  float64 // seconds of this process: copiers, producers, ticker
	nodeTicker float64 // seconds of the node databases' ticker backends
	nodeCopier float64 // seconds of the node databases' other backends (copiers, producers)
	rows       int
	relayed    int64
	backends   int // most hub backends of the copiers and ticker seen at once
}

// targetedConfig is one cluster: N nodes, one hub, one routing.
type targetedConfig struct {
	s       *suite
	n       int
	routing copier.Routing
	code    string // "s4", "p64": node id and queue prefix
	hub     *DB
	nodes   []string
	nodeDBs []string // the nodes' database names
	local   []*pgxpool.Pool
	hubPool *pgxpool.Pool // shared by every copier of the cluster
	copiers []*copier.TargetedCopier
	push    string
	probe   *cpuProbe

	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	err    error
	errs   int64  // failed consumer attempts (relay or pull)
	errMsg string // the first one

	maxBackends int // most hub backends seen by wait since the last reset
}

// hubBackends counts the hub's backends of the copiers and the ticker.
func (c *targetedConfig) hubBackends(ctx context.Context) (int, error) {
	var n int
	err := c.hub.Pool.QueryRow(ctx, "select count(*) from pg_stat_activity where datname = $1 and application_name = any($2)",
		c.hub.Name, []string{copierAppName, tickerAppName}).Scan(&n)
	return n, err
}

func (s *suite) newTargetedConfig(ctx context.Context, nodes *targetedNodes, n int, routing copier.Routing) (*targetedConfig, error) {
	code := "p"
	if routing == copier.RoutingShared {
		code = "s"
	}
	code += strconv.Itoa(n)
	hub, err := s.env.CreateDB(ctx, "hub_"+code, true, 4)
	if err != nil {
		return nil, err
	}
	c := &targetedConfig{s: s, n: n, routing: routing, code: code, hub: hub, push: "push_" + code}
	c.probe = newCPUProbe(ctx, hub.Pool)
	quiet := slog.New(slog.DiscardHandler)
	ra, err := apply.NewRowApplier("rows", []string{"id"})
	if err != nil {
		return nil, err
	}
	hubCfg, err := pgxpool.ParseConfig(hub.DSN)
	if err != nil {
		return nil, err
	}
	// One hub pool for every copier of the process: the hub sees a few
	// connections, not some per node.
	hubCfg.MaxConns = hubPoolSize(n)
	if s.o.HubConns > 0 {
		hubCfg.MaxConns = int32(s.o.HubConns)
	}
	hubCfg.ConnConfig.RuntimeParams["application_name"] = copierAppName
	if c.hubPool, err = pgxpool.NewWithConfig(ctx, hubCfg); err != nil {
		return nil, err
	}
	dbNames := []string{hub.Name}
	for i := range n {
		node := code + "n" + strconv.Itoa(i+1)
		c.nodes = append(c.nodes, node)
		local := nodes.dbs[i].Pool
		c.local = append(c.local, local)
		dbNames = append(dbNames, nodes.dbs[i].Name)
		c.nodeDBs = append(c.nodeDBs, nodes.dbs[i].Name)
		tc, err := copier.New(copier.Config{
			Node: node, Local: local, Hubs: []*pgxpool.Pool{c.hubPool}, Routing: routing,
			PushQueue: c.push, Applier: ra,
			QueueConfig: pgq.QueueConfig{TickerMaxLag: pgq.Ptr(targetedMaxLag)},
			Logger:      quiet, Hooks: consumer.Hooks{OnError: func(ei consumer.ErrorInfo) {
				c.mu.Lock()
				c.errs++
				if c.errMsg == "" {
					c.errMsg = fmt.Sprintf("%s/%s: %v", ei.Queue, ei.Consumer, ei.Err)
				}
				c.mu.Unlock()
			}},
		})
		if err != nil {
			return nil, err
		}
		if err := tc.Setup(ctx); err != nil {
			return nil, fmt.Errorf("setup %s: %w", node, err)
		}
		c.copiers = append(c.copiers, tc)
	}
	tk, err := ticker.New(ticker.Config{
		Servers:    []ticker.Server{{ConnString: s.env.BaseDSN(), Databases: dbNames}},
		TickPeriod: targetedTick,
		Logger:     quiet,
	})
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.cancel = cancel
	for _, r := range append([]interface{ Run(context.Context) error }{tk}, toRunners(c.copiers)...) {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			if err := r.Run(rctx); err != nil {
				c.mu.Lock()
				c.err = err
				c.mu.Unlock()
			}
		}()
	}
	return c, nil
}

func toRunners(cs []*copier.TargetedCopier) []interface{ Run(context.Context) error } {
	out := make([]interface{ Run(context.Context) error }, len(cs))
	for i, c := range cs {
		out[i] = c
	}
	return out
}

func (c *targetedConfig) close() {
	if c.cancel != nil {
		c.cancel()
	}
	c.wg.Wait()
	if c.hubPool != nil {
		c.hubPool.Close()
	}
	c.s.env.DropDB(c.hub)
}

func (c *targetedConfig) failed() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// consumerErrors returns the failed attempts so far and the first error.
func (c *targetedConfig) consumerErrors() (int64, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.errs, c.errMsg
}

func (c *targetedConfig) stats() (applied, relayed, parked int64) {
	for _, tc := range c.copiers {
		st := tc.Stats()
		applied += st.Applied
		relayed += st.Relayed
		parked += st.Parked
	}
	return
}

// run produces rows on every node (each row to one random other node, one
// transaction per node) and waits until all are applied on their targets.
func (c *targetedConfig) run(ctx context.Context, run, rows int) (targetedRun, error) {
	per := max(1, rows/c.n)
	total := per * c.n
	rng := rand.New(rand.NewPCG(uint64(c.n), uint64(run)))
	msgs := make([][]route.Message, c.n)
	for i := range c.n {
		msgs[i] = make([]route.Message, per)
		for j := range per {
			t := rng.IntN(c.n - 1)
			if t >= i {
				t++
			}
			msgs[i][j] = route.Message{Targets: []string{c.nodes[t]}, Row: urlenc.Fields{
				"action": "ins", "id": fmt.Sprintf("%s-%d-%d-%d", c.code, run, i, j),
				"origin": c.nodes[i], "payload": payloadPad,
			}}
		}
	}
	applied0, relayed0, parked0 := c.stats()
	c.maxBackends = 0
	hub0, err := c.probe.dbTicks(ctx, c.hub.Pool, c.hub.Name)
	if err != nil {
		return targetedRun{}, err
	}
	nodes0, err := c.probe.dbTicks(ctx, c.hub.Pool, c.nodeDBs[0], c.nodeDBs[1:]...)
	if err != nil {
		return targetedRun{}, err
	}
	cl0 := c.probe.clusterTicks()
	self0 := selfTicks()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, c.n)
	for i := range c.n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tx, err := c.local[i].Begin(ctx)
			if err != nil {
				errs[i] = err
				return
			}
			defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
			if _, err := (route.Sender{Queue: c.push, Origin: c.nodes[i], RequestTick: true}).SendBulk(ctx, tx, msgs[i]); err != nil {
				errs[i] = err
				return
			}
			errs[i] = tx.Commit(ctx)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return targetedRun{}, fmt.Errorf("produce: %w", err)
		}
	}
	if err := c.wait(ctx, applied0, int64(total), parked0); err != nil {
		return targetedRun{}, err
	}
	d := time.Since(start)
	hub1, err := c.probe.dbTicks(ctx, c.hub.Pool, c.hub.Name)
	if err != nil {
		return targetedRun{}, err
	}
	nodes1, err := c.probe.dbTicks(ctx, c.hub.Pool, c.nodeDBs[0], c.nodeDBs[1:]...)
	if err != nil {
		return targetedRun{}, err
	}
	cl1 := c.probe.clusterTicks()
	self1 := selfTicks()
	applied, relayed, _ := c.stats()
	if applied-applied0 != int64(total) {
		return targetedRun{}, fmt.Errorf("%d rows applied, want %d", applied-applied0, total)
	}
	return targetedRun{
		rate:       rate(total, d),
		hubCPU:     ticksToSeconds(ticksBetween(hub0, hub1, func(string) bool { return true })),
		hubTicker:  ticksToSeconds(ticksBetween(hub0, hub1, func(app string) bool { return app == tickerAppName })),
		clusterCPU: ticksToSeconds(cl1 - cl0),
		clientCPU:  ticksToSeconds(self1 - self0),
		nodeTicker: ticksToSeconds(ticksBetween(nodes0, nodes1, func(app string) bool { return app == tickerAppName })),
		nodeCopier: ticksToSeconds(ticksBetween(nodes0, nodes1, func(app string) bool { return app != tickerAppName })),
		rows:       total,
		relayed:    relayed - relayed0,
		backends:   c.maxBackends,
	}, nil
}

// idleHub measures the hub while the cluster is idle (every row applied,
// nothing produced) for window: the CPU of the hub's backends per second,
// and how many backends the copiers and ticker hold there.
func (c *targetedConfig) idleHub(ctx context.Context, window time.Duration) (cpuPerSec float64, backends int, err error) {
	t0, err := c.probe.dbTicks(ctx, c.hub.Pool, c.hub.Name)
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	select {
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	case <-time.After(window): // the measuring window itself
	}
	t1, err := c.probe.dbTicks(ctx, c.hub.Pool, c.hub.Name)
	if err != nil {
		return 0, 0, err
	}
	cpu := ticksToSeconds(ticksBetween(t0, t1, func(app string) bool { return app == copierAppName || app == tickerAppName }))
	backends, err = c.hubBackends(ctx)
	return cpu / time.Since(start).Seconds(), backends, err
}

// warmUp sends one row from every node to the next and waits until all
// are applied.
func (c *targetedConfig) warmUp(ctx context.Context) error {
	applied0, _, _ := c.stats()
	for i := range c.n {
		tx, err := c.local[i].Begin(ctx)
		if err != nil {
			return err
		}
		_, err = (route.Sender{Queue: c.push, Origin: c.nodes[i], RequestTick: true}).SendBulk(ctx, tx, []route.Message{{
			Targets: []string{c.nodes[(i+1)%c.n]},
			Row:     urlenc.Fields{"action": "ins", "id": fmt.Sprintf("%s-w-%d", c.code, i), "origin": c.nodes[i]},
		}})
		if err == nil {
			err = tx.Commit(ctx)
		}
		_ = tx.Rollback(context.WithoutCancel(ctx))
		if err != nil {
			return err
		}
	}
	return c.wait(ctx, applied0, int64(c.n), 0)
}

// wait waits until want more rows than applied0 are applied.
func (c *targetedConfig) wait(ctx context.Context, applied0, want, parked0 int64) error {
	deadline := time.Now().Add(5 * time.Minute)
	var sampled time.Time
	for {
		if time.Since(sampled) >= 100*time.Millisecond {
			sampled = time.Now()
			n, err := c.hubBackends(ctx)
			if err != nil {
				return err
			}
			c.maxBackends = max(c.maxBackends, n)
		}
		applied, _, parked := c.stats()
		if parked > parked0 {
			return fmt.Errorf("%d rows parked", parked-parked0)
		}
		if applied-applied0 >= want {
			return nil
		}
		if err := c.failed(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			k, msg := c.consumerErrors()
			return fmt.Errorf("only %d of %d rows applied after 5 minutes (%d failed consumer attempts, first: %s)", applied-applied0, want, k, msg)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// checkDelivered verifies every node holds exactly the rows addressed to
// it: as many as were applied in all, none duplicated (the primary key),
// none misaddressed (origin differs from the node).
func (c *targetedConfig) checkDelivered(ctx context.Context, nodes *targetedNodes, want int) error {
	got := 0
	for i := range c.n {
		var k int
		if err := nodes.dbs[i].Pool.QueryRow(ctx, "select count(*) from rows where id like $1 || '-%'", c.code).Scan(&k); err != nil {
			return err
		}
		got += k
	}
	if got != want {
		return fmt.Errorf("%d rows on the nodes, want %d", got, want)
	}
	return nil
}

func (s *suite) targetedFamily(ctx context.Context) error {
	sizes := targetedSizes
	if len(s.o.Nodes) > 0 {
		sizes = slices.Sorted(slices.Values(s.o.Nodes))
	}
	maxN := sizes[len(sizes)-1]
	if err := s.ensureConnections(ctx, connsPerNode*maxN+60+s.o.HubConns); err != nil {
		// Keep the sizes that fit.
		s.note("targeted copy: %v", err)
		var fit []int
		limit := s.maxConnections(ctx)
		for _, n := range sizes {
			if connsPerNode*n+60 <= limit {
				fit = append(fit, n)
			}
		}
		sizes = fit
		if len(sizes) == 0 {
			return err
		}
		maxN = sizes[len(sizes)-1]
	}
	start := time.Now()
	nodes, err := s.newTargetedNodes(ctx, maxN)
	if err != nil {
		return err
	}
	defer nodes.drop(s.env)
	s.logf("targeted: %d node databases in %.1fs", maxN, time.Since(start).Seconds())
	rows := s.o.n(targetedRows)
	results := map[string]*figures{}
	local := true
	for _, routing := range []copier.Routing{copier.RoutingShared, copier.RoutingPerTarget} {
		if s.o.Routing != "" && s.o.Routing != routing.String() {
			continue
		}
		for _, n := range sizes {
			start := time.Now()
			c, err := s.newTargetedConfig(ctx, nodes, n, routing)
			if err != nil {
				if c != nil {
					c.close()
				}
				return fmt.Errorf("cluster N=%d %v: %w", n, routing, err)
			}
			local = local && c.probe.local()
			setup := time.Since(start)
			// Warm up: one row from every node to the next one needs every
			// relay and every pull running (tracking schema installed,
			// consumers looping), so start-up stays out of the runs.
			if err := c.warmUp(ctx); err != nil {
				c.close()
				return fmt.Errorf("cluster N=%d %v warm-up: %w", n, routing, err)
			}
			startup := time.Since(start) - setup
			s.logf("targeted N=%d %v: set up in %.1fs, copiers started in %.1fs", n, routing, setup.Seconds(), startup.Seconds())
			f := &figures{}
			delivered := 0
			runs := s.o.Runs
			if n >= targetedLowRate {
				runs = 1 // one row per node and target: the case is that it runs at all
			}
			rows := rows
			if n >= targetedLowRate {
				rows = min(rows, targetedLowRateRows*n)
			}
			for run := range runs {
				r, err := c.run(ctx, run, rows)
				if err != nil {
					c.close()
					return fmt.Errorf("cluster N=%d %v run %d: %w", n, routing, run+1, err)
				}
				delivered += r.rows
				f.add(r)
				s.logf("targeted N=%d %v run %d: %s delivered, hub CPU %.0f µs/row (ticker %.0f), server CPU %.0f µs/row (node tickers %.0f, other node backends %.0f), process CPU %.0f µs/row", n, routing, run+1,
					formatRate(r.rate), f.hub[run], f.hubTicker[run], f.cluster[run], f.nodeTicker[run], f.nodeCopier[run], f.client[run])
				if k, msg := c.consumerErrors(); k > 0 {
					s.logf("targeted N=%d %v: %d failed consumer attempts so far, first: %s", n, routing, k, msg)
				}
			}
			var sustained *Result // added after this size's main row
			if routing == copier.RoutingShared && slices.Contains(goal1Sizes[:], n) {
				sf := &figures{}
				for run := range targetedSustainedRuns {
					r, err := c.run(ctx, runs+run, rows*targetedSustained)
					if err != nil {
						c.close()
						return fmt.Errorf("cluster N=%d %v sustained run %d: %w", n, routing, run+1, err)
					}
					delivered += r.rows
					sf.add(r)
					s.logf("targeted N=%d %v sustained run %d (%s rows): %s delivered, hub CPU %.1f µs/row, server CPU %.0f µs/row (node tickers %.1f, other node backends %.0f), process CPU %.0f µs/row", n, routing, run+1,
						count(r.rows), formatRate(r.rate), sf.hub[run], sf.cluster[run], sf.nodeTicker[run], sf.nodeCopier[run], sf.client[run])
				}
				results[fmt.Sprintf("%v/%d/sustained", routing, n)] = sf
				name := fmt.Sprintf("targeted copy, N = %d nodes, shared routing, %s rows per run (sustained)", n, count(rows*targetedSustained))
				r := Result{Case: name, Unit: "events/s", Ours: median(sf.rate), OursRuns: sf.rate, Target: "report", Events: rows * targetedSustained,
					Values: map[string]float64{"hub_cpu_us_per_event": median(sf.hub), "server_cpu_us_per_event": median(sf.cluster),
						"node_ticker_cpu_us_per_event": median(sf.nodeTicker), "node_backend_cpu_us_per_event": median(sf.nodeCopier),
						"process_cpu_us_per_event": median(sf.client)}}
				r.oursText = fmt.Sprintf("%s; hub CPU %.1f µs/ev; server %.0f µs/ev (node tickers %.1f, other node backends %.0f); process %.0f µs/ev",
					formatRate(r.Ours), median(sf.hub), median(sf.cluster), median(sf.nodeTicker), median(sf.nodeCopier), median(sf.client))
				sustained = &r
			}
			if err := c.checkDelivered(ctx, nodes, delivered+n); err != nil {
				c.close()
				return fmt.Errorf("cluster N=%d %v: %w", n, routing, err)
			}
			idleCPU, idleBackends, err := c.idleHub(ctx, targetedIdleWindow)
			c.close()
			if err != nil {
				return fmt.Errorf("cluster N=%d %v idle: %w", n, routing, err)
			}
			s.logf("targeted N=%d %v idle: hub CPU %.1f ms/s, %d hub backends (copiers + ticker)", n, routing, idleCPU*1e3, idleBackends)
			results[fmt.Sprintf("%v/%d", routing, n)] = f
			name := fmt.Sprintf("targeted copy, N = %d nodes, %v routing", n, routing)
			if n >= targetedLowRate {
				name += fmt.Sprintf(", %d rows per node", targetedLowRateRows)
			}
			r := Result{Case: name, Unit: "events/s",
				Ours: median(f.rate), OursRuns: f.rate, Target: "report", Events: rows,
				Values: map[string]float64{
					"hub_cpu_us_per_event":          median(f.hub),
					"hub_ticker_cpu_us_per_event":   median(f.hubTicker),
					"startup_seconds":               startup.Seconds(),
					"server_cpu_us_per_event":       median(f.cluster),
					"node_ticker_cpu_us_per_event":  median(f.nodeTicker),
					"node_backend_cpu_us_per_event": median(f.nodeCopier),
					"process_cpu_us_per_event":      median(f.client),
					"hub_backends_max":              median(f.backends),
					"hub_backends_idle":             float64(idleBackends),
					"idle_hub_cpu_ms_per_s":         idleCPU * 1e3,
				}}
			r.oursText = fmt.Sprintf("%s; hub backends %.0f (idle %d)", formatRate(r.Ours), median(f.backends), idleBackends)
			if local {
				r.oursText = fmt.Sprintf("%s; hub CPU %.0f µs/ev (ticker %.0f), idle %.1f ms/s; server %.0f µs/ev (node tickers %.0f, other node backends %.0f); process %.0f µs/ev; hub backends %.0f (idle %d)",
					formatRate(r.Ours), median(f.hub), median(f.hubTicker), idleCPU*1e3, median(f.cluster), median(f.nodeTicker), median(f.nodeCopier), median(f.client), median(f.backends), idleBackends)
			}
			s.add(r)
			if sustained != nil {
				s.add(*sustained)
			}
		}
	}
	if local {
		s.goal1(results["shared/4"], results["shared/64"], "40k-row runs")
		s.goal1(results["shared/4/sustained"], results["shared/64/sustained"], fmt.Sprintf("runs of %d× the rows", targetedSustained))
	}
	cpuNote := "hub CPU = utime+stime from /proc/<pid>/stat of the hub database's backends (pids from pg_stat_activity: relay inserts, pulls, the hub's ticker) per delivered row; server CPU = the whole cluster (postmaster and all its children, exited ones included) per delivered row, which also counts the nodes' side; of it, node tickers and other node backends are the node databases' backends (the ticker's, the rest: relay reads, pull applies, producers), counted like the hub's"
	if !local {
		cpuNote = "CPU not measured: the server is not on this machine"
	}
	s.note("targeted copy: %s rows per run, each produced on a node for one random other node (one event), all nodes producing at once in one transaction each; "+
		"delivered events/s = rows / (production start → last row applied on its target); one hub, one process running every node's TargetedCopier (relay + pull, RowApplier upsert), "+
		"ticker library serving the hub and every node at %v, queues ticker_max_lag %v; %s",
		count(rows), targetedTick, targetedMaxLag, cpuNote)
	return nil
}

// goal1 adds the flat-cost rows (issue goal 1) from the shared-routing
// figures at N = 4 (a) and N = 64 (b), when both were measured: hub CPU
// per row and delivered rows/s, N = 64 over N = 4.
func (s *suite) goal1(a, b *figures, what string) {
	if a == nil || b == nil {
		return
	}
	hub := median(b.hub) / median(a.hub)
	hubMet := hub <= goal1HubCPU
	s.add(Result{Case: fmt.Sprintf("flat cost, %s: hub CPU per row, N = 64 / N = 4 (shared)", what), Unit: "µs/event",
		Ours: median(b.hub), OursRuns: b.hub, Ceiling: median(a.hub), CeilingRuns: a.hub, CeilingWhat: "N = 4, µs/row",
		Ratio: hub, Target: fmt.Sprintf("≤ %.1f×", goal1HubCPU), Met: &hubMet,
		oursText: fmt.Sprintf("%.1f µs/row", median(b.hub)), ceilText: fmt.Sprintf("%.1f µs/row", median(a.hub))})
	rate := median(b.rate) / median(a.rate)
	rateMet := rate >= goal1Rate
	s.add(Result{Case: fmt.Sprintf("flat cost, %s: delivered rows/s, N = 64 / N = 4 (shared)", what), Unit: "events/s",
		Ours: median(b.rate), OursRuns: b.rate, Ceiling: median(a.rate), CeilingRuns: a.rate, CeilingWhat: "N = 4",
		Ratio: rate, Target: fmt.Sprintf("≥ %.1f×", goal1Rate), Met: &rateMet})
}

// maxConnections is the server's max_connections minus reserved slots.
func (s *suite) maxConnections(ctx context.Context) int {
	db, err := s.env.CreateDB(ctx, "conns", false, 1)
	if err != nil {
		return 0
	}
	defer s.env.DropDB(db)
	var mc, reserved int
	_ = db.Pool.QueryRow(ctx, "select current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int").Scan(&mc, &reserved)
	return mc - reserved
}

// ensureConnections raises max_connections on a throwaway cluster (a
// restart) when the largest cluster needs more; on a user's server it
// only reports the shortfall.
func (s *suite) ensureConnections(ctx context.Context, need int) error {
	have := s.maxConnections(ctx)
	if have >= need {
		return nil
	}
	if !s.env.Throwaway {
		return fmt.Errorf("the server allows %d connections, the largest cluster needs %d: larger sizes skipped", have, need)
	}
	return s.env.setMaxConnections(ctx, need+50)
}
