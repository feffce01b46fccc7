// Command quickstart shows PgQ end to end with the pgq package: create a
// queue, register a consumer, produce events in a transaction, tick, and
// consume batches until the queue is drained. (examples/onebox runs a
// ticker and a consumer loop instead, with a low-latency queue.)
//
//	DATABASE_URL=postgres://... go run ./examples/quickstart
//
// The database needs the pgq extension (create extension pgq).
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/pgq"
)

func main() {
	if err := run(context.Background()); err != nil {
		slog.Error("quickstart failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		return err
	}
	defer pool.Close()
	const queue, consumer = "quickstart", "printer"

	// 1. A queue and a consumer. Register before producing: a consumer
	//    sees only events ticked after its registration.
	if _, err := pgq.CreateQueue(ctx, pool, queue); err != nil {
		return err
	}
	if _, err := pgq.RegisterConsumer(ctx, pool, queue, consumer); err != nil {
		return err
	}

	// 2. Produce in a transaction: the events exist iff it commits.
	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	for i := 1; i <= 5; i++ {
		if _, err := pgq.InsertEvent(ctx, tx, queue, pgq.NewEvent("greeting", fmt.Sprintf("hello #%d", i))); err != nil {
			return err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	fmt.Println("produced 5 events")

	// 3. Tick: normally the ticker daemon (pgqctl ticker) does this.
	if _, err := pgq.Tick(ctx, pool, queue); err != nil {
		return err
	}

	// 4. Consume: batch by batch until none is ready.
	for {
		info, err := pgq.NextBatch(ctx, pool, queue, consumer)
		if err != nil {
			return err
		}
		if info == nil {
			break
		}
		batch := pgq.NewBatch(pool, queue, consumer, *info, pgq.ReadOptions{FetchSize: 300})
		for ev, err := range batch.Events(ctx) {
			if err != nil {
				return err
			}
			fmt.Printf("batch %d (tick %d→%d): event %d %s %q\n", info.ID, info.PrevTickID, info.TickID,
				ev.ID, ev.Type.String, ev.Data.String)
		}
		tx, err := pool.Begin(ctx)
		if err != nil {
			return err
		}
		if _, err := batch.Finish(ctx, tx); err != nil {
			tx.Rollback(ctx)
			return err
		}
		if err := tx.Commit(ctx); err != nil {
			return err
		}
	}
	ci, err := pgq.GetConsumerInfo(ctx, pool, queue, consumer)
	if err != nil {
		return err
	}
	fmt.Printf("consumed; consumer %s lag %s\n", ci.Name, ci.Lag.Round(time.Millisecond))
	return nil
}
