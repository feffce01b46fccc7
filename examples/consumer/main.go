// Command consumer is a complete small PgQ consumer: it prints every event
// of a queue as a JSON line, and shows the consumer package's settings as
// flags. Stop it with Ctrl-C (SIGINT) or SIGTERM: the batch in progress is
// finished or left for the next run, never half-done.
//
//	DATABASE_URL=postgres://... go run ./examples/consumer -queue orders -name printer -register
//
// Ticks come from a ticker (pgqctl ticker, the ticker package, or pgqd);
// with -retry-type T events of type T are sent to the retry queue instead
// (to see retries in action). Admin: -unregister, -rewind TICK, -info.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/pgq"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		dsn        = flag.String("db", os.Getenv("DATABASE_URL"), "database URL (default $DATABASE_URL)")
		queue      = flag.String("queue", "", "queue to consume (queue_name)")
		name       = flag.String("name", "", "consumer name (consumer_name)")
		register   = flag.Bool("register", false, "register the consumer on start if needed (--register)")
		unregister = flag.Bool("unregister", false, "unregister the consumer and exit (--unregister)")
		rewind     = flag.Int64("rewind", 0, "reposition the consumer at this tick id and exit (--rewind)")
		info       = flag.Bool("info", false, "print the consumer's position and exit")
		lazy       = flag.Int("lazy-fetch", consumer.DefaultLazyFetch, "events per cursor fetch; 0 reads whole batches (pgq_lazy_fetch)")
		minCount   = flag.Int("min-count", 0, "wait for batches of at least this many events (pgq_batch_collect_events)")
		minIval    = flag.Duration("min-interval", 0, "wait for batches spanning at least this long (pgq_batch_collect_interval)")
		keepLag    = flag.Duration("keep-lag", 0, "stay this far behind the queue head (pgq_keep_lag)")
		extra1     = flag.String("extra1", "", "comma-separated ev_extra1 values to receive, server-side (table_filter)")
		poll       = flag.Duration("poll", consumer.DefaultPollInterval, "longest wait between looks for a batch (loop_delay)")
		backoffMax = flag.Duration("backoff-max", consumer.DefaultBackoffMax, "longest pause after an error (exception_sleep)")
		retryType  = flag.String("retry-type", "", "send events of this ev_type to the retry queue")
		retryDelay = flag.Duration("retry-delay", time.Minute, "delay for -retry-type events")
		verbose    = flag.Bool("v", false, "log every batch")
	)
	flag.Parse()
	if *dsn == "" {
		return errors.New("set DATABASE_URL or -db")
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	pool, err := pgxpool.New(ctx, *dsn)
	if err != nil {
		return err
	}
	defer pool.Close()

	cfg := consumer.Config{
		Queue:        *queue,
		Name:         *name,
		LazyFetch:    *lazy,
		NoLazyFetch:  *lazy == 0,
		MinCount:     *minCount,
		MinInterval:  *minIval,
		KeepLag:      *keepLag,
		PollInterval: *poll,
		ErrorBackoff: consumer.Backoff{Max: *backoffMax},
		Register:     *register,
		Logger:       logger,
	}
	if *extra1 != "" {
		cfg.Filter = pgq.In(pgq.FieldExtra1, strings.Split(*extra1, ",")...)
	}
	cfg.Hooks.OnBatch = func(s consumer.BatchStats) {
		if s.Events > 0 {
			logger.Info("batch", "batch_id", s.BatchID, "events", s.Events, "retries", s.Retries,
				"duration", s.Duration, "lag", s.Lag, "idle", s.Idle)
		}
	}

	out := json.NewEncoder(os.Stdout)
	h := consumer.Events(consumer.EventHandlerFunc(func(ctx context.Context, ev *pgq.Event) error {
		if *retryType != "" && ev.Type.String == *retryType {
			ev.TagRetry(*retryDelay)
		}
		return out.Encode(line{
			ID: ev.ID, Time: ev.Time, TxID: ev.TxID, Retry: ev.Retry,
			Type: str(ev.Type), Data: str(ev.Data),
			Extra1: str(ev.Extra1), Extra2: str(ev.Extra2), Extra3: str(ev.Extra3), Extra4: str(ev.Extra4),
		})
	}))
	c, err := consumer.New(pool, cfg, h)
	if err != nil {
		return err
	}

	switch {
	case *unregister:
		removed, err := c.Unregister(ctx)
		if err == nil && !removed {
			logger.Info("consumer was not registered")
		}
		return err
	case *rewind != 0:
		return c.RegisterAt(ctx, *rewind)
	case *info:
		ci, err := c.Info(ctx)
		if err != nil {
			return err
		}
		fmt.Printf("queue %s consumer %s: lag %s, last seen %s, last tick %d, open batch %d, pending %d\n",
			ci.Queue, ci.Name, ci.Lag.Round(time.Millisecond), ci.LastSeen.Round(time.Millisecond),
			ci.LastTick, ci.CurrentBatch, ci.PendingEvents)
		return nil
	}
	logger.Info("consuming", "queue", cfg.Queue, "consumer", cfg.Name)
	return c.Run(ctx)
}

// line is one event as printed.
type line struct {
	ID     int64     `json:"id"`
	Time   time.Time `json:"time"`
	TxID   int64     `json:"txid"`
	Retry  int32     `json:"retry,omitempty"`
	Type   *string   `json:"type"`
	Data   *string   `json:"data"`
	Extra1 *string   `json:"extra1,omitempty"`
	Extra2 *string   `json:"extra2,omitempty"`
	Extra3 *string   `json:"extra3,omitempty"`
	Extra4 *string   `json:"extra4,omitempty"`
}

func str(t pgq.Text) *string {
	if !t.Valid {
		return nil
	}
	return &t.String
}
