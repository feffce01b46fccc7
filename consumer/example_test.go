package consumer_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/pgq"
)

// produce commits events on queue in one transaction, then ticks (in
// production the ticker package, pgqctl ticker or pgqd makes the ticks).
func produce(ctx context.Context, pool *pgxpool.Pool, queue string, evs ...pgq.EventData) {
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		_, err := pgq.InsertEvents(ctx, tx, queue, slices.Values(evs)) // one COPY
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := pgq.Tick(ctx, pool, queue); err != nil {
		log.Fatal(err)
	}
}

// A consumer with a per-event handler. It stops (cleanly: the batch is
// finished) when the handler cancels the context after the last order.
func Example() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if _, err := pgq.CreateQueue(ctx, pool, "orders"); err != nil {
		log.Fatal(err)
	}

	c, err := consumer.New(pool, consumer.Config{Queue: "orders", Name: "mailer"},
		consumer.Events(consumer.EventHandlerFunc(func(ctx context.Context, ev *pgq.Event) error {
			fmt.Println(ev.Type.String, ev.Data.String)
			if ev.Data.String == "order 3" {
				cancel() // stop after this batch
			}
			return nil // done (the default)
		})))
	if err != nil {
		log.Fatal(err)
	}
	// Register before producing: a consumer sees only events ticked later.
	if _, err := c.Register(ctx); err != nil {
		log.Fatal(err)
	}
	produce(ctx, pool, "orders",
		pgq.NewEvent("new", "order 1"),
		pgq.NewEvent("new", "order 2"),
		pgq.NewEvent("paid", "order 3"))

	if err := c.Run(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("stopped")
	// Output:
	// new order 1
	// new order 2
	// paid order 3
	// stopped
}

// A batch handler that sends some events to the retry queue, and a hook
// reporting per-batch stats.
func ExampleBatchHandlerFunc() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if _, err := pgq.CreateQueue(ctx, pool, "payments"); err != nil {
		log.Fatal(err)
	}

	h := consumer.BatchHandlerFunc(func(ctx context.Context, b *pgq.Batch) error {
		for ev, err := range b.Events(ctx) { // streamed, LazyFetch at a time
			if err != nil {
				return err
			}
			if ev.Extra1.String == "gateway-down" {
				ev.TagRetry(time.Minute) // back to this consumer in a minute, ev.Retry+1
			}
		}
		return nil
	})
	cfg := consumer.Config{Queue: "payments", Name: "settler"}
	cfg.Hooks.OnBatch = func(s consumer.BatchStats) {
		fmt.Printf("batch: %d events, %d retried, attempt %d\n", s.Events, s.Retries, s.Attempts)
		cancel()
	}
	c, err := consumer.New(pool, cfg, h)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.Register(ctx); err != nil {
		log.Fatal(err)
	}
	produce(ctx, pool, "payments",
		pgq.NewEvent("pay", "10.00"),
		pgq.EventData{Type: pgq.T("pay"), Data: pgq.T("25.00"), Extra1: pgq.T("gateway-down")},
		pgq.NewEvent("pay", "7.50"))
	if err := c.Run(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// batch: 3 events, 1 retried, attempt 1
}

// A server-side filter: only the events addressed to this node leave the
// database (Skytools' table_filter, with typed values).
func ExampleConfig_filter() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if _, err := pgq.CreateQueue(ctx, pool, "pull_queue"); err != nil {
		log.Fatal(err)
	}
	cfg := consumer.Config{
		Queue:  "pull_queue",
		Name:   "node_b",
		Filter: pgq.In(pgq.FieldExtra1, "node_b"),
	}
	cfg.Hooks.OnBatch = func(consumer.BatchStats) { cancel() }
	c, err := consumer.New(pool, cfg, consumer.Events(consumer.EventHandlerFunc(
		func(ctx context.Context, ev *pgq.Event) error {
			fmt.Println(ev.Extra1.String, ev.Data.String)
			return nil
		})))
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.Register(ctx); err != nil {
		log.Fatal(err)
	}
	produce(ctx, pool, "pull_queue",
		pgq.EventData{Type: pgq.T("copy"), Extra1: pgq.T("node_a"), Data: pgq.T("row 1")},
		pgq.EventData{Type: pgq.T("copy"), Extra1: pgq.T("node_b"), Data: pgq.T("row 2")},
		pgq.EventData{Type: pgq.T("copy"), Extra1: pgq.T("node_c"), Data: pgq.T("row 3")},
		pgq.EventData{Type: pgq.T("copy"), Extra1: pgq.T("node_b"), Data: pgq.T("row 4")})
	if err := c.Run(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// node_b row 2
	// node_b row 4
}

// A typed JSON handler: each event's ev_data is decoded into an Order
// before the function sees it. Producers write such events with
// pgq.JSONEvent. An event that does not decode fails the batch (it is
// retried, not skipped): see JSON.
func ExampleJSON() {
	type Order struct {
		ID    int     `json:"id"`
		Total float64 `json:"total"`
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if _, err := pgq.CreateQueue(ctx, pool, "json_orders"); err != nil {
		log.Fatal(err)
	}

	cfg := consumer.Config{Queue: "json_orders", Name: "invoicer"}
	cfg.Hooks.OnBatch = func(s consumer.BatchStats) {
		if s.Events > 0 {
			cancel() // stop after the batch with our events
		}
	}
	c, err := consumer.New(pool, cfg, consumer.JSON(func(ctx context.Context, ev *pgq.Event, o Order) error {
		fmt.Printf("%s: order %d, total %.2f\n", ev.Type.String, o.ID, o.Total)
		return nil
	}))
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.Register(ctx); err != nil {
		log.Fatal(err)
	}
	var evs []pgq.EventData
	for _, o := range []Order{{ID: 1, Total: 9.9}, {ID: 2, Total: 120}} {
		ev, err := pgq.JSONEvent("order.created", o)
		if err != nil {
			log.Fatal(err)
		}
		evs = append(evs, ev)
	}
	produce(ctx, pool, "json_orders", evs...)

	if err := c.Run(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// order.created: order 1, total 9.90
	// order.created: order 2, total 120.00
}
