package harness

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/pgq-go/pgq/copier"
)

// The Benchmark functions run the measurements of the bench command (go run ./bench) under
// go test -bench (and benchstat). Each op is one measurement of the case
// at PGQ_BENCH_SCALE (default 0.1: 100k-event batches); ns/op is the
// measured time of that op only (setup excluded), events/s is derived from
// it. PGQ_BENCH_DSN (or PGQ_TEST_DSN) uses an existing server.
//
//	go test ./bench/internal/harness -run '^$' -bench . -count 5 | tee new.txt
//	benchstat old.txt new.txt

var testEnv *Env

func TestMain(m *testing.M) {
	if ran, code := ChildMain(); ran {
		os.Exit(code)
	}
	flag.Parse()
	if f := flag.Lookup("test.bench"); f != nil && f.Value.String() != "" {
		var err error
		testEnv, err = Open(context.Background(), testDSN())
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			os.Exit(2)
		}
	}
	code := m.Run()
	if testEnv != nil {
		testEnv.Close()
	}
	os.Exit(code)
}

// testDSN is PGQ_BENCH_DSN; "" starts a throwaway cluster (or uses
// PGQ_TEST_DSN, as the other tests do).
func testDSN() string { return os.Getenv("PGQ_BENCH_DSN") }

func benchScale() float64 {
	if s, err := strconv.ParseFloat(os.Getenv("PGQ_BENCH_SCALE"), 64); err == nil && s > 0 {
		return s
	}
	return 0.1
}

func benchN(base int) int { return max(1, int(float64(base)*benchScale())) }

// measure runs op b.N times and reports its own durations as ns/op and
// n events per op as events/s.
func measure(b *testing.B, n int, op func() (time.Duration, error)) {
	b.Helper()
	var total time.Duration
	for range b.N {
		d, err := op()
		if err != nil {
			b.Fatal(err)
		}
		total += d
	}
	b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/op")
	b.ReportMetric(float64(n)*float64(b.N)/total.Seconds(), "events/s")
}

func BenchmarkBulkInsert(b *testing.B) {
	ctx := context.Background()
	f, err := newInsertFixture(ctx, testEnv)
	if err != nil {
		b.Fatal(err)
	}
	defer testEnv.DropDB(f.db)
	n := benchN(bulkEvents)
	b.Run("ours", func(b *testing.B) { measure(b, n, func() (time.Duration, error) { return f.bulkOurs(ctx, n) }) })
	b.Run("ceiling", func(b *testing.B) { measure(b, n, func() (time.Duration, error) { return f.bulkCeiling(ctx, n) }) })
}

func BenchmarkInsertPipelined(b *testing.B) {
	ctx := context.Background()
	f, err := newInsertFixture(ctx, testEnv)
	if err != nil {
		b.Fatal(err)
	}
	defer testEnv.DropDB(f.db)
	n := max(pipelineChunk, benchN(pipelinedEvents*10))
	b.Run("ours", func(b *testing.B) { measure(b, n, func() (time.Duration, error) { return f.pipelinedOurs(ctx, n) }) })
	b.Run("ceiling", func(b *testing.B) { measure(b, n, func() (time.Duration, error) { return f.pipelinedCeiling(ctx, n) }) })
}

func BenchmarkConsume(b *testing.B) {
	ctx := context.Background()
	f, err := newConsumeFixture(ctx, testEnv, benchN(consumeEvents), true, func(string, ...any) {})
	if err != nil {
		b.Fatal(err)
	}
	defer testEnv.DropDB(f.db)
	b.Run("one-batch", func(b *testing.B) {
		measure(b, f.n, func() (time.Duration, error) { return f.consumeOurs(ctx, bigQueue, f.bigT0, f.n) })
	})
	for _, lf := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("one-batch-lazyfetch-%d", lf), func(b *testing.B) {
			measure(b, f.n, func() (time.Duration, error) { return f.consumeWith(ctx, bigQueue, f.bigT0, f.n, lf) })
		})
	}
	b.Run("ticks-of-500", func(b *testing.B) {
		measure(b, f.ticksN, func() (time.Duration, error) { return f.consumeOurs(ctx, ticksQueue, f.ticksT0, f.ticksN) })
	})
	b.Run("ceiling", func(b *testing.B) { measure(b, f.n, func() (time.Duration, error) { return f.readCeiling(ctx) }) })
}

func BenchmarkRemoteCopy(b *testing.B) {
	ctx := context.Background()
	f, err := newConsumeFixture(ctx, testEnv, benchN(consumeEvents), false, func(string, ...any) {})
	if err != nil {
		b.Fatal(err)
	}
	defer testEnv.DropDB(f.db)
	rf, err := newRemoteFixture(ctx, testEnv)
	if err != nil {
		b.Fatal(err)
	}
	defer testEnv.DropDB(rf.dst)
	b.Run("ours", func(b *testing.B) { measure(b, f.n, func() (time.Duration, error) { return f.remoteOurs(ctx, rf) }) })
	b.Run("ceiling", func(b *testing.B) {
		measure(b, f.n, func() (time.Duration, error) {
			r, err := f.readCeiling(ctx)
			if err != nil {
				return 0, err
			}
			c, err := f.copyCeiling(ctx, rf)
			return r + c, err
		})
	})
}

// BenchmarkConsumerRSS reports the peak RSS of a child process (this test
// binary in child mode) consuming a batch with consumer defaults.
func BenchmarkConsumerRSS(b *testing.B) {
	ctx := context.Background()
	f, err := newConsumeFixture(ctx, testEnv, benchN(consumeEvents), false, func(string, ...any) {})
	if err != nil {
		b.Fatal(err)
	}
	defer testEnv.DropDB(f.db)
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	var peak float64
	for range b.N {
		r, err := f.rssChild(ctx, []string{exe, "-test.run=^$"})
		if err != nil {
			b.Fatal(err)
		}
		peak = max(peak, float64(r.MaxRSSKiB)/1024)
	}
	b.ReportMetric(peak, "MiB-peak-rss")
}

func BenchmarkLatency(b *testing.B) {
	ctx := context.Background()
	f, err := newLatencyFixture(ctx, testEnv, "latency", time.Second, latencyTick, latencyMaxLag)
	if err != nil {
		b.Fatal(err)
	}
	defer testEnv.DropDB(f.db)
	defer f.close()
	var listen, poll []float64
	for range b.N {
		s, err := f.run(ctx)
		if err != nil {
			b.Fatal(err)
		}
		listen, poll = append(listen, s.listen...), append(poll, s.poll...)
	}
	b.ReportMetric(percentile(listen, 50), "p50-ms")
	b.ReportMetric(percentile(listen, 99), "p99-ms")
	b.ReportMetric(percentile(poll, 50), "poll-p50-ms")
	b.ReportMetric(percentile(poll, 99), "poll-p99-ms")
}

func BenchmarkTicker1000Queues(b *testing.B) {
	ctx := context.Background()
	m, err := newManyQueues(ctx, testEnv, tickerQueues)
	if err != nil {
		b.Fatal(err)
	}
	defer testEnv.DropDB(m.db)
	if err := m.setBusy(ctx, true); err != nil {
		b.Fatal(err)
	}
	b.Run("ours", func(b *testing.B) {
		var ms float64
		for range b.N {
			o, _, err := m.ours(ctx, time.Second)
			if err != nil {
				b.Fatal(err)
			}
			ms += o
		}
		b.ReportMetric(ms/float64(b.N), "ms/round")
	})
	b.Run("ceiling", func(b *testing.B) {
		var ms float64
		for range b.N {
			c, err := m.ceiling(ctx, 5)
			if err != nil {
				b.Fatal(err)
			}
			ms += c
		}
		b.ReportMetric(ms/float64(b.N), "ms/round")
	})
}

// BenchmarkTargetedCopy reports delivered rows/s and hub CPU per row of
// a targeted-copy cluster (all nodes and the hub on the test server).
func BenchmarkTargetedCopy(b *testing.B) {
	ctx := context.Background()
	s := &suite{o: Options{Runs: 1}.withDefaults(), env: testEnv, logf: func(string, ...any) {}, rep: &Report{}}
	if err := s.ensureConnections(ctx, connsPerNode*16+60); err != nil {
		b.Fatal(err)
	}
	nodes, err := s.newTargetedNodes(ctx, 16)
	if err != nil {
		b.Fatal(err)
	}
	defer nodes.drop(testEnv)
	rows := benchN(targetedRows)
	for _, routing := range []copier.Routing{copier.RoutingShared, copier.RoutingPerTarget} {
		for _, n := range []int{4, 16} {
			b.Run(fmt.Sprintf("%v/N=%d", routing, n), func(b *testing.B) {
				c, err := s.newTargetedConfig(ctx, nodes, n, routing)
				if err != nil {
					b.Fatal(err)
				}
				defer c.close()
				if err := c.warmUp(ctx); err != nil {
					b.Fatal(err)
				}
				var total time.Duration
				var hub float64
				for i := range b.N {
					r, err := c.run(ctx, i, rows)
					if err != nil {
						b.Fatal(err)
					}
					total += time.Duration(float64(r.rows) / r.rate * float64(time.Second))
					hub += r.hubCPU / float64(r.rows) * 1e6
				}
				b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/op")
				b.ReportMetric(float64(rows)*float64(b.N)/total.Seconds(), "events/s")
				b.ReportMetric(hub/float64(b.N), "hub-µs/event")
			})
		}
	}
}

func TestParseVmHWM(t *testing.T) {
	kib, ok := parseVmHWM("Name:\tbench\nVmPeak:\t  900000 kB\nVmHWM:\t   24321 kB\nVmRSS:\t   20000 kB\n")
	if !ok || kib != 24321 {
		t.Fatalf("parseVmHWM = %d, %v; want 24321, true", kib, ok)
	}
	if _, ok := parseVmHWM("VmRSS:\t 1 kB\n"); ok {
		t.Fatal("no VmHWM line: want false")
	}
	// This process's own figure is readable and plausible.
	peak, err := peakRSSKiB()
	if err != nil || peak <= 0 {
		t.Fatalf("peakRSSKiB = %d, %v", peak, err)
	}
}
