package consumer_test

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

// statsLines are the "stats" records a JSON logger wrote to logs.
func statsLines(t *testing.T, logs *logBuf) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		var rec map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &rec))
		if rec["msg"] == "stats" {
			out = append(out, rec)
		}
	}
	return out
}

// TestStatsLine: a consumer logs Skytools' stats at info level once per
// StatsPeriod: the events and batches of the period, the retries, and
// while idle a line with count 0 (the keepalive). Negative: no line.
func TestStatsLine(t *testing.T) {
	t.Parallel()
	e := setup(t)
	logs := &logBuf{}
	cfg := e.cfg(t)
	cfg.StatsPeriod = 100 * time.Millisecond
	cfg.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	e.Produce(t, 5, nil)
	e.Tick(t)
	stop := e.start(t, cfg, consumer.BatchHandlerFunc(func(ctx context.Context, b *pgq.Batch) error {
		evs, err := b.All(ctx)
		if err == nil && len(evs) > 0 {
			evs[0].TagRetry(time.Hour)
		}
		return err
	}))
	var counted, idle bool
	require.Eventually(t, func() bool {
		counted, idle = false, false
		for _, rec := range statsLines(t, logs) {
			require.Equal(t, "INFO", rec["level"])
			require.Equal(t, e.Queue, rec["queue"])
			require.Equal(t, e.Consumer, rec["consumer"])
			for _, k := range []string{"count", "batches", "duration", "idle", "retry-events", "lag"} {
				require.Contains(t, rec, k)
			}
			if rec["count"] == float64(5) {
				require.Equal(t, float64(1), rec["batches"])
				require.Equal(t, float64(1), rec["retry-events"])
				counted = true
			} else if counted && rec["count"] == float64(0) {
				idle = true
			}
		}
		return counted && idle
	}, 30*time.Second, 20*time.Millisecond, "a stats line with the batch, then an idle one: %s", logs.String())
	require.NoError(t, stop())

	// Default: Skytools' keepalive_stats, 300 s; negative stays off.
	for in, want := range map[time.Duration]time.Duration{0: 5 * time.Minute, -1: -1, time.Second: time.Second} {
		cfg.StatsPeriod = in
		c, err := consumer.New(e.Pool, cfg, consumer.BatchHandlerFunc(func(context.Context, *pgq.Batch) error { return nil }))
		require.NoError(t, err)
		require.Equal(t, want, c.Config().StatsPeriod)
	}
}
