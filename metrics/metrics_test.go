package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/metrics"
	"github.com/pgq-go/pgq/remote"
	"github.com/pgq-go/pgq/ticker"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// memSink records the latest value of every series and every call.
type memSink struct {
	mu     sync.Mutex
	values map[string]float64   // "name{k=v,...}" → counter sum or gauge value
	obs    map[string][]float64 // histograms
	kinds  map[string]metrics.Kind
}

func newMemSink() *memSink {
	return &memSink{values: map[string]float64{}, obs: map[string][]float64{}, kinds: map[string]metrics.Kind{}}
}

func key(name string, l metrics.Labels) string {
	var kv []string
	for k, v := range l {
		kv = append(kv, k+"="+v)
	}
	sort.Strings(kv)
	return name + "{" + strings.Join(kv, ",") + "}"
}

func (s *memSink) Add(name string, d float64, l metrics.Labels) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.values[key(name, l)] += d
	s.kinds[name] = metrics.KindCounter
}

func (s *memSink) Set(name string, v float64, l metrics.Labels) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.values[key(name, l)] = v
	s.kinds[name] = metrics.KindGauge
}

func (s *memSink) Observe(name string, v float64, l metrics.Labels) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.obs[key(name, l)] = append(s.obs[key(name, l)], v)
	s.kinds[name] = metrics.KindHistogram
}

func (s *memSink) get(k string) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.values[k]
}

// checkDescs: every metric a sink saw is described with its kind and labels.
func (s *memSink) checkDescs(t *testing.T) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, kind := range s.kinds {
		d, ok := metrics.Lookup(name)
		require.True(t, ok, "%s has no Desc", name)
		require.Equal(t, d.Kind, kind, name)
		require.NotEmpty(t, d.Help)
	}
	for k := range s.values {
		name := k[:strings.IndexByte(k, '{')]
		d, _ := metrics.Lookup(name)
		for _, l := range d.Labels {
			require.Contains(t, k, l+"=", k)
		}
	}
}

func TestConsumerHooks(t *testing.T) {
	s := newMemSink()
	var nextBatches, nextErrors, nextIdle int
	h := metrics.ConsumerHooks(s, "q", "c", consumer.Hooks{
		OnBatch: func(consumer.BatchStats) { nextBatches++ },
		OnError: func(consumer.ErrorInfo) { nextErrors++ },
		OnIdle:  func() { nextIdle++ },
	})
	h.OnBatch(consumer.BatchStats{Queue: "q", Consumer: "c", Events: 10, Retries: 2, Duration: 250 * time.Millisecond, Lag: 3 * time.Second})
	h.OnError(consumer.ErrorInfo{Attempt: 1, Err: errors.New("x")})
	h.OnError(consumer.ErrorInfo{Attempt: 2, Err: errors.New("x")})
	k := func(name string) string { return key(name, metrics.Labels{"queue": "q", "consumer": "c"}) }
	require.Equal(t, 2.0, s.get(k(metrics.ConsumerFailing)))
	h.OnBatch(consumer.BatchStats{Events: 5})
	h.OnIdle()
	// A report naming another consumer is labelled with its names.
	h.OnBatch(consumer.BatchStats{Queue: "push", Consumer: "relay.n1", Events: 7})
	require.Equal(t, 7.0, s.get(key(metrics.ConsumerEvents, metrics.Labels{"queue": "push", "consumer": "relay.n1"})))

	require.Equal(t, 3, nextBatches)
	require.Equal(t, 2, nextErrors)
	require.Equal(t, 1, nextIdle)
	require.Equal(t, 2.0, s.get(k(metrics.ConsumerBatches)))
	require.Equal(t, 15.0, s.get(k(metrics.ConsumerEvents)))
	require.Equal(t, 2.0, s.get(k(metrics.ConsumerRetries)))
	require.Equal(t, 2.0, s.get(k(metrics.ConsumerErrors)))
	require.Equal(t, 1.0, s.get(k(metrics.ConsumerIdle)))
	require.Equal(t, 0.0, s.get(k(metrics.ConsumerFailing)), "reset by a finished batch")
	require.Equal(t, []float64{0.25, 0}, s.obs[k(metrics.ConsumerBatchDuration)])
	require.Equal(t, []float64{10, 5}, s.obs[k(metrics.ConsumerBatchEvents)])
	require.InDelta(t, float64(time.Now().Unix()), s.get(k(metrics.ConsumerLastBatch)), 5)
	s.checkDescs(t)

	// Nil next hooks are fine.
	metrics.ConsumerHooks(metrics.Discard, "q", "c", consumer.Hooks{}).OnIdle()
}

type fakeTicker struct {
	mu sync.Mutex
	s  []ticker.DatabaseStats
}

func (f *fakeTicker) Snapshot() []ticker.DatabaseStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]ticker.DatabaseStats(nil), f.s...)
}

func TestTickerCollector(t *testing.T) {
	src := &fakeTicker{s: []ticker.DatabaseStats{{Server: "h:5432", Database: "db", State: ticker.StateTicking,
		TickRuns: 10, Ticks: 4, Errors: 1, LastSuccess: time.Unix(1700000000, 0), LastTickID: 42}}}
	c := metrics.NewTickerCollector(src)
	s := newMemSink()
	c.Collect(s)
	l := metrics.Labels{"server": "h:5432", "database": "db"}
	require.Equal(t, 10.0, s.get(key(metrics.TickerTickRuns, l)))
	require.Equal(t, 4.0, s.get(key(metrics.TickerTicks, l)))
	require.Equal(t, 0.0, s.get(key(metrics.TickerNotifies, l)))
	require.Equal(t, 1.0, s.get(key(metrics.TickerErrors, l)))
	require.Equal(t, 1700000000.0, s.get(key(metrics.TickerLastSuccess, l)))
	require.Equal(t, 42.0, s.get(key(metrics.TickerLastTickID, l)))
	require.Equal(t, 1.0, s.get(key(metrics.TickerState, metrics.Labels{"server": "h:5432", "database": "db", "state": "ticking"})))
	require.Equal(t, 0.0, s.get(key(metrics.TickerState, metrics.Labels{"server": "h:5432", "database": "db", "state": "standby"})))

	// Totals become increases: collecting twice does not double count.
	c.Collect(s)
	require.Equal(t, 10.0, s.get(key(metrics.TickerTickRuns, l)))
	src.mu.Lock()
	src.s[0].TickRuns, src.s[0].State, src.s[0].ConsecutiveErrors = 15, ticker.StateFailing, 3
	src.mu.Unlock()
	c.Collect(s)
	require.Equal(t, 15.0, s.get(key(metrics.TickerTickRuns, l)))
	require.Equal(t, 3.0, s.get(key(metrics.TickerConsecutiveErrors, l)))
	require.Equal(t, 0.0, s.get(key(metrics.TickerState, metrics.Labels{"server": "h:5432", "database": "db", "state": "ticking"})))
	require.Equal(t, 1.0, s.get(key(metrics.TickerState, metrics.Labels{"server": "h:5432", "database": "db", "state": "failing"})))
	s.checkDescs(t)
}

type fakeCopier struct{ s remote.CopierStats }

func (f *fakeCopier) Stats() remote.CopierStats { return f.s }

func TestCopierCollector(t *testing.T) {
	src := &fakeCopier{remote.CopierStats{Relayed: 5, Applied: 3, Parked: 1}}
	c := metrics.NewCopierCollector("n1", src)
	s := newMemSink()
	c.Collect(s)
	c.Collect(s)
	l := metrics.Labels{"node": "n1"}
	require.Equal(t, 5.0, s.get(key(metrics.CopierRelayed, l)))
	require.Equal(t, 3.0, s.get(key(metrics.CopierApplied, l)))
	require.Equal(t, 1.0, s.get(key(metrics.CopierParked, l)))
	src.s.Applied = 7
	c.Collect(s)
	require.Equal(t, 7.0, s.get(key(metrics.CopierApplied, l)))
	s.checkDescs(t)
}

func TestPoll(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var n int
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		metrics.Poll(ctx, metrics.Discard, time.Millisecond, metrics.CollectorFunc(func(metrics.Sink) {
			mu.Lock()
			defer mu.Unlock()
			if n++; n == 3 {
				cancel()
			}
		}))
	}()
	<-done
	require.GreaterOrEqual(t, n, 3)
}

func TestDescs(t *testing.T) {
	seen := map[string]bool{}
	for _, d := range metrics.Descs() {
		require.False(t, seen[d.Name], "duplicate %s", d.Name)
		seen[d.Name] = true
		require.True(t, strings.HasPrefix(d.Name, "pgq_"), d.Name)
		if d.Kind == metrics.KindCounter {
			require.True(t, strings.HasSuffix(d.Name, "_total"), d.Name)
		}
		require.NotEmpty(t, d.Labels, d.Name)
		require.NotEqual(t, "unknown", d.Kind.String())
	}
	_, ok := metrics.Lookup("nope")
	require.False(t, ok)
	require.Equal(t, "gauge", fmt.Sprint(metrics.KindGauge))
}
