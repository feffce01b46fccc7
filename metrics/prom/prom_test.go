package prom_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/metrics"
	"github.com/pgq-go/pgq/metrics/prom"
	"github.com/pgq-go/pgq/pgq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

var cluster *pgtest.Cluster

func TestMain(m *testing.M) {
	os.Exit(pgtest.Main(m, &cluster))
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

// value returns the sample "name{labels} v" for an exact label string.
func value(t *testing.T, body, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(t, err)
			return f
		}
	}
	t.Fatalf("no %s in:\n%s", series, body)
	return 0
}

// TestConsumerMetricsScraped runs a real consumer whose hooks feed the
// Prometheus sink, and reads its numbers back over HTTP.
func TestConsumerMetricsScraped(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := cluster.NewDB(t)
	_, err := pgq.CreateQueue(ctx, db.Pool, "q")
	require.NoError(t, err)
	_, err = pgq.RegisterConsumer(ctx, db.Pool, "q", "c")
	require.NoError(t, err)

	sink := prom.New(nil)
	srv := httptest.NewServer(sink.Handler())
	defer srv.Close()

	// The handler fails the first attempt, then tags event "r" for retry.
	var attempts atomic.Int32
	h := consumer.BatchHandlerFunc(func(ctx context.Context, b *pgq.Batch) error {
		evs, err := b.All(ctx)
		if err != nil {
			return err
		}
		if len(evs) > 0 && attempts.Add(1) == 1 {
			return errors.New("first attempt fails")
		}
		for _, ev := range evs {
			if ev.Data.String == "r" {
				ev.TagRetry(time.Hour)
			}
		}
		return nil
	})
	cfg := consumer.Config{Queue: "q", Name: "c", PollInterval: 20 * time.Millisecond,
		ErrorBackoff: consumer.Backoff{Initial: time.Millisecond, Max: 10 * time.Millisecond}}
	cfg.Hooks = metrics.ConsumerHooks(sink, cfg.Queue, cfg.Name, cfg.Hooks)
	c, err := consumer.New(db.Pool, cfg, h)
	require.NoError(t, err)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	defer func() {
		stop()
		require.NoError(t, <-done)
	}()

	require.NoError(t, pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		for _, d := range []string{"a", "b", "r"} {
			if _, err := pgq.InsertEvent(ctx, tx, "q", pgq.EventData{Data: pgq.T(d)}); err != nil {
				return err
			}
		}
		return nil
	}))
	_, err = pgq.Tick(ctx, db.Pool, "q")
	require.NoError(t, err)

	const l = `{consumer="c",queue="q"}`
	var body string
	require.Eventually(t, func() bool {
		body = scrape(t, srv.URL)
		return strings.Contains(body, "pgq_consumer_events_total"+l+" 3")
	}, 20*time.Second, 10*time.Millisecond, "events not counted")
	require.Equal(t, 1.0, value(t, body, "pgq_consumer_retries_total"+l))
	require.Equal(t, 1.0, value(t, body, "pgq_consumer_errors_total"+l))
	require.GreaterOrEqual(t, value(t, body, "pgq_consumer_batches_total"+l), 1.0)
	require.Equal(t, 0.0, value(t, body, "pgq_consumer_consecutive_errors"+l))
	require.GreaterOrEqual(t, value(t, body, "pgq_consumer_batch_duration_seconds_count"+l), 1.0)
	require.Equal(t, value(t, body, "pgq_consumer_batches_total"+l), value(t, body, "pgq_consumer_batch_events_count"+l))
	require.InDelta(t, float64(time.Now().Unix()), value(t, body, "pgq_consumer_last_batch_timestamp_seconds"+l), 30)
	require.Contains(t, body, "# TYPE pgq_consumer_batch_duration_seconds histogram")
	require.Contains(t, body, "# HELP pgq_consumer_retries_total Events sent to the retry queue.")
	require.Eventually(t, func() bool {
		return strings.Contains(scrape(t, srv.URL), "pgq_consumer_idle_total"+l)
	}, 20*time.Second, 10*time.Millisecond, "idle waits counted")
}

func TestSinkCollectorsAndOddNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	sink := prom.New(reg)
	var n atomic.Int32
	sink.AddCollector(metrics.CollectorFunc(func(s metrics.Sink) {
		s.Set("app_collected", float64(n.Add(1)), metrics.Labels{"b": "2", "a": "1"})
	}))
	srv := httptest.NewServer(sink.Handler())
	defer srv.Close()

	// Collectors run on every scrape.
	require.Equal(t, 1.0, value(t, scrape(t, srv.URL), `app_collected{a="1",b="2"}`))
	require.Equal(t, 2.0, value(t, scrape(t, srv.URL), `app_collected{a="1",b="2"}`))

	// A name reused with another kind, or a negative counter delta, is
	// dropped and counted, never a panic.
	sink.Add("app_collected", 1, nil)
	sink.Add("app_count_total", -1, nil)
	sink.Add("app_count_total", 2, metrics.Labels{"x": "y"}) // first use fixed no labels: extra ignored
	sink.Observe("app_seconds", 0.2, nil)
	body := scrape(t, srv.URL)
	require.Equal(t, 2.0, value(t, body, "pgq_metrics_dropped_total"))
	require.Equal(t, 2.0, value(t, body, "app_count_total"))
	require.Equal(t, 1.0, value(t, body, "app_seconds_count"))

	// Two sinks on one registry share the metrics.
	other := prom.New(reg)
	other.Add("app_count_total", 3, nil)
	require.Equal(t, 5.0, value(t, scrape(t, srv.URL), "app_count_total"))
	require.Same(t, reg, other.Registry())
}
