package metrics_test

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/apply"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/copier"
	"github.com/pgq-go/pgq/metrics"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/route"
	"github.com/pgq-go/pgq/ticker"
	"github.com/pgq-go/pgq/urlenc"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stretchr/testify/require"
)

type fakeCopier struct{ s copier.Stats }

func (f *fakeCopier) Stats() copier.Stats { return f.s }

// TestCopierCollector maps every Stats field.
func TestCopierCollector(t *testing.T) {
	src := &fakeCopier{copier.Stats{Relayed: 5, Applied: 3, Retried: 2, Parked: 1, Ignored: 4}}
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewCopierCollector("n1", src))
	first := scrape(t, reg)
	body := scrape(t, reg) // totals are read, not added up
	require.Equal(t, value(t, first, "pgq_copier_relayed_total{node=\"n1\"}"), value(t, body, "pgq_copier_relayed_total{node=\"n1\"}"))
	const l = `{node="n1"}`
	require.Equal(t, 5.0, value(t, body, "pgq_copier_relayed_total"+l))
	require.Equal(t, 3.0, value(t, body, "pgq_copier_applied_total"+l))
	require.Equal(t, 2.0, value(t, body, "pgq_copier_retried_total"+l))
	require.Equal(t, 1.0, value(t, body, "pgq_copier_parked_total"+l))
	require.Equal(t, 4.0, value(t, body, "pgq_copier_ignored_total"+l))
	src.s.Applied = 7
	require.Equal(t, 7.0, value(t, scrape(t, reg), "pgq_copier_applied_total"+l))
}

// TestCopierMetricsScraped runs a real one-node targeted copy (the node
// sends rows to itself through a hub) with a real ticker, all three
// collectors in one registry, and checks the scraped numbers against what
// the databases hold.
func TestCopierMetricsScraped(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	node, hub := cluster.NewDB(t), cluster.NewDB(t)
	_, err := node.Pool.Exec(ctx, `create table rows (id text primary key, payload text check (payload <> 'fail'))`)
	require.NoError(t, err)

	reg := prometheus.NewRegistry()
	cc := metrics.NewConsumerCollector()
	ra, err := apply.NewRowApplier("rows", []string{"id"})
	require.NoError(t, err)
	tc, err := copier.New(copier.Config{Node: "n1", Local: node.Pool, Hubs: []*pgxpool.Pool{hub.Pool}, Applier: ra,
		MaxRetries: 1, RetryDelay: 10 * time.Millisecond, PollInterval: 20 * time.Millisecond,
		ErrorBackoff: consumer.Backoff{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond},
		QueueConfig:  pgq.QueueConfig{TickerMaxLag: pgq.Ptr(10 * time.Millisecond), TickerIdlePeriod: pgq.Ptr(50 * time.Millisecond)},
		Hooks:        cc.Hooks("", "node.n1", consumer.Hooks{}),
		Logger:       slog.New(slog.NewTextHandler(t.Output(), nil))})
	require.NoError(t, err)
	require.NoError(t, tc.Setup(ctx)) // the relay is registered before rows are sent
	tk, err := ticker.New(ticker.Config{Servers: []ticker.Server{{ConnString: node.DSN}, {ConnString: hub.DSN}},
		TickPeriod: 20 * time.Millisecond, RetryPeriod: 50 * time.Millisecond})
	require.NoError(t, err)
	reg.MustRegister(cc, metrics.NewTickerCollector(tk), metrics.NewCopierCollector("n1", tc))
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()

	// 3 rows apply; one fails its check twice (retried once, then parked
	// with MaxRetries 1); one has no key (parked at once); one is of a
	// type the copier ignores.
	to := []string{"n1"}
	msgs := []route.Message{
		{Targets: to, Row: urlenc.Fields{"action": "ins", "id": "a", "payload": "ok"}},
		{Targets: to, Row: urlenc.Fields{"action": "ins", "id": "b", "payload": "ok"}},
		{Targets: to, Row: urlenc.Fields{"action": "ins", "id": "c", "payload": "ok"}},
		{Targets: to, Row: urlenc.Fields{"action": "ins", "id": "f", "payload": "fail"}},
		{Targets: to, Row: urlenc.Fields{"action": "ins", "payload": "no key"}},
		{Targets: to, Row: urlenc.Fields{"action": "ins", "id": "x"}, Type: "other"},
	}
	require.NoError(t, pgx.BeginFunc(ctx, node.Pool, func(tx pgx.Tx) error {
		_, err := route.Sender{Queue: "push_queue", Origin: "n1"}.SendBulk(ctx, tx, msgs)
		return err
	}))

	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, run := range []func(context.Context) error{tk.Run, tc.Run} {
		wg.Go(func() { errs <- run(runCtx) })
	}
	defer func() {
		stop()
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
	}()

	const l = `{node="n1"}`
	var body string
	require.Eventually(t, func() bool {
		body = scrapeURL(t, srv.URL)
		parked, _ := lookup(body, "pgq_copier_parked_total"+l)
		applied, _ := lookup(body, "pgq_copier_applied_total"+l)
		return parked == 2 && applied == 3
	}, 30*time.Second, 20*time.Millisecond, "rows not applied and parked:\n%s", body)
	var rows, parked int
	require.NoError(t, node.Pool.QueryRow(ctx, "select count(*) from rows").Scan(&rows))
	require.NoError(t, node.Pool.QueryRow(ctx, "select count(*) from pgq_go.parked_event").Scan(&parked))
	require.Equal(t, 3, rows)
	require.Equal(t, 2, parked)
	require.Equal(t, float64(len(msgs)), value(t, body, "pgq_copier_relayed_total"+l))
	require.Equal(t, 1.0, value(t, body, "pgq_copier_retried_total"+l))
	require.Equal(t, 1.0, value(t, body, "pgq_copier_ignored_total"+l))
	require.Contains(t, body, "# TYPE pgq_copier_applied_total counter")

	// The relay and the pull report through the hooks under their own
	// names (each hook runs after its batch's commit: wait for it).
	relayEvents := `pgq_consumer_events_total{consumer="` + route.RelayConsumerName("n1", 0) + `",queue="push_queue"}`
	pullEvents := `pgq_consumer_events_total{consumer="` + route.PullConsumerName("n1") + `",queue="pull_queue"}`
	require.Eventually(t, func() bool {
		body = scrapeURL(t, srv.URL)
		relayed, _ := lookup(body, relayEvents)
		pulled, _ := lookup(body, pullEvents)
		return relayed == float64(len(msgs)) && pulled == float64(len(msgs))
	}, 30*time.Second, 20*time.Millisecond, "relay and pull batches not reported:\n%s", body)
	// And the ticker ticked both databases.
	for _, db := range []string{node.Name, hub.Name} {
		require.Contains(t, body, `pgq_ticker_state{database="`+db+`",server=`)
	}
	require.Contains(t, body, `state="ticking"} 1`)
}
