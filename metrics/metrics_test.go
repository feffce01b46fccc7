package metrics_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/metrics"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/ticker"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/stretchr/testify/require"
)

var cluster *pgtest.Cluster

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, &cluster)) }

// scrape returns what GET /metrics serves for g, in the text format.
func scrape(t *testing.T, g prometheus.Gatherer) string {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.PanicOnError}).
		ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	return rec.Body.String()
}

// scrapeURL GETs a /metrics URL.
func scrapeURL(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

// lookup returns the sample "name{labels} v" for an exact series (labels
// sorted by name, as the exposition format writes them).
func lookup(body, series string) (float64, bool) {
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

func value(t *testing.T, body, series string) float64 {
	t.Helper()
	v, ok := lookup(body, series)
	require.True(t, ok, "no %s in:\n%s", series, body)
	return v
}

// TestConsumerHooks feeds reports straight into the hooks: labels, chaining
// to the next hooks, counters, gauges and histogram buckets.
func TestConsumerHooks(t *testing.T) {
	cc := metrics.NewConsumerCollector()
	reg := prometheus.NewRegistry()
	reg.MustRegister(cc)
	var nextBatches, nextErrors, nextIdle int
	h := cc.Hooks("q", "c", consumer.Hooks{
		OnBatch: func(consumer.BatchStats) { nextBatches++ },
		OnError: func(consumer.ErrorInfo) { nextErrors++ },
		OnIdle:  func() { nextIdle++ },
	})
	const l = `{consumer="c",queue="q"}`
	// Named consumers' counters exist before their first report.
	require.Equal(t, 0.0, value(t, scrape(t, reg), "pgq_consumer_batches_total"+l))

	h.OnBatch(consumer.BatchStats{Queue: "q", Consumer: "c", Events: 10, Retries: 2, Duration: 250 * time.Millisecond, Lag: 3 * time.Second})
	h.OnError(consumer.ErrorInfo{Attempt: 1, Err: errors.New("x")})
	h.OnError(consumer.ErrorInfo{Attempt: 2, Err: errors.New("x")})
	require.Equal(t, 2.0, value(t, scrape(t, reg), "pgq_consumer_consecutive_errors"+l))
	h.OnBatch(consumer.BatchStats{Events: 5})
	h.OnIdle()
	// A report naming another consumer is labelled with its names.
	h.OnBatch(consumer.BatchStats{Queue: "push", Consumer: "relay.n1", Events: 7})

	body := scrape(t, reg)
	require.Equal(t, 7.0, value(t, body, `pgq_consumer_events_total{consumer="relay.n1",queue="push"}`))
	require.Equal(t, 3, nextBatches)
	require.Equal(t, 2, nextErrors)
	require.Equal(t, 1, nextIdle)
	require.Equal(t, 2.0, value(t, body, "pgq_consumer_batches_total"+l))
	require.Equal(t, 15.0, value(t, body, "pgq_consumer_events_total"+l))
	require.Equal(t, 2.0, value(t, body, "pgq_consumer_retries_total"+l))
	require.Equal(t, 2.0, value(t, body, "pgq_consumer_errors_total"+l))
	require.Equal(t, 1.0, value(t, body, "pgq_consumer_idle_total"+l))
	require.Equal(t, 0.0, value(t, body, "pgq_consumer_consecutive_errors"+l), "reset by a finished batch")
	require.Equal(t, 0.0, value(t, body, "pgq_consumer_lag_seconds"+l), "the last batch's lag")
	// Observed durations 0.25 s and 0; events per batch 10 and 5.
	require.Equal(t, 2.0, value(t, body, "pgq_consumer_batch_duration_seconds_count"+l))
	require.Equal(t, 0.25, value(t, body, "pgq_consumer_batch_duration_seconds_sum"+l))
	require.Equal(t, 2.0, value(t, body, "pgq_consumer_batch_events_count"+l))
	require.Equal(t, 15.0, value(t, body, "pgq_consumer_batch_events_sum"+l))
	require.Equal(t, 0.0, value(t, body, `pgq_consumer_batch_events_bucket{consumer="c",queue="q",le="4"}`))
	require.Equal(t, 2.0, value(t, body, `pgq_consumer_batch_events_bucket{consumer="c",queue="q",le="16"}`))
	require.InDelta(t, float64(time.Now().Unix()), value(t, body, "pgq_consumer_last_batch_timestamp_seconds"+l), 5)

	// Nil next hooks are fine; a copier's hooks (no queue) make no series
	// up front, and label idle waits with the names given.
	h = cc.Hooks("", "node.n1", consumer.Hooks{})
	_, ok := lookup(scrape(t, reg), `pgq_consumer_batches_total{consumer="node.n1",queue=""}`)
	require.False(t, ok)
	h.OnIdle()
	require.Equal(t, 1.0, value(t, scrape(t, reg), `pgq_consumer_idle_total{consumer="node.n1",queue=""}`))
}

// TestConsumerMetricsScraped runs a real consumer whose hooks feed the
// collector, and reads its numbers back over HTTP.
func TestConsumerMetricsScraped(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := cluster.NewDB(t)
	_, err := pgq.CreateQueue(ctx, db.Pool, "q")
	require.NoError(t, err)
	_, err = pgq.RegisterConsumer(ctx, db.Pool, "q", "c")
	require.NoError(t, err)

	reg := prometheus.NewRegistry()
	cc := metrics.NewConsumerCollector()
	reg.MustRegister(cc)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
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
	cfg.Hooks = cc.Hooks(cfg.Queue, cfg.Name, cfg.Hooks)
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
	// A scrape may fall between two of one report's updates (OnBatch adds
	// events before retries and clears the failing gauge last): wait for
	// the whole report.
	require.Eventually(t, func() bool {
		body = scrapeURL(t, srv.URL)
		events, _ := lookup(body, "pgq_consumer_events_total"+l)
		retries, _ := lookup(body, "pgq_consumer_retries_total"+l)
		failing, ok := lookup(body, "pgq_consumer_consecutive_errors"+l)
		return events == 3 && retries == 1 && ok && failing == 0
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
	// The retried event is in the queue's retry table.
	var retries int
	require.NoError(t, db.Pool.QueryRow(ctx, "select count(*) from pgq.retry_queue").Scan(&retries))
	require.Equal(t, 1, retries)
	require.Eventually(t, func() bool {
		v, _ := lookup(scrapeURL(t, srv.URL), "pgq_consumer_idle_total"+l)
		return v >= 1
	}, 20*time.Second, 10*time.Millisecond, "idle waits not counted")
}

type fakeTicker struct {
	mu sync.Mutex
	s  []ticker.DatabaseStats
}

func (f *fakeTicker) Snapshot() []ticker.DatabaseStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.s)
}

// TestTickerCollector maps every DatabaseStats field, and every state.
func TestTickerCollector(t *testing.T) {
	src := &fakeTicker{s: []ticker.DatabaseStats{{Server: "h:5432", Database: "db", State: ticker.StateTicking,
		TickRuns: 10, Ticks: 4, RetryEvents: 6, MaintOps: 2, Errors: 1, LastSuccess: time.Unix(1700000000, 0), LastTickID: 42},
		{Server: "h:5432", Database: "fresh", State: ticker.StateConnecting}}}
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewTickerCollector(src))
	body := scrape(t, reg)
	const l = `{database="db",server="h:5432"}`
	require.Equal(t, 10.0, value(t, body, "pgq_ticker_tick_runs_total"+l))
	require.Equal(t, 4.0, value(t, body, "pgq_ticker_ticks_total"+l))
	require.Equal(t, 0.0, value(t, body, "pgq_ticker_notifies_total"+l))
	require.Equal(t, 6.0, value(t, body, "pgq_ticker_retry_events_total"+l))
	require.Equal(t, 2.0, value(t, body, "pgq_ticker_maint_ops_total"+l))
	require.Equal(t, 1.0, value(t, body, "pgq_ticker_errors_total"+l))
	require.Equal(t, 1700000000.0, value(t, body, "pgq_ticker_last_success_timestamp_seconds"+l))
	require.Equal(t, 42.0, value(t, body, "pgq_ticker_last_tick_id"+l))
	require.Equal(t, 1.0, value(t, body, `pgq_ticker_state{database="db",server="h:5432",state="ticking"}`))
	require.Equal(t, 0.0, value(t, body, `pgq_ticker_state{database="db",server="h:5432",state="standby"}`))
	require.Equal(t, 1.0, value(t, body, `pgq_ticker_state{database="fresh",server="h:5432",state="connecting"}`))
	_, ok := lookup(body, `pgq_ticker_last_success_timestamp_seconds{database="fresh",server="h:5432"}`)
	require.False(t, ok, "no success yet: no timestamp")

	// Totals are read, not added up: scraping twice does not double count.
	require.Equal(t, 10.0, value(t, scrape(t, reg), "pgq_ticker_tick_runs_total"+l))
	src.mu.Lock()
	src.s[0].TickRuns, src.s[0].State, src.s[0].ConsecutiveErrors = 15, ticker.StateFailing, 3
	src.mu.Unlock()
	body = scrape(t, reg)
	require.Equal(t, 15.0, value(t, body, "pgq_ticker_tick_runs_total"+l))
	require.Equal(t, 3.0, value(t, body, "pgq_ticker_consecutive_errors"+l))
	require.Equal(t, 0.0, value(t, body, `pgq_ticker_state{database="db",server="h:5432",state="ticking"}`))
	require.Equal(t, 1.0, value(t, body, `pgq_ticker_state{database="db",server="h:5432",state="failing"}`))
}

// TestTickerMetricsScraped runs a real ticker over a database with pgq and
// one without.
func TestTickerMetricsScraped(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := cluster.NewDB(t)
	plain := cluster.NewPlainDB(t)
	_, err := pgq.CreateQueue(ctx, db.Pool, "q")
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, "select pgq.set_queue_config('q', 'ticker_max_lag', '0')")
	require.NoError(t, err)

	tk, err := ticker.New(ticker.Config{Servers: []ticker.Server{{ConnString: db.DSN, Databases: []string{db.Name, plain.Name}}},
		TickPeriod: 20 * time.Millisecond})
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewTickerCollector(tk))
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- tk.Run(runCtx) }()
	defer func() {
		stop()
		require.NoError(t, <-done)
	}()

	_, err = pgq.InsertEvent(ctx, db.Pool, "q", pgq.EventData{Data: pgq.T("x")})
	require.NoError(t, err)
	withDB := func(series, name string) string {
		i := strings.IndexByte(series, '{')
		return series[:i+1] + `database="` + name + `",` + series[i+1:]
	}
	var server, l, body string
	require.Eventually(t, func() bool {
		snap := tk.Snapshot()
		if len(snap) == 0 {
			return false
		}
		server = snap[0].Server
		l = `{server="` + server + `"}`
		body = scrape(t, reg)
		v, _ := lookup(body, withDB("pgq_ticker_ticks_total"+l, db.Name))
		s, _ := lookup(body, withDB(`pgq_ticker_state{server="`+server+`",state="no-pgq"}`, plain.Name))
		return v >= 1 && s == 1
	}, 20*time.Second, 10*time.Millisecond, "no tick counted:\n%s", body)

	var maxTick float64
	require.NoError(t, db.Pool.QueryRow(ctx, "select max(tick_id) from pgq.tick").Scan(&maxTick))
	last := value(t, body, withDB("pgq_ticker_last_tick_id"+l, db.Name))
	require.GreaterOrEqual(t, last, 1.0)
	require.LessOrEqual(t, last, maxTick, "a tick id the database has")
	require.GreaterOrEqual(t, value(t, body, withDB("pgq_ticker_tick_runs_total"+l, db.Name)), 1.0)
	require.Equal(t, 0.0, value(t, body, withDB("pgq_ticker_errors_total"+l, db.Name)))
	require.Equal(t, 1.0, value(t, body, withDB(`pgq_ticker_state{server="`+server+`",state="ticking"}`, db.Name)))
	require.InDelta(t, float64(time.Now().Unix()),
		value(t, body, withDB("pgq_ticker_last_success_timestamp_seconds"+l, db.Name)), 30)
	require.Equal(t, 0.0, value(t, body, withDB(`pgq_ticker_state{server="`+server+`",state="ticking"}`, plain.Name)))
	require.Contains(t, body, "# TYPE pgq_ticker_ticks_total counter")
}

// TestMetricNames: the names users' dashboards use, their types, and what
// promlint says of them.
func TestMetricNames(t *testing.T) {
	cc := metrics.NewConsumerCollector()
	h := cc.Hooks("q", "c", consumer.Hooks{})
	h.OnBatch(consumer.BatchStats{Events: 1})
	reg := prometheus.NewRegistry()
	reg.MustRegister(cc,
		metrics.NewTickerCollector(&fakeTicker{s: []ticker.DatabaseStats{{Server: "h", Database: "d", LastSuccess: time.Now()}}}),
		metrics.NewCopierCollector("n1", &fakeCopier{}),
		metrics.NewCopierCollector("n2", &fakeCopier{})) // copiers of several nodes share a registry
	mfs, err := reg.Gather()
	require.NoError(t, err)
	got := map[string]string{}
	for _, mf := range mfs {
		got[mf.GetName()] = strings.ToLower(mf.GetType().String())
		require.NotEmpty(t, mf.GetHelp(), mf.GetName())
	}
	require.Equal(t, map[string]string{
		"pgq_consumer_batches_total":                "counter",
		"pgq_consumer_events_total":                 "counter",
		"pgq_consumer_retries_total":                "counter",
		"pgq_consumer_errors_total":                 "counter",
		"pgq_consumer_idle_total":                   "counter",
		"pgq_consumer_batch_duration_seconds":       "histogram",
		"pgq_consumer_batch_events":                 "histogram",
		"pgq_consumer_lag_seconds":                  "gauge",
		"pgq_consumer_last_batch_timestamp_seconds": "gauge",
		"pgq_consumer_consecutive_errors":           "gauge",

		"pgq_ticker_tick_runs_total":                "counter",
		"pgq_ticker_ticks_total":                    "counter",
		"pgq_ticker_notifies_total":                 "counter",
		"pgq_ticker_retry_events_total":             "counter",
		"pgq_ticker_maint_ops_total":                "counter",
		"pgq_ticker_errors_total":                   "counter",
		"pgq_ticker_consecutive_errors":             "gauge",
		"pgq_ticker_last_success_timestamp_seconds": "gauge",
		"pgq_ticker_last_tick_id":                   "gauge",
		"pgq_ticker_state":                          "gauge",

		"pgq_copier_relayed_total": "counter",
		"pgq_copier_applied_total": "counter",
		"pgq_copier_retried_total": "counter",
		"pgq_copier_parked_total":  "counter",
		"pgq_copier_ignored_total": "counter",
	}, got)
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	require.NoError(t, err)
	require.Empty(t, problems)
}
