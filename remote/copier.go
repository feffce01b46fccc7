package remote

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/pgq"
)

// Routing chooses how the hub holds events for their targets.
type Routing int

const (
	// RoutingShared is the seed's layout and the default: one pull queue
	// for every target, each pull selecting its events server-side by
	// ev_extra1. Measured faster at N = 4, 16 and 64 nodes, with less hub
	// CPU per row (bench/README.md).
	RoutingShared Routing = iota + 1
	// RoutingPerTarget gives each target node its own queue on the hub
	// ("<PullQueue>.<node>"); a node's pull reads only its own events, but
	// every relay batch writes one COPY per target queue and the hub ticks
	// N queues.
	RoutingPerTarget
)

func (r Routing) String() string {
	switch r {
	case RoutingPerTarget:
		return "per-target"
	case RoutingShared:
		return "shared"
	}
	return fmt.Sprintf("Routing(%d)", int(r))
}

// Runner is anything with a Run(ctx) error lifecycle, such as a
// *ticker.Ticker, run alongside the copier.
type Runner interface {
	Run(ctx context.Context) error
}

// CopierConfig configures a TargetedCopier.
type CopierConfig struct {
	// Node is this node's id (see ValidateNode). Required.
	Node string
	// Local is this node's database: it holds PushQueue and receives the
	// rows addressed to this node. Required.
	Local *pgxpool.Pool
	// Hubs are the hub shards, in the same order on every node. A target
	// belongs to shard ShardOf(target, len(Hubs)). Required (at least one).
	Hubs []*pgxpool.Pool
	// PushQueue is the queue on Local that producers write to. Default "push_queue".
	PushQueue string
	// PullQueue is the hub queue (RoutingShared) or the prefix of the
	// per-target queues (RoutingPerTarget). Default "pull_queue".
	PullQueue string
	// Routing chooses the hub layout. Default RoutingShared. Every node of
	// a cluster must use the same.
	Routing Routing
	// Applier applies one pulled row inside the node's transaction. Required.
	Applier Applier
	// Accept decides which event types reach the Applier; others are
	// counted as ignored (the seed ignores non-copy events). Default:
	// "copy" and londiste-style types starting with "I:", "U:" or "D:".
	Accept func(evType string) bool
	// MaxRetries is how many times a failing row is retried before it is
	// parked in pgq_go.parked_event. Rows with a bad payload
	// (ErrBadPayload) are parked at once. Default 5.
	MaxRetries int
	// RetryDelay is the delay before a failed row's first retry; it doubles
	// with every attempt up to 32x. Default 5s.
	RetryDelay time.Duration
	// NoTargetRegistration stops the relay from registering a target's
	// pull consumer on the hub when it first relays to it. By default it
	// does, so rows for a node that has never run yet wait for it instead
	// of being invisible to its later registration. Unregister a
	// decommissioned node's pull consumer, or its events are kept forever.
	NoTargetRegistration bool
	// Consumer tunes the relay and pull consumers (LazyFetch, PollInterval,
	// ErrorBackoff, Logger, Hooks...). Queue and Name are set by the copier.
	Consumer consumer.Config
	// QueueConfig is applied to every queue the copier creates (the push
	// queue, pull queues). Low latency needs TickerMaxLag near the ticker
	// period (PgQ's default is 3s). Default: PgQ's defaults.
	QueueConfig pgq.QueueConfig
	// Also are run alongside the relay and pull, e.g. a ticker for the
	// node's database.
	Also []Runner
}

func (c CopierConfig) withDefaults() CopierConfig {
	if c.PushQueue == "" {
		c.PushQueue = "push_queue"
	}
	if c.PullQueue == "" {
		c.PullQueue = "pull_queue"
	}
	if c.Routing == 0 {
		c.Routing = RoutingShared
	}
	if c.Accept == nil {
		c.Accept = DefaultAccept
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = 5
	}
	if c.RetryDelay == 0 {
		c.RetryDelay = 5 * time.Second
	}
	return c
}

func (c CopierConfig) validate() error {
	var errs []error
	if err := ValidateNode(c.Node); err != nil {
		errs = append(errs, fmt.Errorf("remote: CopierConfig.Node: %w", err))
	}
	if c.Local == nil {
		errs = append(errs, errors.New("remote: CopierConfig.Local is required"))
	}
	if len(c.Hubs) == 0 {
		errs = append(errs, errors.New("remote: CopierConfig.Hubs needs at least one hub"))
	}
	for i, h := range c.Hubs {
		if h == nil {
			errs = append(errs, fmt.Errorf("remote: CopierConfig.Hubs[%d] is nil", i))
		}
	}
	if c.Applier == nil {
		errs = append(errs, errors.New("remote: CopierConfig.Applier is required"))
	}
	for _, q := range []struct{ field, v string }{{"PushQueue", c.PushQueue}, {"PullQueue", c.PullQueue}} {
		if err := pgq.ValidateName("queue", q.v); err != nil {
			errs = append(errs, fmt.Errorf("remote: CopierConfig.%s: %w", q.field, err))
		}
	}
	if c.Routing != RoutingShared && c.Routing != RoutingPerTarget {
		errs = append(errs, fmt.Errorf("remote: CopierConfig.Routing: unknown %v", c.Routing))
	}
	if c.MaxRetries < 0 {
		errs = append(errs, fmt.Errorf("remote: CopierConfig.MaxRetries %d is negative", c.MaxRetries))
	}
	if c.RetryDelay < 0 {
		errs = append(errs, fmt.Errorf("remote: CopierConfig.RetryDelay %v is negative", c.RetryDelay))
	}
	return errors.Join(errs...)
}

// DefaultAccept accepts "copy" events and londiste-style "I:", "U:", "D:" types.
func DefaultAccept(evType string) bool {
	return evType == CopyEventType || strings.HasPrefix(evType, "I:") ||
		strings.HasPrefix(evType, "U:") || strings.HasPrefix(evType, "D:")
}

// CopierStats counts what a TargetedCopier did since it started.
type CopierStats struct {
	Relayed int64 // events relayed from the push queue to a hub
	Applied int64 // rows applied on this node
	Retried int64 // rows sent to the retry queue after a failed apply
	Parked  int64 // rows parked (on this node; relay-side bad targets on the hub)
	Ignored int64 // events of types Accept refused
}

// TargetedCopier runs one node of a targeted-copy cluster: the relay
// (RemoteConsumer from the node's push queue into the hub shards, exactly
// once) and the pull (RemoteConsumer from the node's hub shard into the
// node, exactly once, only this node's events, selected server-side),
// plus any Also runners, as goroutines of one process.
//
// Consumer names derive from the node id: see RelayConsumerName and
// PullConsumerName.
type TargetedCopier struct {
	cfg    CopierConfig
	log    *slog.Logger
	relays []*RemoteConsumer
	movers []*relay // the relays' handlers, which own a registration connection
	pull   *RemoteConsumer

	relayed, applied, retried, parked, ignored atomic.Int64
}

// NewTargetedCopier validates cfg and builds the copier.
func NewTargetedCopier(cfg CopierConfig) (*TargetedCopier, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := cfg.Consumer.Logger // nil: the consumers' default (Warn and above to slog.Default)
	if log == nil {
		log = slog.Default()
	}
	tc := &TargetedCopier{cfg: cfg, log: log.With("node", cfg.Node)}
	shards := len(cfg.Hubs)
	for s, hub := range cfg.Hubs {
		r := &relay{tc: tc, shard: s, name: RelayConsumerName(cfg.Node, s, shards), ensured: map[string]bool{}}
		cc := cfg.Consumer
		cc.Queue, cc.Name, cc.Register = cfg.PushQueue, r.name, true
		rc, err := New(cfg.Local, hub, Config{Consumer: cc}, r)
		if err != nil {
			return nil, err
		}
		tc.relays, tc.movers = append(tc.relays, rc), append(tc.movers, r)
	}
	p := &puller{tc: tc}
	cc := cfg.Consumer
	cc.Queue, cc.Name, cc.Register = tc.pullQueue(), PullConsumerName(cfg.Node), true
	cc.Filter = pgq.Eq(pgq.FieldExtra1, cfg.Node)
	rc, err := New(tc.hubOf(cfg.Node), cfg.Local, Config{Consumer: cc}, p)
	if err != nil {
		return nil, err
	}
	tc.pull = rc
	return tc, nil
}

// hubOf is the hub shard holding target's events.
func (tc *TargetedCopier) hubOf(target string) *pgxpool.Pool {
	return tc.cfg.Hubs[ShardOf(target, len(tc.cfg.Hubs))]
}

// pullQueue is the hub queue this node pulls from.
func (tc *TargetedCopier) pullQueue() string { return tc.queueFor(tc.cfg.Node) }

func (tc *TargetedCopier) queueFor(target string) string {
	if tc.cfg.Routing == RoutingPerTarget {
		return PerTargetQueue(tc.cfg.PullQueue, target)
	}
	return tc.cfg.PullQueue
}

// Stats returns the copier's counters.
func (tc *TargetedCopier) Stats() CopierStats {
	return CopierStats{Relayed: tc.relayed.Load(), Applied: tc.applied.Load(), Retried: tc.retried.Load(),
		Parked: tc.parked.Load(), Ignored: tc.ignored.Load()}
}

// Setup installs the tracking schema on the node and the hubs, creates the
// queues this node needs and registers its consumers: the push queue on
// the node, and this node's pull queue (per-target) or the shared pull
// queue on its hub shard, with its pull consumer. It is idempotent; Run
// calls it. Run Setup before producing on a node (its relay must be
// registered to see the rows), and register every target before rows are
// produced for it (or leave target registration on, the default).
func (tc *TargetedCopier) Setup(ctx context.Context) error {
	for _, db := range append([]*pgxpool.Pool{tc.cfg.Local}, tc.cfg.Hubs...) {
		if err := Install(ctx, db); err != nil {
			return err
		}
	}
	created, err := pgq.CreateQueue(ctx, tc.cfg.Local, tc.cfg.PushQueue)
	if err != nil {
		return err
	}
	if created {
		if err := pgq.SetQueueConfig(ctx, tc.cfg.Local, tc.cfg.PushQueue, tc.cfg.QueueConfig); err != nil {
			return err
		}
	}
	for _, r := range tc.relays {
		if _, err := r.Consumer().Register(ctx); err != nil {
			return err
		}
	}
	return ensureTarget(ctx, tc.hubOf(tc.cfg.Node), tc.pullQueue(), tc.cfg.Node, tc.cfg.QueueConfig)
}

// hubDB is a pool or a connection to a hub.
type hubDB interface {
	pgq.DB
	Begin(ctx context.Context) (pgx.Tx, error)
}

// ensureTarget creates target's pull queue if needed and registers its
// pull consumer, in a short transaction of its own, serialised with other
// nodes doing the same. It never runs inside a relay's transaction: that
// would hold one queue lock while waiting for another (deadlock between
// relays), and registering early is harmless.
func ensureTarget(ctx context.Context, hub hubDB, queue, target string, qc pgq.QueueConfig) error {
	// Lock-free check first: at start-up every relay meets every target.
	var registered bool
	if err := hub.QueryRow(ctx, `select exists (select 1 from pgq.subscription s
		join pgq.queue q on q.queue_id = s.sub_queue join pgq.consumer c on c.co_id = s.sub_consumer
		where q.queue_name = $1 and c.co_name = $2)`, queue, PullConsumerName(target)).Scan(&registered); err != nil {
		return err
	}
	if registered {
		return nil
	}
	tx, err := hub.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, "select pg_advisory_xact_lock(hashtextextended('pgq_go.queue:' || $1, 0))", queue); err != nil {
		return err
	}
	created, err := pgq.CreateQueue(ctx, tx, queue)
	if err != nil {
		return err
	}
	if created {
		if err := pgq.SetQueueConfig(ctx, tx, queue, qc); err != nil {
			return err
		}
	}
	if _, err = pgq.RegisterConsumer(ctx, tx, queue, PullConsumerName(target)); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// Run sets up the queues, then runs the relays, the pull and the Also
// runners until ctx is cancelled (it returns nil) or one of them fails
// fatally (it stops the others and returns that error).
func (tc *TargetedCopier) Run(ctx context.Context) error {
	b := tc.cfg.Consumer.ErrorBackoff
	if b.Initial == 0 {
		b = consumer.Backoff{Initial: time.Second, Max: 20 * time.Second, Multiplier: 2}
	}
	for n := 1; ; n++ {
		err := tc.Setup(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, pgq.ErrNoExtension) || errors.Is(err, pgq.ErrInvalidName) {
			return fmt.Errorf("remote: node %s setup: %w", tc.cfg.Node, err)
		}
		d := b.Delay(n)
		tc.log.Error("targeted copy setup failed; retrying", "err", err, "backoff", d)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	launch := func(what string, run func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ctx); err != nil {
				once.Do(func() { first = fmt.Errorf("remote: node %s %s: %w", tc.cfg.Node, what, err) })
				cancel()
			}
		}()
	}
	for i, r := range tc.relays {
		launch(fmt.Sprintf("relay to hub %d", i), r.Run)
	}
	launch("pull", tc.pull.Run)
	for i, a := range tc.cfg.Also {
		launch(fmt.Sprintf("runner %d", i), a.Run)
	}
	wg.Wait()
	for _, r := range tc.movers {
		r.close()
	}
	return first
}

// relay moves a batch of the node's push queue into one hub shard.
type relay struct {
	tc    *TargetedCopier
	shard int
	name  string

	mu      sync.Mutex
	ensured map[string]bool // targets whose registration on the hub is committed
	regConn *pgx.Conn       // registration connection to the hub, opened on first use
}

// relayFlush bounds the events buffered for COPY, over all hub queues of a
// relay batch: memory stays bounded however many targets a batch has.
const relayFlush = 5000

func (r *relay) ProcessRemoteBatch(ctx context.Context, b *pgq.Batch, hub pgx.Tx) error {
	tc := r.tc
	shards := len(tc.cfg.Hubs)
	bufs := map[string][]pgq.EventData{}
	buffered := 0
	flushAll := func() error {
		for queue, buf := range bufs {
			if len(buf) == 0 {
				continue
			}
			if _, err := pgq.InsertEvents(ctx, hub, queue, buf); err != nil {
				return err
			}
			tc.relayed.Add(int64(len(buf)))
			bufs[queue] = buf[:0]
		}
		buffered = 0
		return nil
	}
	var newTargets []string
	for ev, err := range b.Events(ctx) {
		if err != nil {
			return err
		}
		target := ev.Extra1.String
		if err := ValidateNode(target); err != nil || !ev.Extra1.Valid {
			if err == nil {
				err = fmt.Errorf("%w: NULL target", ErrInvalidNode)
			}
			// Not deliverable anywhere: kept on the hub for an operator.
			if perr := park(ctx, hub, r.name, b.Queue, ev, fmt.Errorf("event %d: %w", ev.ID, err)); perr != nil {
				return perr
			}
			tc.parked.Add(1)
			tc.log.Warn("event with an invalid target parked on the hub", "event_id", ev.ID, "err", err)
			continue
		}
		if shards > 1 && ShardOf(target, shards) != r.shard {
			continue // another relay carries it to its shard
		}
		queue := tc.queueFor(target)
		if !tc.cfg.NoTargetRegistration && !r.isEnsured(target) {
			if err := r.register(ctx, queue, target); err != nil {
				return fmt.Errorf("register target %s on hub: %w", target, err)
			}
			newTargets = append(newTargets, target)
		}
		bufs[queue] = append(bufs[queue], ev.EventData)
		if buffered++; buffered >= relayFlush {
			if err := flushAll(); err != nil {
				return err
			}
		}
	}
	if err := flushAll(); err != nil {
		return err
	}
	if len(newTargets) > 0 {
		tc.log.Debug("targets registered on hub", "shard", r.shard, "targets", newTargets)
	}
	return nil
}

// register ensures target on the relay's hub through a connection of its
// own: the relay already holds one of the hub pool's connections for its
// batch, and taking a second from the pool can deadlock when every
// connection is held by a relay waiting for another.
func (r *relay) register(ctx context.Context, queue, target string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.regConn == nil {
		conn, err := pgx.ConnectConfig(ctx, r.tc.cfg.Hubs[r.shard].Config().ConnConfig.Copy())
		if err != nil {
			return err
		}
		r.regConn = conn
	}
	if err := ensureTarget(ctx, r.regConn, queue, target, r.tc.cfg.QueueConfig); err != nil {
		r.closeLocked()
		return err
	}
	r.ensured[target] = true
	return nil
}

func (r *relay) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closeLocked()
}

func (r *relay) closeLocked() {
	if r.regConn != nil {
		_ = r.regConn.Close(context.Background())
		r.regConn = nil
	}
}

func (r *relay) isEnsured(target string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ensured[target]
}

// puller applies a batch of this node's events to the node.
type puller struct{ tc *TargetedCopier }

type pullCounts struct{ applied, retried, parked, ignored int64 }

func (p *puller) ProcessRemoteBatch(ctx context.Context, b *pgq.Batch, tx pgx.Tx) error {
	// Fast path: every row in one savepoint, no per-row round trips.
	c, err := p.applyAll(ctx, b, tx)
	if err != nil {
		// Some row failed: redo the batch row by row, each in its own
		// savepoint, retrying or parking the failures.
		if c, err = p.applyEach(ctx, b, tx); err != nil {
			return err
		}
	}
	tc := p.tc
	tc.applied.Add(c.applied)
	tc.retried.Add(c.retried)
	tc.parked.Add(c.parked)
	tc.ignored.Add(c.ignored)
	return nil
}

// applyAll applies the batch inside one savepoint; any failure rolls it
// back and is returned.
func (p *puller) applyAll(ctx context.Context, b *pgq.Batch, tx pgx.Tx) (pullCounts, error) {
	var c pullCounts
	sp, err := tx.Begin(ctx)
	if err != nil {
		return c, err
	}
	for ev, err := range b.Events(ctx) {
		if err == nil {
			switch {
			case ev.Extra1.String != p.tc.cfg.Node:
				err = errors.New("misaddressed event") // handled row by row
			case !p.wanted(ev):
				c.ignored++
				continue
			default:
				err = p.tc.cfg.Applier.Apply(ctx, sp, ev)
			}
		}
		if err != nil {
			_ = sp.Rollback(ctx)
			return c, err
		}
		c.applied++
	}
	return c, sp.Commit(ctx)
}

func (p *puller) wanted(ev *pgq.Event) bool {
	return p.tc.cfg.Accept(ev.Type.String)
}

func (p *puller) applyEach(ctx context.Context, b *pgq.Batch, tx pgx.Tx) (pullCounts, error) {
	tc := p.tc
	var c pullCounts
	for ev, err := range b.Events(ctx) {
		if err != nil {
			return c, err
		}
		if ev.Extra1.String != tc.cfg.Node {
			// The server-side filter makes this impossible; never apply it.
			if err := park(ctx, tx, b.Consumer, b.Queue, ev, fmt.Errorf("event %d addressed to %q, not %q", ev.ID, ev.Extra1.String, tc.cfg.Node)); err != nil {
				return c, err
			}
			c.parked++
			continue
		}
		if !p.wanted(ev) {
			c.ignored++
			continue
		}
		sp, err := tx.Begin(ctx)
		if err != nil {
			return c, err
		}
		aerr := tc.cfg.Applier.Apply(ctx, sp, ev)
		if aerr == nil {
			if err := sp.Commit(ctx); err != nil {
				return c, err
			}
			c.applied++
			continue
		}
		if err := sp.Rollback(ctx); err != nil {
			return c, err
		}
		if ctx.Err() != nil {
			return c, ctx.Err()
		}
		if errors.Is(aerr, ErrBadPayload) || int(ev.Retry) >= tc.cfg.MaxRetries {
			if err := park(ctx, tx, b.Consumer, b.Queue, ev, aerr); err != nil {
				return c, err
			}
			c.parked++
			tc.log.Warn("row parked", "event_id", ev.ID, "retries", ev.Retry, "err", aerr)
			continue
		}
		d := tc.cfg.RetryDelay << min(ev.Retry, 5)
		ev.TagRetry(d)
		c.retried++
		tc.log.Warn("row failed; retrying later", "event_id", ev.ID, "retries", ev.Retry, "delay", d, "err", aerr)
	}
	return c, nil
}
