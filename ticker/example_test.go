package ticker_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/ticker"
)

// exampleDatabase returns the DSN of a fresh database with the pgq
// extension on the test cluster (in your program: your database's DSN).
func exampleDatabase() string {
	name := fmt.Sprintf("example_%d", time.Now().UnixNano())
	dsn, err := cluster.CreateDB(context.Background(), name, true)
	if err != nil {
		log.Fatal(err)
	}
	return dsn
}

// A ticker for one database, as `pgqctl ticker --dsn ...` runs it: it ticks
// the queue and wakes consumers listening on pgq.NotifyChannel.
func Example() {
	ctx := context.Background()
	dsn := exampleDatabase()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := pgq.CreateQueue(ctx, conn, "orders"); err != nil {
		log.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "listen "+pgx.Identifier{pgq.NotifyChannel("orders")}.Sanitize()); err != nil {
		log.Fatal(err)
	}

	tk, err := ticker.New(ticker.Config{
		Servers:    []ticker.Server{{ConnString: dsn}},
		TickPeriod: 50 * time.Millisecond, // pgqd ticker_period
	})
	if err != nil {
		log.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- tk.Run(runCtx) }()

	// An event; the ticker ticks the queue once it is ticker_max_lag old
	// (3 s by default) and notifies.
	if _, err := pgq.InsertEvent(ctx, conn, "orders", pgq.EventData{Data: pgq.T("hello")}); err != nil {
		log.Fatal(err)
	}
	n, err := conn.WaitForNotification(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("tick notified on", n.Channel)
	fmt.Println("state:", tk.Snapshot()[0].State)

	stop()
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	// Output:
	// tick notified on pgq_tick.orders
	// state: ticking
}
