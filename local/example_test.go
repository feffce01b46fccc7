package local_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/local"
	"github.com/pgq-go/pgq/pgq"
)

// A local consumer that hands each batch of a mail queue to a mailer and
// keeps its position in a file, like a Skytools simple_local_consumer job
// with local_tracking_file = ~/state/mailer.tick.
func ExampleConsumer() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if _, err := pgq.CreateQueue(ctx, pool, "mail"); err != nil {
		log.Fatal(err)
	}
	// In your program: a directory that survives restarts, such as ~/state.
	state, err := os.MkdirTemp("", "state")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(state)

	// The whole batch at once: if the process dies before its tick is
	// saved, the batch comes again from its first event.
	h := local.HandlerFunc(func(ctx context.Context, b *pgq.Batch) error {
		evs, err := b.All(ctx)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			fmt.Println("send mail to", ev.Data.String)
		}
		return nil
	})
	cfg := local.Config{
		Consumer:     consumer.Config{Queue: "mail", Name: "mailer"},
		TrackingFile: filepath.Join(state, "mailer.tick"),
	}
	cfg.Consumer.Hooks.OnBatch = func(consumer.BatchStats) { cancel() } // stop after one batch
	lc, err := local.New(pool, cfg, h)
	if err != nil {
		log.Fatal(err)
	}
	// Register before producing: a consumer sees only events ticked later.
	if _, err := lc.Register(ctx); err != nil {
		log.Fatal(err)
	}

	// A producer's transaction, then a tick (in production the ticker
	// package, pgqctl ticker or pgqd makes the ticks).
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		for _, to := range []string{"ann@example.com", "bob@example.com"} {
			if _, err := pgq.InsertEvent(ctx, tx, "mail", pgq.NewEvent("mail", to)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	tick, err := pgq.Tick(ctx, pool, "mail")
	if err != nil {
		log.Fatal(err)
	}

	if err := lc.Run(ctx); err != nil {
		log.Fatal(err)
	}
	saved, _, err := lc.LocalTick()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("tracking file holds the batch's end tick:", saved == tick)
	// Output:
	// send mail to ann@example.com
	// send mail to bob@example.com
	// tracking file holds the batch's end tick: true
}
