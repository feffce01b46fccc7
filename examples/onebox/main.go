// Command onebox runs a producer, a ticker and a consumer in one process:
// PgQ end to end with nothing else running. The queue is tuned for low
// latency, and each event is printed as the consumer gets it, with how long
// after it was produced that was. It stops after -n events.
//
//	DATABASE_URL=postgres://... go run ./examples/onebox -n 20
//
// The database needs the pgq extension (create extension pgq).
//
// Low latency needs two settings together: the queue's ticker_max_lag
// (pgq.SetQueueConfig), below which pgq.ticker() does not tick a queue
// that has new events, and the ticker's period (ticker.Config.TickPeriod),
// how often pgq.ticker() runs at all. With the defaults (3 s and 1 s) an
// event waits up to about 3 s; here both are 50 ms. The ticker also sends
// a NOTIFY after each tick, so the consumer starts on the batch at once
// instead of at its next poll.
//
// If another ticker (pgqctl ticker, another onebox) already serves the
// database, this one stands by (one ticker per database, an advisory
// lock) and the other one's period applies.
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
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/ticker"
)

func main() {
	var o options
	flag.IntVar(&o.N, "n", 10, "stop after this many events")
	flag.DurationVar(&o.Every, "every", 100*time.Millisecond, "produce one event this often")
	flag.DurationVar(&o.Lag, "lag", 50*time.Millisecond, "the queue's ticker_max_lag and the ticker's period")
	flag.StringVar(&o.Queue, "queue", "onebox", "queue name")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv("DATABASE_URL"), o, os.Stdout); err != nil {
		slog.Error("onebox failed", "err", err)
		os.Exit(1)
	}
}

type options struct {
	N     int           // events to produce and consume
	Every time.Duration // producer interval
	Lag   time.Duration // ticker_max_lag and ticker period
	Queue string
}

// message is an event's payload, JSON in ev_data.
type message struct {
	Seq  int       `json:"seq"`
	Sent time.Time `json:"sent"` // just before the producer's commit
}

func run(ctx context.Context, dsn string, o options, out io.Writer) error {
	if o.N < 1 {
		return errors.New("-n must be at least 1")
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return err
	}
	defer pool.Close()

	// The queue (CreateQueue makes its first tick), tuned for low latency:
	// pgq.ticker() ticks it once an event is o.Lag old.
	if _, err := pgq.CreateQueue(ctx, pool, o.Queue); err != nil {
		return err
	}
	if err := pgq.SetQueueConfig(ctx, pool, o.Queue, pgq.QueueConfig{TickerMaxLag: &o.Lag}); err != nil {
		return err
	}

	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// The consumer: a typed JSON handler that stops the run after o.N
	// events (the batch is still finished: the handler returns nil).
	seen := 0
	c, err := consumer.New(pool, consumer.Config{Queue: o.Queue, Name: "onebox"},
		consumer.JSON(func(ctx context.Context, ev *pgq.Event, m message) error {
			seen++
			fmt.Fprintf(out, "consumed %d/%d: event %d seq %d, %s after it was produced\n",
				seen, o.N, ev.ID, m.Seq, time.Since(m.Sent).Round(time.Millisecond))
			if seen == o.N {
				cancel()
			}
			return nil
		}))
	if err != nil {
		return err
	}
	// Register before producing: a consumer sees only events ticked after
	// its registration. Unregister on the way out, so that a stopped demo
	// does not keep the queue's events from being rotated away.
	if _, err := c.Register(ctx); err != nil {
		return err
	}
	defer func() { _, _ = c.Unregister(context.WithoutCancel(ctx)) }()

	// The ticker: pgq.ticker() every o.Lag on this database, NOTIFY after
	// each tick.
	tk, err := ticker.New(ticker.Config{
		Servers:    []ticker.Server{{ConnString: dsn}},
		TickPeriod: o.Lag,
	})
	if err != nil {
		return err
	}

	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	fail := func(err error) {
		if err == nil {
			return
		}
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
		cancel()
	}
	wg.Go(func() { fail(tk.Run(ctx)) })
	wg.Go(func() { fail(c.Run(ctx)) })
	wg.Go(func() { fail(produce(ctx, pool, o)) })
	wg.Wait()

	if firstErr != nil {
		return firstErr
	}
	if seen < o.N {
		if parent.Err() != nil { // interrupted
			fmt.Fprintf(out, "stopped after %d of %d events\n", seen, o.N)
			return nil
		}
		return fmt.Errorf("stopped after %d of %d events", seen, o.N)
	}
	return nil
}

// produce inserts o.N events, one every o.Every, each in its own
// transaction: an event exists iff its transaction commits.
func produce(ctx context.Context, pool *pgxpool.Pool, o options) error {
	t := time.NewTicker(o.Every)
	defer t.Stop()
	for seq := 1; seq <= o.N; seq++ {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			ev, err := pgq.JSONEvent("tick-tock", message{Seq: seq, Sent: time.Now()})
			if err != nil {
				return err
			}
			_, err = pgq.InsertEvent(ctx, tx, o.Queue, ev)
			return err
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil // stopping
			}
			return fmt.Errorf("produce event %d: %w", seq, err)
		}
	}
	return nil
}
