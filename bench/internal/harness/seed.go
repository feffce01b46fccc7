package harness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/apply"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/copier"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/route"
	"github.com/pgq-go/pgq/ticker"
	"github.com/pgq-go/pgq/urlenc"
)

// The seed family measures the project's TargetedCopier against the seed
// it replaces (a push-pull targeted copy over PgQ posted to pgsql-announce
// in 2012: a Skytools RemoteConsumer relaying every event of a node's push
// queue into the hub's pull queue, and one per node reading the whole pull
// queue and applying its own rows). The seed is rebuilt here in Go with
// pgx, statement for statement, and runs on the same server, on the same
// node and hub databases, with the same ticker, as the copier.
//
// Settings: nodes in the cluster, rows per run at scale 1 (backlog drain
// and live production), rows per transaction of our live producer, the
// ticker period and the queues' ticker_max_lag (those of the targeted
// family), and the seed consumers' pause when they find no batch.
const (
	seedNodes     = 4
	seedRows      = 40_000
	seedLiveRows  = 40_000
	seedLiveChunk = 1000
	seedTick      = 200 * time.Millisecond
	seedMaxLag    = 200 * time.Millisecond
	// seedLoopDelay is the seed consumers' sleep when next_batch returns
	// no batch: Skytools' loop_delay, whose default is 1 s; a shorter one
	// here favours the seed.
	seedLoopDelay = 50 * time.Millisecond
)

// Queue and consumer names of the seed side and the copier's push queue
// (its pull queue keeps the default name).
const (
	seedPushQueue = "seed_push"
	seedPullQueue = "seed_pull"
	seedRelayName = "seed_relay"
	// seedCopierPush is the copier side's push queue on every node.
	seedCopierPush = "copier_push"
)

func seedPullName(node string) string { return "seed_pull_" + node }

// seedNodeDDL is each node's table; both sides apply into it (their row
// ids carry different prefixes).
const seedNodeDDL = `create table rows (id text primary key, origin text not null, payload text)`

// The seed's statements. The consumers run them as Skytools' pgq.Consumer
// does (next_batch, get_batch_events for the whole batch, finish_batch,
// each committed on its own), the relay sends one insert_event per event
// in one hub transaction, and the pull one upsert per row in its own
// transaction (begin, statement, commit, as psycopg2 sends them).
const (
	sqlSeedNextBatch   = `select pgq.next_batch($1, $2)`
	sqlSeedBatchEvents = `select ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4 from pgq.get_batch_events($1)`
	sqlSeedFinishBatch = `select pgq.finish_batch($1)`
	sqlSeedInsertEvent = `select pgq.insert_event($1, $2, $3, $4, $5, $6, $7)`
	sqlSeedUpsert      = `insert into rows (id, origin, payload) values ($1, $2, $3)
	on conflict (id) do update set origin = excluded.origin, payload = excluded.payload`
	// sqlSeedProduce is the seed's producer call:
	// pgq.insert_event('push_queue', 'copy', ”, <node>, <row>, ”, ”).
	sqlSeedProduce = `select pgq.insert_event($1, 'copy', '', $2, $3, '', '')`
)

// seedEvent is one event as get_batch_events returns it.
type seedEvent struct {
	typ, data, extra1, extra2, extra3, extra4 pgtype.Text
}

// seedCluster is the hub, the nodes, the running copiers and the seed's
// queues, shared by every measurement of the family.
type seedCluster struct {
	s     *suite
	hub   *DB
	nodes []*DB
	ids   []string // node ids, "n1".."n4" (both sides)

	copiers []*copier.TargetedCopier
	pools   []*pgxpool.Pool // the copiers' own pools
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	seedApplied atomic.Int64

	mu     sync.Mutex
	err    error  // a copier or the ticker stopped
	errs   int64  // failed copier consumer attempts
	errMsg string // the first one

	runs map[string]int   // measurements so far, per row-id prefix
	want map[string][]int // rows sent to each node, per row-id prefix
}

func (s *suite) newSeedCluster(ctx context.Context) (c *seedCluster, err error) {
	c = &seedCluster{s: s, runs: map[string]int{}, want: map[string][]int{}}
	defer func() {
		if err != nil {
			c.close()
			c = nil
		}
	}()
	// The hub pool serves the seed's relays (destination) and pulls (source).
	if c.hub, err = s.env.CreateDB(ctx, "seed_hub", true, 2*seedNodes+2); err != nil {
		return c, err
	}
	if _, err := pgq.CreateQueue(ctx, c.hub.Pool, seedPullQueue); err != nil {
		return c, err
	}
	if err := pgq.SetQueueConfig(ctx, c.hub.Pool, seedPullQueue, pgq.QueueConfig{TickerMaxLag: pgq.Ptr(seedMaxLag)}); err != nil {
		return c, err
	}
	dbNames := []string{c.hub.Name}
	for i := range seedNodes {
		id := "n" + strconv.Itoa(i+1)
		// Node pool: the seed's relay (source), pull (destination) and producer.
		db, err := s.env.CreateDB(ctx, "seed_node"+strconv.Itoa(i+1), true, 4)
		if err != nil {
			return c, err
		}
		c.nodes, c.ids = append(c.nodes, db), append(c.ids, id)
		dbNames = append(dbNames, db.Name)
		if _, err := db.Pool.Exec(ctx, seedNodeDDL); err != nil {
			return c, err
		}
		if _, err := pgq.CreateQueue(ctx, db.Pool, seedPushQueue); err != nil {
			return c, err
		}
		if err := pgq.SetQueueConfig(ctx, db.Pool, seedPushQueue, pgq.QueueConfig{TickerMaxLag: pgq.Ptr(seedMaxLag)}); err != nil {
			return c, err
		}
		if _, err := pgq.RegisterConsumer(ctx, db.Pool, seedPushQueue, seedRelayName); err != nil {
			return c, err
		}
		if _, err := pgq.RegisterConsumer(ctx, c.hub.Pool, seedPullQueue, seedPullName(id)); err != nil {
			return c, err
		}
	}
	if err := c.startCopiers(ctx, dbNames); err != nil {
		return c, err
	}
	return c, nil
}

// startCopiers sets up one TargetedCopier per node (shared routing, the
// seed's layout; RowApplier upsert into rows), as the targeted family
// does, and runs them with a ticker serving the hub and every node.
func (c *seedCluster) startCopiers(ctx context.Context, dbNames []string) error {
	quiet := slog.New(slog.DiscardHandler)
	ra, err := apply.NewRowApplier("rows", []string{"id"})
	if err != nil {
		return err
	}
	newPool := func(dsn string) (*pgxpool.Pool, error) {
		cfg, err := pgxpool.ParseConfig(dsn)
		if err != nil {
			return nil, err
		}
		cfg.MaxConns = 3
		p, err := pgxpool.NewWithConfig(ctx, cfg)
		if err == nil {
			c.pools = append(c.pools, p)
		}
		return p, err
	}
	for i, db := range c.nodes {
		local, err := newPool(db.DSN)
		if err != nil {
			return err
		}
		hub, err := newPool(c.hub.DSN)
		if err != nil {
			return err
		}
		tc, err := copier.New(copier.Config{
			Node: c.ids[i], Local: local, Hubs: []*pgxpool.Pool{hub}, Routing: copier.RoutingShared, PushQueue: seedCopierPush,
			Applier: ra, QueueConfig: pgq.QueueConfig{TickerMaxLag: pgq.Ptr(seedMaxLag)},
			Logger: quiet, Hooks: consumer.Hooks{OnError: func(ei consumer.ErrorInfo) {
				c.mu.Lock()
				defer c.mu.Unlock()
				c.errs++
				if c.errMsg == "" {
					c.errMsg = fmt.Sprintf("%s/%s: %v", ei.Queue, ei.Consumer, ei.Err)
				}
			}},
		})
		if err != nil {
			return err
		}
		if err := tc.Setup(ctx); err != nil {
			return fmt.Errorf("copier setup %s: %w", c.ids[i], err)
		}
		c.copiers = append(c.copiers, tc)
	}
	tk, err := ticker.New(ticker.Config{
		Servers:    []ticker.Server{{ConnString: c.s.env.BaseDSN(), Databases: dbNames}},
		TickPeriod: seedTick,
		Logger:     quiet,
	})
	if err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.cancel = cancel
	runners := []interface{ Run(context.Context) error }{tk}
	for _, tc := range c.copiers {
		runners = append(runners, tc)
	}
	for _, r := range runners {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			if err := r.Run(rctx); err != nil && rctx.Err() == nil {
				c.mu.Lock()
				c.err = err
				c.mu.Unlock()
			}
		}()
	}
	return nil
}

func (c *seedCluster) close() {
	if c.cancel != nil {
		c.cancel()
	}
	c.wg.Wait()
	for _, p := range c.pools {
		p.Close()
	}
	for _, db := range append(c.nodes, c.hub) {
		if db != nil {
			c.s.env.DropDB(db)
		}
	}
}

// messages builds the next measurement's rows for the side whose row ids
// start with prefix: per node rows/seedNodes rows, each for one random
// other node. The k-th measurement of every side gets the same targets.
func (c *seedCluster) messages(prefix string, rows int) (msgs [][]route.Message, total int) {
	run := c.runs[prefix]
	c.runs[prefix]++
	if c.want[prefix] == nil {
		c.want[prefix] = make([]int, seedNodes)
	}
	per := max(1, rows/seedNodes)
	rng := rand.New(rand.NewPCG(seedNodes, uint64(run)))
	msgs = make([][]route.Message, seedNodes)
	for i := range seedNodes {
		msgs[i] = make([]route.Message, per)
		for j := range per {
			t := rng.IntN(seedNodes - 1)
			if t >= i {
				t++
			}
			c.want[prefix][t]++
			msgs[i][j] = route.Message{Targets: []string{c.ids[t]}, Row: urlenc.Fields{
				"action": "ins", "id": fmt.Sprintf("%s-%d-%d-%d", prefix, run, i, j),
				"origin": c.ids[i], "payload": payloadPad,
			}}
		}
	}
	return msgs, per * seedNodes
}

// produceBulk sends every node's rows into queue in one transaction per
// node (route.Sender.SendBulk: one COPY), all nodes at once, chunk rows
// per transaction (0: all of them), and returns the time of the last
// commit.
func (c *seedCluster) produceBulk(ctx context.Context, queue string, msgs [][]route.Message, chunk int) (time.Time, error) {
	return eachNodeAtOnce(len(msgs), "produce", func(i int) error {
		sender := route.Sender{Queue: queue, Origin: c.ids[i], RequestTick: true}
		step := chunk
		if step <= 0 {
			step = len(msgs[i])
		}
		for k := 0; k < len(msgs[i]); k += step {
			tx, err := c.nodes[i].Pool.Begin(ctx)
			if err != nil {
				return err
			}
			_, err = sender.SendBulk(ctx, tx, msgs[i][k:min(k+step, len(msgs[i]))])
			if err == nil {
				err = tx.Commit(ctx)
			}
			_ = tx.Rollback(context.WithoutCancel(ctx))
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// produceSeed is the seed's producer: one pgq.insert_event statement per
// row (autocommit: one round trip, one transaction), all nodes at once.
// It returns the time of the last commit.
func (c *seedCluster) produceSeed(ctx context.Context, msgs [][]route.Message) (time.Time, error) {
	// Encoded before the clock starts, in the seed's favour.
	rows := make([][]string, len(msgs))
	for i := range msgs {
		for _, m := range msgs[i] {
			s, err := m.Row.Encode()
			if err != nil {
				return time.Time{}, err
			}
			rows[i] = append(rows[i], s)
		}
	}
	return eachNodeAtOnce(len(msgs), "seed produce", func(i int) error {
		conn, err := c.nodes[i].Pool.Acquire(ctx)
		if err != nil {
			return err
		}
		defer conn.Release()
		for j, m := range msgs[i] {
			if _, err := conn.Exec(ctx, sqlSeedProduce, seedPushQueue, m.Targets[0], rows[i][j]); err != nil {
				return err
			}
		}
		return nil
	})
}

// eachNodeAtOnce runs produce for nodes 0..n-1 at once and returns when
// the last one finished (its time) or the errors joined.
func eachNodeAtOnce(n int, what string, produce func(i int) error) (time.Time, error) {
	last := make([]time.Time, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = produce(i); errs[i] == nil {
				last[i] = time.Now()
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return time.Time{}, fmt.Errorf("%s: %w", what, err)
	}
	return latest(last), nil
}

func latest(ts []time.Time) time.Time {
	var l time.Time
	for _, t := range ts {
		if t.After(l) {
			l = t
		}
	}
	return l
}

// seedConsumers are the seed's running processes: a relay and a pull per
// node. Stop lets each finish its current batch.
type seedConsumers struct {
	stop chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	err  error
}

func (sc *seedConsumers) failed() error {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.err
}

// halt stops the consumers after their current batch and returns the
// first error one of them met.
func (sc *seedConsumers) halt() error {
	close(sc.stop)
	sc.wg.Wait()
	return sc.failed()
}

// startSeed starts the seed's relay and pull of every node. Each holds
// its two connections (source and destination) while it runs.
func (c *seedCluster) startSeed(ctx context.Context) *seedConsumers {
	sc := &seedConsumers{stop: make(chan struct{})}
	loop := func(name string, src, dst *pgxpool.Pool, batch func(ctx context.Context, src, dst *pgxpool.Conn) (bool, error)) {
		sc.wg.Add(1)
		go func() {
			defer sc.wg.Done()
			err := func() error {
				s, err := src.Acquire(ctx)
				if err != nil {
					return err
				}
				defer s.Release()
				d, err := dst.Acquire(ctx)
				if err != nil {
					return err
				}
				defer d.Release()
				for {
					select {
					case <-sc.stop:
						return nil
					default:
					}
					got, err := batch(ctx, s, d)
					if err != nil {
						return err
					}
					if got {
						continue
					}
					select {
					case <-sc.stop:
						return nil
					case <-ctx.Done():
						return ctx.Err()
					case <-time.After(seedLoopDelay):
					}
				}
			}()
			if err != nil {
				sc.mu.Lock()
				if sc.err == nil {
					sc.err = fmt.Errorf("seed %s: %w", name, err)
				}
				sc.mu.Unlock()
			}
		}()
	}
	for i, node := range c.ids {
		loop("relay "+node, c.nodes[i].Pool, c.hub.Pool, func(ctx context.Context, src, dst *pgxpool.Conn) (bool, error) {
			return seedRelayBatch(ctx, src, dst)
		})
		loop("pull "+node, c.hub.Pool, c.nodes[i].Pool, func(ctx context.Context, src, dst *pgxpool.Conn) (bool, error) {
			return seedPullBatch(ctx, src, dst, node, &c.seedApplied)
		})
	}
	return sc
}

// seedBatch is Skytools' pgq.Consumer work loop around process: the next
// batch (false if none), all its events, process, finish_batch.
func seedBatch(ctx context.Context, src *pgxpool.Conn, queue, name string, process func([]seedEvent) error) (bool, error) {
	var id pgtype.Int8
	if err := src.QueryRow(ctx, sqlSeedNextBatch, queue, name).Scan(&id); err != nil {
		return false, fmt.Errorf("next_batch: %w", err)
	}
	if !id.Valid {
		return false, nil
	}
	rows, err := src.Query(ctx, sqlSeedBatchEvents, id.Int64)
	if err != nil {
		return false, fmt.Errorf("get_batch_events: %w", err)
	}
	var evs []seedEvent
	for rows.Next() {
		var e seedEvent
		if err := rows.Scan(&e.typ, &e.data, &e.extra1, &e.extra2, &e.extra3, &e.extra4); err != nil {
			rows.Close()
			return false, err
		}
		evs = append(evs, e)
	}
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("get_batch_events: %w", err)
	}
	if err := process(evs); err != nil {
		return false, err
	}
	if _, err := src.Exec(ctx, sqlSeedFinishBatch, id.Int64); err != nil {
		return false, fmt.Errorf("finish_batch: %w", err)
	}
	return true, nil
}

// seedRelayBatch is the seed's push-queue consumer: every event of the
// node's batch goes into the hub's pull queue with its own
// pgq.insert_event call, in one hub transaction committed before
// finish_batch (a RemoteConsumer's dst_db.commit()).
func seedRelayBatch(ctx context.Context, node, hub *pgxpool.Conn) (bool, error) {
	return seedBatch(ctx, node, seedPushQueue, seedRelayName, func(evs []seedEvent) error {
		tx, err := hub.Begin(ctx)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
		for _, e := range evs {
			if _, err := tx.Exec(ctx, sqlSeedInsertEvent, seedPullQueue, e.typ, e.data, e.extra1, e.extra2, e.extra3, e.extra4); err != nil {
				return fmt.Errorf("relay insert_event: %w", err)
			}
		}
		return tx.Commit(ctx)
	})
}

// seedPullBatch is the seed's pull.py: it reads the whole shared batch,
// keeps the events whose ev_extra1 is this node (client-side) and applies
// each with one statement and one commit on the node. (The seed tags
// non-copy events done and still tests their target; every event here is
// a copy.)
func seedPullBatch(ctx context.Context, hub, node *pgxpool.Conn, id string, applied *atomic.Int64) (bool, error) {
	return seedBatch(ctx, hub, seedPullQueue, seedPullName(id), func(evs []seedEvent) error {
		for _, e := range evs {
			if e.extra1.String != id {
				continue
			}
			f, err := urlenc.Parse(e.extra2.String)
			if err != nil {
				return fmt.Errorf("pull: row %q: %w", e.extra2.String, err)
			}
			tx, err := node.Begin(ctx)
			if err != nil {
				return err
			}
			_, err = tx.Exec(ctx, sqlSeedUpsert, f["id"], f["origin"], f["payload"])
			if err == nil {
				err = tx.Commit(ctx)
			}
			_ = tx.Rollback(context.WithoutCancel(ctx))
			if err != nil {
				return fmt.Errorf("pull apply: %w", err)
			}
			applied.Add(1)
		}
		return nil
	})
}

// copierApplied sums the copiers' applied and parked rows.
func (c *seedCluster) copierApplied() (applied, parked int64) {
	for _, tc := range c.copiers {
		st := tc.Stats()
		applied += st.Applied
		parked += st.Parked
	}
	return
}

// waitUntil polls done every 2 ms until it reports true, fails, or 5
// minutes pass, and returns the time it saw done.
func waitUntil(ctx context.Context, what string, done func() (bool, error)) (time.Time, error) {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		ok, err := done()
		if err != nil {
			return time.Time{}, err
		}
		if ok {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%s: not done after 5 minutes", what)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// waitCopier waits until the copiers applied want rows more than applied0.
func (c *seedCluster) waitCopier(ctx context.Context, applied0, want int64) (time.Time, error) {
	return waitUntil(ctx, "copier", func() (bool, error) {
		applied, parked := c.copierApplied()
		c.mu.Lock()
		err, k, msg := c.err, c.errs, c.errMsg
		c.mu.Unlock()
		switch {
		case err != nil:
			return false, err
		case parked > 0:
			return false, fmt.Errorf("copier: %d rows parked (%d failed attempts, first: %s)", parked, k, msg)
		}
		return applied-applied0 >= want, nil
	})
}

// waitSeed waits until the seed's pulls applied want rows more than applied0.
func (c *seedCluster) waitSeed(ctx context.Context, sc *seedConsumers, applied0, want int64) (time.Time, error) {
	return waitUntil(ctx, "seed", func() (bool, error) {
		if err := sc.failed(); err != nil {
			return false, err
		}
		return c.seedApplied.Load()-applied0 >= want, nil
	})
}

// drainCopier is one backlog drain of the copier side: the copiers are
// running; every node produces its rows in one transaction; the time runs
// from production start to the last row applied on its target.
func (c *seedCluster) drainCopier(ctx context.Context, rows int) (time.Duration, error) {
	msgs, total := c.messages("cd", rows)
	applied0, _ := c.copierApplied()
	start := time.Now()
	if _, err := c.produceBulk(ctx, seedCopierPush, msgs, 0); err != nil {
		return 0, err
	}
	end, err := c.waitCopier(ctx, applied0, int64(total))
	if err != nil {
		return 0, err
	}
	return end.Sub(start), nil
}

// drainSeed is the same for the seed side: its consumers are started,
// then the same rows are produced into its push queues.
func (c *seedCluster) drainSeed(ctx context.Context, rows int) (time.Duration, error) {
	msgs, total := c.messages("sd", rows)
	sc := c.startSeed(ctx)
	applied0 := c.seedApplied.Load()
	start := time.Now()
	_, err := c.produceBulk(ctx, seedPushQueue, msgs, 0)
	var end time.Time
	if err == nil {
		end, err = c.waitSeed(ctx, sc, applied0, int64(total))
	}
	if herr := sc.halt(); err == nil {
		err = herr
	}
	if err != nil {
		return 0, err
	}
	return end.Sub(start), nil
}

// liveRun is one live-production measurement of one side.
type liveRun struct {
	produce float64       // rows/s of the producers, start → last commit
	lag     time.Duration // last commit → last row applied
}

// liveCopier: every node's producer sends its rows with SendBulk,
// seedLiveChunk rows per transaction, as fast as it can, the copiers
// running.
func (c *seedCluster) liveCopier(ctx context.Context, rows int) (liveRun, error) {
	msgs, total := c.messages("cl", rows)
	applied0, _ := c.copierApplied()
	start := time.Now()
	last, err := c.produceBulk(ctx, seedCopierPush, msgs, seedLiveChunk)
	if err != nil {
		return liveRun{}, err
	}
	end, err := c.waitCopier(ctx, applied0, int64(total))
	if err != nil {
		return liveRun{}, err
	}
	return liveRun{produce: rate(total, last.Sub(start)), lag: end.Sub(last)}, nil
}

// liveSeed: every node's producer sends its rows with one insert_event
// per row, the seed's consumers running.
func (c *seedCluster) liveSeed(ctx context.Context, rows int) (liveRun, error) {
	msgs, total := c.messages("sl", rows)
	sc := c.startSeed(ctx)
	applied0 := c.seedApplied.Load()
	start := time.Now()
	last, err := c.produceSeed(ctx, msgs)
	var end time.Time
	if err == nil {
		end, err = c.waitSeed(ctx, sc, applied0, int64(total))
	}
	if herr := sc.halt(); err == nil {
		err = herr
	}
	if err != nil {
		return liveRun{}, err
	}
	return liveRun{produce: rate(total, last.Sub(start)), lag: end.Sub(last)}, nil
}

// warmUp sends one row from every node to the next on both sides and
// waits until all are applied, so start-up stays out of the runs.
func (c *seedCluster) warmUp(ctx context.Context) error {
	one := func(prefix string) [][]route.Message {
		run := c.runs[prefix]
		c.runs[prefix]++
		if c.want[prefix] == nil {
			c.want[prefix] = make([]int, seedNodes)
		}
		msgs := make([][]route.Message, seedNodes)
		for i := range seedNodes {
			t := (i + 1) % seedNodes
			c.want[prefix][t]++
			msgs[i] = []route.Message{{Targets: []string{c.ids[t]}, Row: urlenc.Fields{
				"action": "ins", "id": fmt.Sprintf("%s-%d-%d", prefix, run, i), "origin": c.ids[i]}}}
		}
		return msgs
	}
	start := time.Now()
	applied0, _ := c.copierApplied()
	if _, err := c.produceBulk(ctx, seedCopierPush, one("cw"), 0); err != nil {
		return err
	}
	if _, err := c.waitCopier(ctx, applied0, seedNodes); err != nil {
		return fmt.Errorf("copier warm-up: %w", err)
	}
	copierUp := time.Since(start)
	sc := c.startSeed(ctx)
	seed0 := c.seedApplied.Load()
	_, err := c.produceBulk(ctx, seedPushQueue, one("sw"), 0)
	if err == nil {
		_, err = c.waitSeed(ctx, sc, seed0, seedNodes)
	}
	if herr := sc.halt(); err == nil {
		err = herr
	}
	if err != nil {
		return fmt.Errorf("seed warm-up: %w", err)
	}
	c.s.logf("seed: warm-up rows delivered: copier in %.1fs, seed in %.1fs", copierUp.Seconds(), (time.Since(start) - copierUp).Seconds())
	return nil
}

// checkDelivered verifies that every node holds exactly the rows sent to
// it, per side and case (row-id prefix): none lost, none duplicated (the
// primary key), none delivered to another node.
func (c *seedCluster) checkDelivered(ctx context.Context) error {
	for prefix, want := range c.want {
		for i, db := range c.nodes {
			var got int
			if err := db.Pool.QueryRow(ctx, "select count(*) from rows where id like $1 || '-%'", prefix).Scan(&got); err != nil {
				return err
			}
			if got != want[i] {
				return fmt.Errorf("node %s holds %d %q rows, want %d", c.ids[i], got, prefix, want[i])
			}
		}
	}
	return nil
}

// seedFamily measures the seed against the copier on one cluster of
// seedNodes nodes and a hub: backlog drain, then live production.
func (s *suite) seedFamily(ctx context.Context) error {
	start := time.Now()
	c, err := s.newSeedCluster(ctx)
	if err != nil {
		return err
	}
	defer c.close()
	if err := c.warmUp(ctx); err != nil {
		return err
	}
	s.logf("seed: N = %d set up and warmed up in %.1fs", seedNodes, time.Since(start).Seconds())

	rows := s.o.n(seedRows)
	ours, ceil, err := s.alternate(ctx, "seed: backlog drain", s.o.Runs, rows, c.drainCopier, c.drainSeed)
	if err != nil {
		return err
	}
	total := max(1, rows/seedNodes) * seedNodes
	r := rateResult(fmt.Sprintf("backlog drain, N = %d nodes + hub, %s rows: TargetedCopier vs the seed", seedNodes, count(total)),
		ours, ceil, "the seed in Go, same rows", "≥ 10", 10)
	r.Events = total
	r.Note = fmt.Sprintf("every node produces rows/%d rows, each for one random other node, in one transaction (SendBulk, both sides); "+
		"the consumers are already running; rows/s = rows / (production start → last row applied on its target); sides alternate", seedNodes)
	s.add(r)

	live := s.o.n(seedLiveRows)
	liveTotal := max(1, live/seedNodes) * seedNodes
	var ourProd, seedProd, ourLag, seedLag, lagRatio []float64
	for run := range s.o.Runs {
		var o, sd liveRun
		for k := range 2 {
			var err error
			if (run+k)%2 == 0 {
				o, err = c.liveCopier(ctx, live)
			} else {
				sd, err = c.liveSeed(ctx, live)
			}
			if err != nil {
				return fmt.Errorf("seed: live production run %d: %w", run+1, err)
			}
		}
		ourProd, seedProd = append(ourProd, o.produce), append(seedProd, sd.produce)
		ourLag = append(ourLag, float64(o.lag)/float64(time.Millisecond))
		seedLag = append(seedLag, float64(sd.lag)/float64(time.Millisecond))
		lagRatio = append(lagRatio, float64(sd.lag)/float64(max(o.lag, time.Microsecond)))
		s.logf("seed: live production run %d: producers ours %s, seed %s; last commit → last applied: ours %.0f ms, seed %.0f ms",
			run+1, formatRate(o.produce), formatRate(sd.produce), ourLag[run], seedLag[run])
	}
	r = rateResult(fmt.Sprintf("live production, %d producers, %s rows: producers' rows/s (SendBulk, %d rows/tx)", seedNodes, count(liveTotal), seedLiveChunk),
		ourProd, seedProd, "the seed: one insert_event per row, autocommit", "report", 0)
	r.Events = liveTotal
	s.add(r)
	lagTarget := 2*seedTick + 100*time.Millisecond
	met := median(ourLag) <= float64(lagTarget)/float64(time.Millisecond)
	s.add(Result{
		Case: fmt.Sprintf("live production, %s rows: TargetedCopier, producers' last commit → last row applied", count(liveTotal)),
		Unit: "ms", Ours: median(ourLag), OursRuns: ourLag,
		Ceiling: median(seedLag), CeilingRuns: seedLag, CeilingWhat: "the seed, same rows",
		Ratio:  median(lagRatio),
		Target: fmt.Sprintf("≤ 2 ticks + 100 ms = %d ms", lagTarget.Milliseconds()), Met: &met,
		Events: liveTotal,
		Note: "producers on every node send as fast as they can, at once, the consumers running; the lag includes draining " +
			"whatever backlog the producers built up",
	})
	if err := c.checkDelivered(ctx); err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	s.note("seed: the seed (pgsql-announce 2012, push-pull targeted copy with Skytools consumers) rebuilt in Go with pgx: per node a relay "+
		"(next_batch, get_batch_events, one pgq.insert_event round trip per event into the hub's shared pull queue, hub commit, finish_batch) "+
		"and a pull (the whole shared batch, ev_extra1 filtered client-side, one upsert in its own transaction per row: begin, insert … on conflict, commit); "+
		"no batch tracking (the seed's RemoteConsumer last-batch check is left out, in the seed's favour), loop_delay %v (Skytools' default 1 s); "+
		"the seed's consumers run only during its own runs. Copier side: one TargetedCopier per node, shared routing, RowApplier. "+
		"Same %d node databases and hub, one ticker library instance at %v, queues ticker_max_lag %v; every node's rows counted per side at the end",
		seedLoopDelay, seedNodes, seedTick, seedMaxLag)
	return nil
}
