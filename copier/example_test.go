package copier_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/apply"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/copier"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/route"
	"github.com/pgq-go/pgq/ticker"
	"github.com/pgq-go/pgq/urlenc"
	"golang.org/x/sync/errgroup"
)

// exampleNode returns the DSN of a fresh database with pgq on the test
// cluster (in your program: the node's database DSN).
func exampleNode(node string) string {
	name := fmt.Sprintf("copier_example_%s_%d", node, time.Now().UnixNano())
	dsn, err := cluster.CreateDB(context.Background(), name, true)
	if err != nil {
		log.Fatal(err)
	}
	return dsn
}

// Two nodes, a and b, and one hub, each its own database. A row written on
// a and sent to b is applied on b, exactly once, and on no other node. In
// production each node is its own process (see examples/targetedcopy/node);
// here both copiers and the ticker run in one.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsns := map[string]string{"a": exampleNode("a"), "b": exampleNode("b"), "hub": os.Getenv("DATABASE_URL")}
	pools := map[string]*pgxpool.Pool{}
	for name, dsn := range dsns {
		p, err := pgxpool.New(ctx, dsn)
		if err != nil {
			log.Fatal(err)
		}
		defer p.Close()
		pools[name] = p
	}
	// Every node has the table rows are copied into.
	for _, node := range []string{"a", "b"} {
		if _, err := pools[node].Exec(ctx, "create table items (id int primary key, name text not null)"); err != nil {
			log.Fatal(err)
		}
	}
	items, err := apply.NewRowApplier("items", []string{"id"})
	if err != nil {
		log.Fatal(err)
	}

	// One copier per node, all listing the same hubs. Node b signals when
	// its pull has applied a row.
	applied := make(chan struct{})
	var once sync.Once
	copiers := map[string]*copier.TargetedCopier{}
	for _, node := range []string{"a", "b"} {
		cfg := copier.Config{
			Node:    node,
			Local:   pools[node],
			Hubs:    []*pgxpool.Pool{pools["hub"]},
			Applier: items,
			// Tick the queues as soon as they hold events (PgQ's default
			// waits up to 3 s).
			QueueConfig: pgq.QueueConfig{TickerMaxLag: pgq.Ptr(10 * time.Millisecond)},
		}
		if node == "b" {
			cfg.Hooks.OnBatch = func(consumer.BatchStats) {
				if copiers["b"].Stats().Applied > 0 {
					once.Do(func() { close(applied) })
				}
			}
		}
		tc, err := copier.New(cfg)
		if err != nil {
			log.Fatal(err)
		}
		// Setup before producing: the node's relay must be registered
		// to see the rows (Run would do it too).
		if err := tc.Setup(ctx); err != nil {
			log.Fatal(err)
		}
		copiers[node] = tc
	}

	// One ticker for the nodes and the hub (or pgqctl ticker, or pgqd).
	tk, err := ticker.New(ticker.Config{
		Servers:    []ticker.Server{{ConnString: dsns["a"]}, {ConnString: dsns["b"]}, {ConnString: dsns["hub"]}},
		TickPeriod: 10 * time.Millisecond,
	})
	if err != nil {
		log.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(runCtx)
	g.Go(func() error { return tk.Run(gctx) })
	for _, tc := range copiers {
		g.Go(func() error { return tc.Run(gctx) })
	}

	// A producer on node a: its own write and the row sent to b commit
	// together.
	err = pgx.BeginFunc(ctx, pools["a"], func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "insert into items values (1, 'bolt')"); err != nil {
			return err
		}
		sender := route.Sender{Queue: "push_queue", Origin: "a"}
		_, err := sender.Send(ctx, tx, []string{"b"}, urlenc.Fields{"action": "ins", "id": 1, "name": "bolt"})
		return err
	})
	if err != nil {
		log.Fatal(err)
	}

	select {
	case <-applied:
	case <-ctx.Done():
		log.Fatal("row not applied on b")
	}
	stop()
	if err := g.Wait(); err != nil {
		log.Fatal(err)
	}

	var name string
	if err := pools["b"].QueryRow(ctx, "select name from items where id = 1").Scan(&name); err != nil {
		log.Fatal(err)
	}
	fmt.Println("on b:", name)
	fmt.Printf("a relayed %d, b applied %d\n", copiers["a"].Stats().Relayed, copiers["b"].Stats().Applied)
	// Output:
	// on b: bolt
	// a relayed 1, b applied 1
}
