package pgq_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/pgq"
)

// connect opens a pool on DATABASE_URL, a database with the pgq extension
// (in these examples: one on the test cluster).
func connect(ctx context.Context) *pgxpool.Pool {
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	return pool
}

// consumeOnce opens the consumer's next batch, prints its events and
// finishes it. It reports false when no batch was ready.
func consumeOnce(ctx context.Context, pool *pgxpool.Pool, queue, consumer string) bool {
	info, err := pgq.NextBatch(ctx, pool, queue, consumer)
	if err != nil {
		log.Fatal(err)
	}
	if info == nil {
		return false
	}
	b := pgq.NewBatch(pool, queue, consumer, *info, pgq.ReadOptions{})
	for ev, err := range b.Events(ctx) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s %s (retry %d)\n", ev.Type.String, ev.Data.String, ev.Retry)
	}
	if _, err := pgq.FinishBatch(ctx, pool, info.ID); err != nil {
		log.Fatal(err)
	}
	return true
}

// The whole life of an event with the SQL API: a queue and a consumer,
// one event inserted in a transaction, a tick, a batch read and finished.
// (The consumer package runs this loop for you.)
func Example() {
	ctx := context.Background()
	pool := connect(ctx)
	defer pool.Close()

	// CreateQueue makes the queue's first tick; register before producing:
	// a consumer sees only events ticked after its registration.
	if _, err := pgq.CreateQueue(ctx, pool, "greetings"); err != nil {
		log.Fatal(err)
	}
	if _, err := pgq.RegisterConsumer(ctx, pool, "greetings", "printer"); err != nil {
		log.Fatal(err)
	}

	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		_, err := pgq.InsertEvent(ctx, tx, "greetings", pgq.NewEvent("hello", "world"))
		return err // the event exists iff this transaction commits
	})
	if err != nil {
		log.Fatal(err)
	}

	// A ticker (the ticker package, pgqctl ticker, pgqd) makes the ticks;
	// here we force one.
	if _, err := pgq.Tick(ctx, pool, "greetings"); err != nil {
		log.Fatal(err)
	}
	consumeOnce(ctx, pool, "greetings", "printer")
	fmt.Println("another batch:", consumeOnce(ctx, pool, "greetings", "printer"))
	// Output:
	// hello world (retry 0)
	// another batch: false
}

// A queue tuned for low latency: ticked as soon as an event is 50 ms old
// (by a ticker whose period is as short, see the package documentation).
func ExampleSetQueueConfig() {
	ctx := context.Background()
	pool := connect(ctx)
	defer pool.Close()
	if _, err := pgq.CreateQueue(ctx, pool, "fast"); err != nil {
		log.Fatal(err)
	}
	err := pgq.SetQueueConfig(ctx, pool, "fast", pgq.QueueConfig{
		TickerMaxLag:     pgq.Ptr(50 * time.Millisecond), // ticker_max_lag, default 3 s
		TickerIdlePeriod: pgq.Ptr(10 * time.Second),      // ticker_idle_period, default 1 min
	})
	if err != nil {
		log.Fatal(err)
	}
	qi, err := pgq.GetQueueInfo(ctx, pool, "fast")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("ticker_max_lag:", qi.TickerMaxLag)
	fmt.Println("ticker_idle_period:", qi.TickerIdlePeriod)
	fmt.Println("ticked by CreateQueue:", qi.LastTickID > 0)
	// Output:
	// ticker_max_lag: 50ms
	// ticker_idle_period: 10s
	// ticked by CreateQueue: true
}

// One event in the caller's transaction, with its id: rolled back, it
// never existed.
func ExampleInsertEvent() {
	ctx := context.Background()
	pool := connect(ctx)
	defer pool.Close()
	if _, err := pgq.CreateQueue(ctx, pool, "orders"); err != nil {
		log.Fatal(err)
	}
	if _, err := pgq.RegisterConsumer(ctx, pool, "orders", "billing"); err != nil {
		log.Fatal(err)
	}

	tx, err := pool.Begin(ctx)
	if err != nil {
		log.Fatal(err)
	}
	ev, err := pgq.JSONEvent("order.created", map[string]any{"id": 42, "total": "9.90"})
	if err != nil {
		log.Fatal(err)
	}
	id, err := pgq.InsertEvent(ctx, tx, "orders", ev)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("got an id:", id > 0)
	if err := tx.Commit(ctx); err != nil {
		log.Fatal(err)
	}

	tx, err = pool.Begin(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := pgq.InsertEvent(ctx, tx, "orders", pgq.NewEvent("order.created", `{"id":43}`)); err != nil {
		log.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil { // this one never existed
		log.Fatal(err)
	}

	if _, err := pgq.Tick(ctx, pool, "orders"); err != nil {
		log.Fatal(err)
	}
	consumeOnce(ctx, pool, "orders", "billing")
	// Output:
	// got an id: true
	// order.created {"id":42,"total":"9.90"} (retry 0)
}

// Many events with one COPY, from a slice or from any iterator (huge
// loads never sit in memory).
func ExampleInsertEvents() {
	ctx := context.Background()
	pool := connect(ctx)
	defer pool.Close()
	if _, err := pgq.CreateQueue(ctx, pool, "bulk"); err != nil {
		log.Fatal(err)
	}
	if _, err := pgq.RegisterConsumer(ctx, pool, "bulk", "loader"); err != nil {
		log.Fatal(err)
	}

	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		// A slice.
		evs := []pgq.EventData{pgq.NewEvent("row", "a"), pgq.NewEvent("row", "b")}
		n, err := pgq.InsertEvents(ctx, tx, "bulk", slices.Values(evs))
		if err != nil {
			return err
		}
		fmt.Println("from a slice:", n)
		// An iterator producing events on demand.
		n, err = pgq.InsertEvents(ctx, tx, "bulk", func(yield func(pgq.EventData) bool) {
			for i := range 1000 {
				if !yield(pgq.NewEvent("gen", fmt.Sprint(i))) {
					return
				}
			}
		})
		fmt.Println("from an iterator:", n)
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// from a slice: 2
	// from an iterator: 1000
}

// Ticks on demand: nothing is visible before a tick after the commit.
// Tick is ForceTick and Ticker in two transactions; a ticker process runs
// Ticker (pgq.ticker()) periodically, which ticks a queue only when its
// thresholds are met unless ForceTick asked for one.
func ExampleTick() {
	ctx := context.Background()
	pool := connect(ctx)
	defer pool.Close()
	if _, err := pgq.CreateQueue(ctx, pool, "ticks"); err != nil {
		log.Fatal(err)
	}
	if _, err := pgq.RegisterConsumer(ctx, pool, "ticks", "watcher"); err != nil {
		log.Fatal(err)
	}
	if _, err := pgq.InsertEvent(ctx, pool, "ticks", pgq.NewEvent("ping", "1")); err != nil {
		log.Fatal(err)
	}
	info, err := pgq.NextBatch(ctx, pool, "ticks", "watcher")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("batch before a tick:", info != nil)

	// The two steps of Tick, spelled out.
	if _, err := pgq.ForceTick(ctx, pool, "ticks"); err != nil {
		log.Fatal(err)
	}
	if _, err := pgq.Ticker(ctx, pool); err != nil { // a separate transaction
		log.Fatal(err)
	}
	fmt.Println("batch after a tick:", consumeOnce(ctx, pool, "ticks", "watcher"))
	// Output:
	// batch before a tick: false
	// ping 1 (retry 0)
	// batch after a tick: true
}

// Reading a batch: the events stream through a cursor, FetchSize at a
// time; the same batch comes back from NextBatch until it is finished.
func ExampleBatch_Events() {
	ctx := context.Background()
	pool := connect(ctx)
	defer pool.Close()
	if _, err := pgq.CreateQueue(ctx, pool, "stream"); err != nil {
		log.Fatal(err)
	}
	if _, err := pgq.RegisterConsumer(ctx, pool, "stream", "reader"); err != nil {
		log.Fatal(err)
	}
	evs := []pgq.EventData{pgq.NewEvent("n", "1"), pgq.NewEvent("n", "2"), pgq.NewEvent("n", "3")}
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		_, err := pgq.InsertEvents(ctx, tx, "stream", slices.Values(evs))
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := pgq.Tick(ctx, pool, "stream"); err != nil {
		log.Fatal(err)
	}

	info, err := pgq.NextBatch(ctx, pool, "stream", "reader")
	if err != nil {
		log.Fatal(err)
	}
	again, err := pgq.NextBatch(ctx, pool, "stream", "reader")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("same batch until finished:", info.ID == again.ID)

	// A pool begins (and ends) a transaction for the cursor itself.
	b := pgq.NewBatch(pool, "stream", "reader", *info, pgq.ReadOptions{FetchSize: 2})
	for ev, err := range b.Events(ctx) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(ev.Type.String, ev.Data.String)
	}
	if _, err := pgq.FinishBatch(ctx, pool, info.ID); err != nil {
		log.Fatal(err)
	}
	// Output:
	// same batch until finished: true
	// n 1
	// n 2
	// n 3
}

// Retrying: a tagged event goes to the retry queue when the batch is
// finished and comes back to this consumer only, with Retry incremented,
// once it is due and the retry events are moved back (the ticker does that
// every retry period).
func ExampleEvent_TagRetry() {
	ctx := context.Background()
	pool := connect(ctx)
	defer pool.Close()
	if _, err := pgq.CreateQueue(ctx, pool, "payments"); err != nil {
		log.Fatal(err)
	}
	if _, err := pgq.RegisterConsumer(ctx, pool, "payments", "settler"); err != nil {
		log.Fatal(err)
	}
	evs := []pgq.EventData{pgq.NewEvent("pay", "10.00"), pgq.NewEvent("pay", "25.00")}
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		_, err := pgq.InsertEvents(ctx, tx, "payments", slices.Values(evs))
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := pgq.Tick(ctx, pool, "payments"); err != nil {
		log.Fatal(err)
	}

	info, err := pgq.NextBatch(ctx, pool, "payments", "settler")
	if err != nil {
		log.Fatal(err)
	}
	b := pgq.NewBatch(pool, "payments", "settler", *info, pgq.ReadOptions{})
	for ev, err := range b.Events(ctx) {
		if err != nil {
			log.Fatal(err)
		}
		if ev.Data.String == "25.00" {
			ev.TagRetry(0) // due at once; in real code a delay such as time.Minute
		}
	}
	// Finish sends the retries and finish_batch in one round trip.
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		_, err := b.Finish(ctx, tx)
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("retried:", b.RetryCount())

	// What the ticker does every retry period, then a tick.
	if _, err := pgq.MaintRetryEvents(ctx, pool); err != nil {
		log.Fatal(err)
	}
	if _, err := pgq.Tick(ctx, pool, "payments"); err != nil {
		log.Fatal(err)
	}
	consumeOnce(ctx, pool, "payments", "settler")
	// Output:
	// retried: 1
	// pay 25.00 (retry 1)
}

// Finishing a batch in the transaction that applied its work: the work and
// the consumer's new position commit together.
func ExampleBatch_Finish() {
	ctx := context.Background()
	pool := connect(ctx)
	defer pool.Close()
	if _, err := pgq.CreateQueue(ctx, pool, "audit"); err != nil {
		log.Fatal(err)
	}
	if _, err := pgq.RegisterConsumer(ctx, pool, "audit", "archiver"); err != nil {
		log.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "create table if not exists audit_log (ev_id bigint primary key, what text)"); err != nil {
		log.Fatal(err)
	}
	if _, err := pgq.InsertEvent(ctx, pool, "audit", pgq.NewEvent("login", "alice")); err != nil {
		log.Fatal(err)
	}
	if _, err := pgq.Tick(ctx, pool, "audit"); err != nil {
		log.Fatal(err)
	}

	info, err := pgq.NextBatch(ctx, pool, "audit", "archiver")
	if err != nil {
		log.Fatal(err)
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		b := pgq.NewBatch(tx, "audit", "archiver", *info, pgq.ReadOptions{})
		evs, err := b.All(ctx)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if _, err := tx.Exec(ctx, "insert into audit_log values ($1, $2)", ev.ID, ev.Type.String+" "+ev.Data.String); err != nil {
				return err
			}
		}
		finished, err := b.Finish(ctx, tx)
		fmt.Println("finished:", finished)
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
	var what string
	if err := pool.QueryRow(ctx, "select what from audit_log").Scan(&what); err != nil {
		log.Fatal(err)
	}
	fmt.Println("applied:", what)
	// Output:
	// finished: true
	// applied: login alice
}
