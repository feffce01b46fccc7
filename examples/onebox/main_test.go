package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

var cluster *pgtest.Cluster

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, &cluster)) }

// TestOnebox runs the program's producer, ticker and consumer: every event
// is printed once, in order, and the run stops by itself after N.
func TestOnebox(t *testing.T) {
	t.Parallel()
	db := cluster.NewDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o := options{N: 5, Every: 20 * time.Millisecond, Lag: 20 * time.Millisecond, Queue: "onebox"}
	var out bytes.Buffer
	require.NoError(t, run(ctx, db.DSN, o, &out))

	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, o.N, out.String())
	for i, l := range lines {
		require.True(t, strings.HasPrefix(l, fmt.Sprintf("consumed %d/%d: ", i+1, o.N)), l)
		require.Contains(t, l, fmt.Sprintf(" seq %d, ", i+1))
	}
	qi, err := pgq.GetQueueInfo(ctx, db.Pool, "onebox")
	require.NoError(t, err)
	require.Equal(t, o.Lag, qi.TickerMaxLag, "the low-latency queue config")
	cs, err := pgq.ListConsumers(ctx, db.Pool, "onebox")
	require.NoError(t, err)
	require.Empty(t, cs, "the consumer unregisters on the way out")
}

// TestOneboxInterrupted: cancelling the context (SIGINT in main) stops
// every part and reports how far it got, without an error.
func TestOneboxInterrupted(t *testing.T) {
	t.Parallel()
	db := cluster.NewDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o := options{N: 1000, Every: 20 * time.Millisecond, Lag: 20 * time.Millisecond, Queue: "onebox"}
	w := &lineWriter{first: make(chan string, 1)}
	done := make(chan error, 1)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { done <- run(runCtx, db.DSN, o, w) }()
	select {
	case first := <-w.first:
		require.True(t, strings.HasPrefix(first, "consumed 1/1000: "), first)
	case err := <-done:
		t.Fatalf("run returned before consuming: %v", err)
	}
	stop()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(time.Minute):
		t.Fatal("run did not return after the interrupt")
	}
	require.Regexp(t, `stopped after \d+ of 1000 events\n$`, w.String())
}

// lineWriter collects output from another goroutine and sends the first
// complete line on first.
type lineWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	first chan string
	sent  bool
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if l, _, ok := strings.Cut(w.buf.String(), "\n"); ok && !w.sent {
		w.sent = true
		w.first <- l
	}
	return len(p), nil
}

func (w *lineWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
