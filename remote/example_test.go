package remote_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/remote"
)

// exampleDestination returns the DSN of a fresh database on the test
// cluster, without pgq: a destination needs none (in your program: the
// destination database's DSN).
func exampleDestination() string {
	dsn, err := cluster.CreateDB(context.Background(), fmt.Sprintf("remote_example_dst_%d", time.Now().UnixNano()), false)
	if err != nil {
		log.Fatal(err)
	}
	return dsn
}

// A RemoteConsumer copying payments from a queue in one database into a
// table of another, exactly once: each batch's rows and the record that
// the batch was applied commit together on the destination.
func ExampleRemoteConsumer() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()
	dst, err := pgxpool.New(ctx, exampleDestination())
	if err != nil {
		log.Fatal(err)
	}
	defer dst.Close()
	if _, err := dst.Exec(ctx, "create table payments (ev_id bigint primary key, amount numeric not null)"); err != nil {
		log.Fatal(err)
	}
	if _, err := pgq.CreateQueue(ctx, src, "payments"); err != nil {
		log.Fatal(err)
	}

	h := remote.HandlerFunc(func(ctx context.Context, b *pgq.Batch, tx pgx.Tx) error {
		// Only through tx: it commits with the batch's record. The
		// pipeline queues the inserts on tx and sends them many per round
		// trip (at the latest before the record), instead of one round
		// trip per event.
		p := remote.Pipeline(tx)
		for ev, err := range b.Events(ctx) {
			if err != nil {
				return err
			}
			if err := p.Exec(ctx, "insert into payments values ($1, $2::numeric)", ev.ID, ev.Data.String); err != nil {
				return err
			}
		}
		return nil
	})
	cfg := remote.Config{Consumer: consumer.Config{Queue: "payments", Name: "payments_copy"}}
	cfg.Consumer.Hooks.OnBatch = func(s consumer.BatchStats) {
		fmt.Printf("batch applied: %d events\n", s.Events)
		cancel() // stop after this batch
	}
	rc, err := remote.New(src, dst, cfg, h)
	if err != nil {
		log.Fatal(err)
	}
	// Register before producing: a consumer sees only events ticked later.
	if _, err := rc.Consumer().Register(ctx); err != nil {
		log.Fatal(err)
	}

	// A producer's transaction on the source, then a tick (in production
	// the ticker package, pgqctl ticker or pgqd makes the ticks).
	err = pgx.BeginFunc(ctx, src, func(tx pgx.Tx) error {
		for _, amount := range []string{"10.00", "25.50", "7.25"} {
			if _, err := pgq.InsertEvent(ctx, tx, "payments", pgq.EventData{Type: pgq.T("pay"), Data: pgq.T(amount)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := pgq.Tick(ctx, src, "payments"); err != nil {
		log.Fatal(err)
	}

	if err := rc.Run(ctx); err != nil {
		log.Fatal(err)
	}

	var n int
	var total string
	if err := dst.QueryRow(context.Background(), "select count(*), sum(amount)::text from payments").Scan(&n, &total); err != nil {
		log.Fatal(err)
	}
	fmt.Println("on the destination:", n, "payments, total", total)
	last, err := remote.LastBatch(context.Background(), dst, "payments_copy", "")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("batch recorded on the destination:", last != 0)
	// Output:
	// batch applied: 3 events
	// on the destination: 3 payments, total 42.75
	// batch recorded on the destination: true
}
