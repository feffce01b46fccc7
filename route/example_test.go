package route_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/route"
	"github.com/pgq-go/pgq/urlenc"
)

// A producer on node a writes an order and sends it to nodes b and c, and
// a stock change to c only, in one transaction: the rows are sent iff the
// order commits. (A copier's Setup creates the push queue and registers
// its relay; here a plain consumer shows what was queued.)
func ExampleSender_SendBulk() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, "create table orders (id int primary key, item text)"); err != nil {
		log.Fatal(err)
	}
	if _, err := pgq.CreateQueue(ctx, pool, "push_queue"); err != nil {
		log.Fatal(err)
	}
	if _, err := pgq.RegisterConsumer(ctx, pool, "push_queue", "reader"); err != nil {
		log.Fatal(err)
	}

	sender := route.Sender{Queue: "push_queue", Origin: "a"}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "insert into orders values (1, 'bolt')"); err != nil {
			return err
		}
		_, err := sender.SendBulk(ctx, tx, []route.Message{
			{Targets: []string{"b", "c"}, Row: urlenc.Fields{"action": "ins", "id": 1, "item": "bolt"}},
			{Targets: []string{"c"}, Type: "U:id", Row: urlenc.Fields{"id": 9, "stock": 41}},
		})
		return err
	})
	if err != nil {
		log.Fatal(err)
	}

	// What the relay will read: one event per target.
	if _, err := pgq.Tick(ctx, pool, "push_queue"); err != nil {
		log.Fatal(err)
	}
	b, err := pgq.NextBatch(ctx, pool, "push_queue", "reader")
	if err != nil {
		log.Fatal(err)
	}
	evs, err := pgq.GetBatchEvents(ctx, pool, b.ID)
	if err != nil {
		log.Fatal(err)
	}
	for _, ev := range evs {
		fmt.Printf("type=%s target=%s origin=%s row=%s\n", ev.Type.String, ev.Extra1.String, ev.Extra3.String, ev.Extra2.String)
	}
	// Output:
	// type=copy target=b origin=a row=action=ins&id=1&item=bolt
	// type=copy target=c origin=a row=action=ins&id=1&item=bolt
	// type=U:id target=c origin=a row=id=9&stock=41
}

// An application that pipelines its statements adds the targeted rows to
// its own pgx.Batch: the order and the rows for nodes b and c travel in
// one round trip and are sent iff the transaction commits.
func ExampleSender_AddToBatch() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, "create table invoices (id int primary key, total numeric)"); err != nil {
		log.Fatal(err)
	}
	if _, err := pgq.CreateQueue(ctx, pool, "invoice_queue"); err != nil {
		log.Fatal(err)
	}
	if _, err := pgq.RegisterConsumer(ctx, pool, "invoice_queue", "reader"); err != nil {
		log.Fatal(err)
	}

	sender := route.Sender{Queue: "invoice_queue", Origin: "a"}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue("insert into invoices values ($1, $2)", 7, "19.90")
		if err := sender.AddToBatch(b,
			route.Message{Targets: []string{"b", "c"}, Type: "I:id", Row: urlenc.Fields{"id": 7, "total": "19.90"}},
		); err != nil {
			return err // invalid input: nothing was added to b
		}
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		log.Fatal(err)
	}

	if _, err := pgq.Tick(ctx, pool, "invoice_queue"); err != nil {
		log.Fatal(err)
	}
	info, err := pgq.NextBatch(ctx, pool, "invoice_queue", "reader")
	if err != nil {
		log.Fatal(err)
	}
	evs, err := pgq.GetBatchEvents(ctx, pool, info.ID)
	if err != nil {
		log.Fatal(err)
	}
	for _, ev := range evs {
		fmt.Printf("type=%s target=%s origin=%s row=%s\n", ev.Type.String, ev.Extra1.String, ev.Extra3.String, ev.Extra2.String)
	}
	// Output:
	// type=I:id target=b origin=a row=id=7&total=19.90
	// type=I:id target=c origin=a row=id=7&total=19.90
}
