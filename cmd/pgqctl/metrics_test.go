package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// scrape GETs a /metrics URL.
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

// metricValue finds the sample of name whose labels include every one of
// want ("k": "v") in a Prometheus text exposition.
func metricValue(body, name string, want map[string]string) (float64, bool) {
	for _, line := range strings.Split(body, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		labels, value := "", strings.TrimSpace(rest)
		if strings.HasPrefix(rest, "{") {
			end := strings.LastIndexByte(rest, '}')
			labels, value = rest[1:end], strings.TrimSpace(rest[end+1:])
		}
		match := true
		for k, v := range want {
			if !strings.Contains(labels, k+`="`+v+`"`) {
				match = false
			}
		}
		if match {
			f, err := strconv.ParseFloat(value, 64)
			return f, err == nil
		}
	}
	return 0, false
}

var metricsURL = regexp.MustCompile(`url=(http://\S+/metrics)`)

func TestTickerMetrics(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := cluster.NewDB(t)
	tick := queueWithTicks(t, ctx, db)

	runCtx, stop := context.WithCancel(ctx)
	var out syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(runCtx, []string{"ticker", "--dsn", db.DSN, "--ticker-period", "20ms", "--metrics-addr", "127.0.0.1:0"}, &out, &out)
	}()
	defer func() {
		stop()
		select {
		case code := <-done:
			require.Equal(t, 0, code, out.String())
		case <-time.After(20 * time.Second):
			t.Fatal("pgqctl ticker did not stop")
		}
	}()
	var url string
	require.Eventually(t, func() bool {
		m := metricsURL.FindStringSubmatch(out.String())
		if m != nil {
			url = m[1]
		}
		return m != nil
	}, 20*time.Second, 10*time.Millisecond, "log: %s", out.String())

	require.Eventually(t, tick(), 20*time.Second, 10*time.Millisecond)
	this := map[string]string{"database": db.Name}
	var body string
	require.Eventually(t, func() bool {
		body = scrape(t, url)
		v, ok := metricValue(body, "pgq_ticker_ticks_total", this)
		return ok && v >= 1
	}, 20*time.Second, 20*time.Millisecond, "no ticks counted")
	runs, ok := metricValue(body, "pgq_ticker_tick_runs_total", this)
	require.True(t, ok)
	require.GreaterOrEqual(t, runs, 1.0)
	v, ok := metricValue(body, "pgq_ticker_state", map[string]string{"database": db.Name, "state": "ticking"})
	require.True(t, ok)
	require.Equal(t, 1.0, v)
	v, ok = metricValue(body, "pgq_ticker_state", map[string]string{"database": db.Name, "state": "failing"})
	require.True(t, ok)
	require.Equal(t, 0.0, v)
	v, ok = metricValue(body, "pgq_ticker_errors_total", this)
	require.True(t, ok)
	require.Equal(t, 0.0, v)
	_, ok = metricValue(body, "pgq_ticker_last_success_timestamp_seconds", this)
	require.True(t, ok)
	require.Contains(t, body, "# HELP pgq_ticker_ticks_total Queue ticks made.")
	require.Contains(t, body, "# TYPE pgq_ticker_ticks_total counter")
	require.Contains(t, body, "go_goroutines ")

	// Counters only grow between scrapes.
	before, _ := metricValue(body, "pgq_ticker_tick_runs_total", this)
	require.Eventually(t, func() bool {
		after, _ := metricValue(scrape(t, url), "pgq_ticker_tick_runs_total", this)
		return after > before
	}, 20*time.Second, 20*time.Millisecond)
}

func TestTickerMetricsBadAddr(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	db := cluster.NewDB(t)
	code, _, errOut := pgqctl(t, "ticker", "--dsn", db.DSN, "-q", "--metrics-addr", ln.Addr().String())
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "pgqctl ticker: metrics: listen tcp")
}
