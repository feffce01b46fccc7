package consumer

import (
	"errors"
	"fmt"
	"github.com/jackc/pgx/v5"
	"log/slog"
	"time"

	"github.com/pgq-go/pgq/internal/backoff"
	"github.com/pgq-go/pgq/internal/logging"

	"github.com/pgq-go/pgq/pgq"
)

// Defaults of Config fields left zero.
const (
	DefaultLazyFetch    = 300              // pgq_lazy_fetch
	DefaultPollInterval = time.Second      // loop_delay
	DefaultBackoffStart = time.Second      // first pause after an error
	DefaultBackoffMax   = 20 * time.Second // exception_sleep
	DefaultStatsPeriod  = 5 * time.Minute  // keepalive_stats
)

// Config configures a Consumer. Zero fields take the documented defaults.
type Config struct {
	// Queue is the queue to read (Skytools queue_name). Required.
	Queue string
	// Name is the consumer name registered on the queue (Skytools
	// consumer_name, which defaults to the job name there). Required.
	Name string

	// LazyFetch is the events per fetch when a batch is read through a
	// cursor (Skytools pgq_lazy_fetch). Default 300. A batch is normally
	// read with one prepared statement whose rows are yielded as they
	// arrive, one event in memory at a time; the cursor serves a handler
	// that buffers fetches (pgq.Batch.BufferFetches: LazyFetch events held
	// at a time, the connection free between fetches) and a batch whose
	// read could not be planned (its first fetch then covers the batch as
	// the event sequence estimates it). Set NoLazyFetch to load each batch
	// with a single query (pgq_lazy_fetch = 0).
	LazyFetch int
	// NoLazyFetch reads each batch with one query instead of a cursor
	// (pgq_lazy_fetch = 0). The events are still yielded one by one.
	NoLazyFetch bool

	// MinCount makes PgQ wait until a batch holds at least this many events
	// (pgq_batch_collect_events; an estimate from the event sequence).
	// Default 0: off.
	MinCount int
	// MinInterval makes PgQ wait until a batch spans at least this long
	// (pgq_batch_collect_interval). Default 0: off.
	MinInterval time.Duration
	// KeepLag keeps the consumer at least this far behind the queue head:
	// ticks younger than KeepLag are not consumed yet (pgq_keep_lag).
	// Default 0: off.
	KeepLag time.Duration

	// Filter selects events server-side (Skytools table_filter is
	// pgq.TableIn(tables...), which schema-qualifies bare names like
	// Skytools; and more); events it rejects are never sent to this process
	// and count as done. Default: every event.
	Filter pgq.Filter

	// PollInterval is the longest wait between two looks for a batch when
	// the queue is drained (Skytools loop_delay). Tick notifications from
	// the ticker package (pgq.NotifyChannel) end the wait earlier. Default 1s.
	PollInterval time.Duration
	// DisableListen stops the consumer from listening for tick
	// notifications; it then only polls every PollInterval. Default false.
	DisableListen bool
	// ListenConfig is where the LISTEN connection goes. Default: the
	// pool's connection settings. Set it when the pool goes through a
	// pooler in transaction pooling (PgBouncer pool_mode = transaction),
	// which cannot carry LISTEN: point it at PostgreSQL itself. Consumers
	// sharing a pool share one listener, started with the first one's
	// ListenConfig.
	ListenConfig *pgx.ConnConfig

	// Bell makes the consumer look for batches only when a producer rings
	// it (see Bell), for a queue many filtered consumers share. Default
	// nil: the consumer looks on every tick.
	Bell *Bell

	// ErrorBackoff is the pause after a failed batch or database error; it
	// grows exponentially and resets after a success (Skytools
	// exception_sleep, which is a fixed 20 s). Default 1s doubling up to 20s.
	ErrorBackoff Backoff

	// Register registers the consumer on the queue when Run starts, if it
	// is not registered yet (Skytools --register, done by hand there). A
	// missing queue still ends Run with pgq.ErrQueueNotFound, and a
	// consumer unregistered while Run goes on is not registered again.
	// Default false: Run fails with pgq.ErrNotRegistered.
	Register bool

	// Logger receives the consumer's logs (keys: queue, consumer, batch_id,
	// events, duration, err). Default: slog.Default(), with records below
	// Warn discarded.
	Logger *slog.Logger

	// Hooks observe the consumer (Skytools stats: count, duration, idle,
	// retry-events). Default: none.
	Hooks Hooks

	// StatsPeriod is how often the consumer logs a stats line at info
	// level, as Skytools consumers do (keepalive_stats): "stats" with the
	// period's count (events), batches, duration (time spent in batches),
	// idle (time since the last batch with events), retry-events and the
	// last batch's lag. An idle consumer logs it too, so the log shows it
	// is alive. Default 5 minutes (keepalive_stats' 300); negative: never.
	StatsPeriod time.Duration
}

// Backoff is an exponential, capped pause: Initial, then doubling (or times
// Multiplier) up to Max.
type Backoff struct {
	Initial    time.Duration // default 1s
	Max        time.Duration // default 20s (Skytools exception_sleep)
	Multiplier float64       // default 2
}

// Delay returns the pause before attempt n (n >= 1 is the first retry).
func (b Backoff) Delay(n int) time.Duration { return backoff.Policy(b).Delay(n) }

func (b Backoff) withDefaults() Backoff { return Backoff(backoff.Policy(b).WithDefaults()) }

func (c Config) withDefaults() Config {
	if c.LazyFetch == 0 && !c.NoLazyFetch {
		c.LazyFetch = DefaultLazyFetch
	}
	if c.NoLazyFetch {
		c.LazyFetch = 0
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.StatsPeriod == 0 {
		c.StatsPeriod = DefaultStatsPeriod
	}
	c.ErrorBackoff = c.ErrorBackoff.withDefaults()
	c.Bell = c.Bell.withDefaults()
	c.Logger = logging.Default(c.Logger)
	return c
}

func (c Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if err := pgq.ValidateName("queue", c.Queue); err != nil {
		bad("consumer: Config.Queue: %w", err)
	}
	if err := pgq.ValidateName("consumer", c.Name); err != nil {
		bad("consumer: Config.Name: %w", err)
	}
	if c.LazyFetch < 0 {
		bad("consumer: Config.LazyFetch %d is negative (use NoLazyFetch to read whole batches)", c.LazyFetch)
	}
	if c.MinCount < 0 {
		bad("consumer: Config.MinCount %d is negative", c.MinCount)
	}
	if c.MinInterval < 0 {
		bad("consumer: Config.MinInterval %v is negative", c.MinInterval)
	}
	if c.KeepLag < 0 {
		bad("consumer: Config.KeepLag %v is negative", c.KeepLag)
	}
	if c.PollInterval < 0 {
		bad("consumer: Config.PollInterval %v is negative", c.PollInterval)
	}
	errs = append(errs, c.Bell.validate(c)...)
	if err := c.Filter.Err(); err != nil {
		bad("consumer: Config.Filter: %w", err)
	}
	b := c.ErrorBackoff
	if b.Initial < 0 || b.Max < 0 {
		bad("consumer: Config.ErrorBackoff: negative duration (%v, %v)", b.Initial, b.Max)
	} else if b.Max > 0 && b.Initial > b.Max {
		bad("consumer: Config.ErrorBackoff: Initial %v exceeds Max %v", b.Initial, b.Max)
	}
	if b.Multiplier != 0 && b.Multiplier < 1 {
		bad("consumer: Config.ErrorBackoff.Multiplier %v is below 1", b.Multiplier)
	}
	return errors.Join(errs...)
}
