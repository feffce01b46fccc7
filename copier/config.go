package copier

import (
	"errors"
	"fmt"
	"github.com/jackc/pgx/v5"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/apply"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/route"
)

// Routing chooses how the hub holds events for their targets.
type Routing int

const (
	// RoutingShared is the seed's layout and the default: one pull queue
	// for every target, each pull selecting its events server-side by
	// ev_extra1, through a target index on the queue's event tables
	// (IndexHubQueue). A relay rings the pull of each target it writes
	// rows for (route.PullBell, consumer.Bell): a pull takes a batch only
	// when it has rows, not on every tick. Measured faster at N = 4, 16
	// and 64 nodes, with less hub CPU per row (bench/README.md).
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

// Config configures a TargetedCopier. Zero fields take the documented
// defaults.
type Config struct {
	// Node is this node's id (see route.ValidateNode). Required.
	Node string
	// Local is this node's database: it holds PushQueue and receives the
	// rows addressed to this node. Required.
	Local *pgxpool.Pool
	// Hubs are the hub shards, in the same order on every node. A target
	// belongs to shard route.ShardOf(target, len(Hubs)). Required (at least one).
	//
	// A pool of one connection is enough: the relay, the pull and target
	// registrations take turns on it. Unless DisableListen is set, the
	// pull also holds one listening connection per hub pool, shared by
	// every consumer of the process on that pool: a node in a process of
	// its own holds two hub backends, and copiers of many nodes sharing one
	// pool hold the pool's connections and one listener in all.
	Hubs []*pgxpool.Pool
	// HubListen, when set, has one entry per hub (nil: that pool's own
	// settings) for the pull's LISTEN connection (consumer.Config.
	// ListenConfig). Set it when the hub pools go through PgBouncer in
	// transaction pooling, which cannot carry LISTEN: the listener then
	// connects to the hub's PostgreSQL directly.
	HubListen []*pgx.ConnConfig
	// PushQueue is the queue on Local that producers write to. Default "push_queue".
	PushQueue string
	// PullQueue is the hub queue (RoutingShared) or the prefix of the
	// per-target queues (RoutingPerTarget). Default "pull_queue". With
	// RoutingPerTarget it must leave room for a node id of route.MaxNodeLen
	// bytes: route.PerTargetQueue(PullQueue, node) is at most pgq.MaxNameLen.
	PullQueue string
	// Routing chooses the hub layout. Default RoutingShared. Every node of
	// a cluster must use the same.
	Routing Routing
	// Applier applies the pulled rows inside the node's transaction. One
	// that implements apply.BatchApplier gets them in chunks (up to 16 MiB,
	// counting 512 bytes per row besides its text); a chunk that fails is
	// redone row by row with Apply, which finds the failing row. Required.
	Applier apply.Applier
	// Accept decides which event types reach the Applier; others are
	// counted as ignored (the seed ignores non-copy events). Default:
	// "copy" and londiste-style types starting with "I:", "U:" or "D:".
	Accept func(evType string) bool
	// MaxRetries is how many times a failing row is retried after its
	// first attempt before it is parked in pgq_go.parked_event: the
	// default 5 means up to 6 attempts. Rows with a bad payload
	// (apply.ErrBadPayload) are parked at once. Retries are held on
	// the node (see OrderKey) and tried at the start of a pull batch once
	// due: the pull gets a batch at least every ticker_idle_period of its
	// queue (1 min by default), so a retry may come that much late.
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
	// LazyFetch is how many events the relay and pull read per cursor
	// fetch (consumer.Config.LazyFetch, Skytools pgq_lazy_fetch). Default 300.
	LazyFetch int
	// PollInterval is the longest wait of the relay and pull between two
	// looks for a batch when their queue is drained; tick notifications
	// end it earlier (consumer.Config.PollInterval, Skytools loop_delay).
	// Default 1s.
	PollInterval time.Duration
	// DisableListen stops the relay and pull from listening for tick
	// notifications: they then only poll. Default false.
	DisableListen bool
	// ErrorBackoff is the pause after a failed batch, setup or database
	// error (consumer.Config.ErrorBackoff). Default 1s doubling up to 20s.
	ErrorBackoff consumer.Backoff
	// Logger receives the copier's logs. Relay and pull records carry the
	// consumer name (relay.<node>[.s<i>], pull.<node>); add a "node"
	// attribute yourself (Logger.With) if several copiers share a logger.
	// Default: slog.Default() with a "node" attribute, records below Warn
	// discarded.
	Logger *slog.Logger
	// Hooks observe the relay and pull consumers (consumer.Hooks).
	// Default: none.
	Hooks consumer.Hooks
	// QueueConfig is applied to every queue the copier creates (the push
	// queue, pull queues). Low latency needs TickerMaxLag near the ticker
	// period (PgQ's default is 3s). Default: PgQ's defaults.
	QueueConfig pgq.QueueConfig
	// OrderKey names the events that must be applied in the order they
	// were sent. Once an event fails, later events with the same key are
	// held on the node behind it (pgq_go.held_event) and follow it when it
	// applies, or are parked behind it when it is parked; events with
	// other keys go on. Default: the Applier's OrderKey when it implements
	// apply.OrderKeyer (apply.RowApplier: table + key columns), else one key for every
	// event (strict order: one failing event holds the whole node until it
	// applies, or until an operator replays or purges it once parked). Return a
	// value unique per event (such as its id) to opt out of ordering. An
	// error parks the event at once, without a key.
	OrderKey func(ev *pgq.Event) (string, error)
	// IdleTimeout bounds how long the relay's hub transaction and the
	// pull's node transaction may sit idle mid-batch (a silent network
	// hang to the other side, a paused process) before that server ends
	// it and releases its row locks; the batch is then redone. Default
	// 60s; negative leaves the servers' settings. See remote.Config.IdleTimeout.
	IdleTimeout time.Duration
}

// strictOrderKey puts every event under one key.
func strictOrderKey(*pgq.Event) (string, error) { return "*", nil }

// layoutDefaults fills the queue names and routing every node of a
// cluster shares (Config, ReshardConfig).
func layoutDefaults(push, pull string, r Routing) (string, string, Routing) {
	if push == "" {
		push = "push_queue"
	}
	if pull == "" {
		pull = "pull_queue"
	}
	if r == 0 {
		r = RoutingShared
	}
	return push, pull, r
}

func (c Config) withDefaults() Config {
	c.PushQueue, c.PullQueue, c.Routing = layoutDefaults(c.PushQueue, c.PullQueue, c.Routing)
	if c.Accept == nil {
		c.Accept = DefaultAccept
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = 5
	}
	if c.RetryDelay == 0 {
		c.RetryDelay = 5 * time.Second
	}
	if c.OrderKey == nil {
		if ok, isKeyer := c.Applier.(apply.OrderKeyer); isKeyer {
			c.OrderKey = ok.OrderKey
		} else {
			c.OrderKey = strictOrderKey
		}
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	if err := route.ValidateNode(c.Node); err != nil {
		errs = append(errs, fmt.Errorf("copier: Config.Node: %w", err))
	}
	if c.Local == nil {
		errs = append(errs, errors.New("copier: Config.Local is required"))
	}
	if len(c.Hubs) == 0 {
		errs = append(errs, errors.New("copier: Config.Hubs needs at least one hub"))
	}
	if c.HubListen != nil && len(c.HubListen) != len(c.Hubs) {
		errs = append(errs, fmt.Errorf("copier: Config.HubListen has %d entries for %d hubs", len(c.HubListen), len(c.Hubs)))
	}
	for i, h := range c.Hubs {
		if h == nil {
			errs = append(errs, fmt.Errorf("copier: Config.Hubs[%d] is nil", i))
		}
	}
	if c.Applier == nil {
		errs = append(errs, errors.New("copier: Config.Applier is required"))
	}
	for _, q := range []struct{ field, v string }{{"PushQueue", c.PushQueue}, {"PullQueue", c.PullQueue}} {
		if err := pgq.ValidateName("queue", q.v); err != nil {
			errs = append(errs, fmt.Errorf("copier: Config.%s: %w", q.field, err))
		}
	}
	if c.Routing == RoutingPerTarget && c.PullQueue != "" {
		// Every node id must yield a valid per-target queue name.
		longest := route.PerTargetQueue(c.PullQueue, strings.Repeat("n", route.MaxNodeLen))
		if err := pgq.ValidateName("queue", longest); err != nil {
			errs = append(errs, fmt.Errorf("copier: Config.PullQueue %q is too long for per-target routing: "+
				"the queue of a %d-byte node id would be %d bytes: %w", c.PullQueue, route.MaxNodeLen, len(longest), err))
		}
	}
	if c.Routing != RoutingShared && c.Routing != RoutingPerTarget {
		errs = append(errs, fmt.Errorf("copier: Config.Routing: unknown %v", c.Routing))
	}
	if c.MaxRetries < 0 {
		errs = append(errs, fmt.Errorf("copier: Config.MaxRetries %d is negative", c.MaxRetries))
	}
	if c.RetryDelay < 0 {
		errs = append(errs, fmt.Errorf("copier: Config.RetryDelay %v is negative", c.RetryDelay))
	}
	if c.LazyFetch < 0 {
		errs = append(errs, fmt.Errorf("copier: Config.LazyFetch %d is negative", c.LazyFetch))
	}
	if c.PollInterval < 0 {
		errs = append(errs, fmt.Errorf("copier: Config.PollInterval %v is negative", c.PollInterval))
	}
	return errors.Join(errs...)
}

// DefaultAccept accepts "copy" events and londiste-style "I:", "U:", "D:" types.
func DefaultAccept(evType string) bool {
	return evType == route.CopyEventType || strings.HasPrefix(evType, "I:") ||
		strings.HasPrefix(evType, "U:") || strings.HasPrefix(evType, "D:")
}

// Stats counts what a TargetedCopier did since it started.
type Stats struct {
	Relayed int64 // events relayed from the push queue to a hub
	Applied int64 // rows applied on this node
	Retried int64 // rows sent to the retry queue after a failed apply
	Parked  int64 // rows parked (on this node; relay-side bad targets on the hub)
	Ignored int64 // events of types Accept refused
}
