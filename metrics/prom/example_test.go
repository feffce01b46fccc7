package prom_test

import (
	"context"
	"log"
	"net/http"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/metrics"
	"github.com/pgq-go/pgq/metrics/prom"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/ticker"
)

// A consumer and a ticker reporting to Prometheus, served on :9187/metrics.
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	sink := prom.New(nil)

	cfg := consumer.Config{Queue: "orders", Name: "billing"}
	cfg.Hooks = metrics.ConsumerHooks(sink, cfg.Queue, cfg.Name, cfg.Hooks)
	c, err := consumer.New(pool, cfg, consumer.Events(consumer.EventHandlerFunc(
		func(ctx context.Context, ev *pgq.Event) error { return nil })))
	if err != nil {
		log.Fatal(err)
	}

	tk, err := ticker.New(ticker.Config{Servers: []ticker.Server{{ConnString: os.Getenv("DATABASE_URL")}}})
	if err != nil {
		log.Fatal(err)
	}
	sink.AddCollector(metrics.NewTickerCollector(tk)) // read on every scrape

	http.Handle("/metrics", sink.Handler())
	go func() { log.Fatal(http.ListenAndServe(":9187", nil)) }()
	go func() { log.Fatal(tk.Run(ctx)) }()
	log.Fatal(c.Run(ctx))
}
