package metrics_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/metrics"
	"github.com/pgq-go/pgq/pgq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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

// A consumer reporting to Prometheus. A ticker and a targeted copier are
// registered the same way: reg.MustRegister(metrics.NewTickerCollector(tk),
// metrics.NewCopierCollector(node, tc)).
func Example() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pool, err := pgxpool.New(ctx, exampleDatabase())
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if _, err := pgq.CreateQueue(ctx, pool, "orders"); err != nil {
		log.Fatal(err)
	}

	reg := prometheus.NewRegistry()
	cc := metrics.NewConsumerCollector()
	reg.MustRegister(cc)
	// In a program: http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	cfg := consumer.Config{Queue: "orders", Name: "billing"}
	cfg.Hooks = cc.Hooks(cfg.Queue, cfg.Name, cfg.Hooks)
	c, err := consumer.New(pool, cfg, consumer.Events(consumer.EventHandlerFunc(
		func(ctx context.Context, ev *pgq.Event) error {
			if ev.Data.String == "order 3" {
				cancel() // stop after this batch
			}
			return nil
		})))
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.Register(ctx); err != nil {
		log.Fatal(err)
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		for _, d := range []string{"order 1", "order 2", "order 3"} {
			if _, err := pgq.InsertEvent(ctx, tx, "orders", pgq.EventData{Data: pgq.T(d)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := pgq.Tick(ctx, pool, "orders"); err != nil { // the ticker's job
		log.Fatal(err)
	}
	if err := c.Run(ctx); err != nil {
		log.Fatal(err)
	}

	// A scrape of /metrics.
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for line := range strings.Lines(rec.Body.String()) {
		if strings.HasPrefix(line, "pgq_consumer_events_total") || strings.HasPrefix(line, "pgq_consumer_errors_total") {
			fmt.Print(line)
		}
	}
	// Output:
	// pgq_consumer_errors_total{consumer="billing",queue="orders"} 0
	// pgq_consumer_events_total{consumer="billing",queue="orders"} 3
}
