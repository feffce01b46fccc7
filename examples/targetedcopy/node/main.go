// Command node runs one node of a targeted-copy cluster: the relay from
// this node's push queue to the hub(s), the pull of this node's rows from
// its hub shard, and optionally a ticker for the node's database and hubs.
//
//	node --node n1 --local postgres://.../n1 --hub postgres://.../hub \
//	     --applier row --table rows --keys id --ticker
//
// Every flag has an environment variable (PGQ_NODE, PGQ_LOCAL, PGQ_HUB
// comma-separated, PGQ_APPLIER, ...). SIGINT/SIGTERM stop it gracefully.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/apply"
	"github.com/pgq-go/pgq/copier"
	"github.com/pgq-go/pgq/metrics"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/ticker"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
)

type hubs []string

func (h *hubs) String() string     { return strings.Join(*h, ",") }
func (h *hubs) Set(v string) error { *h = append(*h, v); return nil }

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func main() {
	var hubList hubs
	if v := os.Getenv("PGQ_HUB"); v != "" {
		hubList = strings.Split(v, ",")
	}
	node := flag.String("node", env("PGQ_NODE", ""), "this node's id (env PGQ_NODE)")
	local := flag.String("local", env("PGQ_LOCAL", ""), "this node's database DSN (env PGQ_LOCAL)")
	flag.Var(&hubList, "hub", "hub shard DSN, repeatable, same order on every node (env PGQ_HUB, comma-separated)")
	applier := flag.String("applier", env("PGQ_APPLIER", "row"), "row | func")
	table := flag.String("table", env("PGQ_TABLE", "rows"), "row applier: target table")
	keys := flag.String("keys", env("PGQ_KEYS", "id"), "row applier: key columns, comma-separated")
	fn := flag.String("func", env("PGQ_FUNC", "__data_copier"), "func applier: SQL function (target text, data text)")
	routing := flag.String("routing", env("PGQ_ROUTING", "shared"), "shared | per-target")
	runTicker := flag.Bool("ticker", env("PGQ_TICKER", "") == "1", "also tick the node's database and the hubs (env PGQ_TICKER=1)")
	tickPeriod := flag.Duration("tick-period", 100*time.Millisecond, "ticker period with --ticker")
	maxLag := flag.Duration("max-lag", 100*time.Millisecond, "ticker_max_lag of the queues this node creates")
	metricsAddr := flag.String("metrics-addr", env("PGQ_METRICS_ADDR", ""), "serve Prometheus /metrics on this address, e.g. :9187")
	verbose := flag.Bool("v", false, "log at info level")
	flag.Parse()

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("node", *node)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, log, options{*node, *local, hubList, *applier, *table, *keys, *fn, *routing, *runTicker, *tickPeriod, *maxLag, *metricsAddr}); err != nil {
		log.Error("node failed", "err", err)
		os.Exit(1)
	}
}

type options struct {
	node, local        string
	hubs               []string
	applier            string
	table, keys, fn    string
	routing            string
	ticker             bool
	tickPeriod, maxLag time.Duration
	metricsAddr        string
}

func run(ctx context.Context, log *slog.Logger, o options) error {
	if o.node == "" || o.local == "" || len(o.hubs) == 0 {
		return errors.New("--node, --local and at least one --hub are required")
	}
	localPool, err := pgxpool.New(ctx, o.local)
	if err != nil {
		return err
	}
	defer localPool.Close()
	cfg := copier.Config{Node: o.node, Local: localPool,
		QueueConfig: pgq.QueueConfig{TickerMaxLag: &o.maxLag},
		Logger:      log, PollInterval: time.Second}
	for _, h := range o.hubs {
		p, err := pgxpool.New(ctx, h)
		if err != nil {
			return err
		}
		defer p.Close()
		cfg.Hubs = append(cfg.Hubs, p)
	}
	switch o.routing {
	case "per-target":
		cfg.Routing = copier.RoutingPerTarget
	case "shared":
		cfg.Routing = copier.RoutingShared
	default:
		return fmt.Errorf("--routing %q: want per-target or shared", o.routing)
	}
	switch o.applier {
	case "row":
		ra, err := apply.NewRowApplier(o.table, strings.Split(o.keys, ","))
		if err != nil {
			return err
		}
		cfg.Applier = ra
	case "func":
		fa, err := apply.NewFuncApplier(o.fn)
		if err != nil {
			return err
		}
		cfg.Applier = fa
	default:
		return fmt.Errorf("--applier %q: want row or func", o.applier)
	}
	var reg *prometheus.Registry
	if o.metricsAddr != "" {
		reg = prometheus.NewRegistry()
		cc := metrics.NewConsumerCollector()
		reg.MustRegister(cc)
		cfg.Hooks = cc.Hooks("", "node."+o.node, cfg.Hooks)
	}
	// The copier runs the relay and pull; anything else the process runs
	// (here the ticker) goes beside it in an errgroup: the first to fail
	// stops the others.
	g, gctx := errgroup.WithContext(ctx)
	if o.ticker {
		servers := []ticker.Server{{ConnString: o.local}}
		for _, h := range o.hubs {
			servers = append(servers, ticker.Server{ConnString: h})
		}
		tk, err := ticker.New(ticker.Config{Servers: servers, TickPeriod: o.tickPeriod,
			RetryPeriod: time.Second, Logger: log})
		if err != nil {
			return err
		}
		g.Go(func() error { return tk.Run(gctx) })
		if reg != nil {
			reg.MustRegister(metrics.NewTickerCollector(tk))
		}
	}
	tc, err := copier.New(cfg)
	if err != nil {
		return err
	}
	if reg != nil {
		reg.MustRegister(metrics.NewCopierCollector(o.node, tc))
		srv := &http.Server{Addr: o.metricsAddr, Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server", "err", err)
			}
		}()
		defer srv.Close()
	}
	log.Info("node running", "hubs", len(o.hubs), "routing", cfg.Routing)
	g.Go(func() error { return tc.Run(gctx) })
	return g.Wait()
}
