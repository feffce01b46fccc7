package consumer_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

// helperEnv holds the DSN when the test binary runs as a consumer
// subprocess (see helperProcess).
const helperEnv = "PGQ_CONSUMER_HELPER_DSN"

// helperProcess is a consumer in its own process: it prints "ev <batch>
// <id>" for each event it reads and, after the third event of a batch,
// "hang <batch>", then blocks mid-batch until it is killed.
func helperProcess() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	pool, err := pgxpool.New(ctx, os.Getenv(helperEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer pool.Close()
	h := consumer.BatchHandlerFunc(func(ctx context.Context, b *pgq.Batch) error {
		n := 0
		for ev, err := range b.Events(ctx) {
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stdout, "ev %d %d\n", b.ID(), ev.ID)
			if n++; n == 3 {
				fmt.Fprintf(os.Stdout, "hang %d\n", b.ID())
				<-ctx.Done()
				return ctx.Err()
			}
		}
		return nil
	})
	c, err := consumer.New(pool, consumer.Config{Queue: "q", Name: "c", LazyFetch: 2,
		PollInterval: 20 * time.Millisecond}, h)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := c.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func TestKilledMidBatch(t *testing.T) {
	t.Parallel()
	e := setup(t)
	first := e.Produce(t, 8, nil)
	e.Tick(t)
	second := e.Produce(t, 5, nil)
	e.Tick(t)

	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"="+e.DB.DSN)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var (
		sub     []int64
		batch   int64
		timeout = time.After(60 * time.Second)
	)
wait:
	for {
		select {
		case l, ok := <-lines:
			require.True(t, ok, "subprocess ended early")
			f := strings.Fields(l)
			b, _ := strconv.ParseInt(f[1], 10, 64)
			batch = b
			if f[0] == "hang" {
				break wait
			}
			id, _ := strconv.ParseInt(f[2], 10, 64)
			sub = append(sub, id)
		case <-timeout:
			t.Fatal("subprocess did not reach the middle of a batch")
		}
	}
	require.Equal(t, first[:3], sub, "the subprocess was mid-batch")
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	killed = true
	_ = cmd.Wait()
	for range lines { // drain
	}
	require.Equal(t, batch, e.Info(t).CurrentBatch, "the killed consumer's batch stays open")

	col := &collector{}
	e.start(t, e.cfg(t), col)
	all := append(slices.Clone(first), second...)
	col.waitIDs(t, all, 30*time.Second)
	got, batches := col.snapshot()
	require.Equal(t, batch, batches[0].ID, "the same batch is delivered again after the crash")
	require.Equal(t, batch, got[0].batch)
	require.Equal(t, all, col.ids(), "every event once after restart, nothing skipped")
}

func TestPostgresRestartMidBatch(t *testing.T) {
	t.Parallel()
	pc := pgtest.NewCluster(t)
	e := setupOn(t, pc)
	// The consumer gets its own pool: the test's producer must not share
	// its broken connections.
	cpool, err := pgxpool.New(e.Ctx, e.DB.DSN)
	require.NoError(t, err)
	t.Cleanup(cpool.Close)

	var (
		holdOnce sync.Once
		inBatch  = make(chan int64, 1)
		release  = make(chan struct{})
		mu       sync.Mutex
		attempts = map[int64]int{}
	)
	col := &collector{before: func(ctx context.Context, b *pgq.Batch) error {
		mu.Lock()
		attempts[b.ID()]++
		mu.Unlock()
		// Hold the second batch open while PostgreSQL restarts.
		if b.Info.PrevTickID > 1 {
			holdOnce.Do(func() {
				inBatch <- b.ID()
				<-release
			})
		}
		return nil
	}}
	var failures counter
	cfg := e.cfg(t)
	cfg.Hooks.OnError = func(consumer.ErrorInfo) { failures.inc() }
	startOn(t, e.Ctx, cpool, cfg, col)

	before := e.Produce(t, 50, nil)
	e.Tick(t)
	col.waitIDs(t, before, 30*time.Second)

	during := e.Produce(t, 50, nil)
	e.Tick(t)
	var held int64
	select {
	case held = <-inBatch:
	case <-time.After(30 * time.Second):
		t.Fatal("second batch not delivered")
	}
	require.NoError(t, pc.Restart())
	close(release) // the handler returns nil, but finish_batch cannot reach the server

	// The producer's pool may hand out a broken connection first.
	var after []int64
	require.Eventually(t, func() bool {
		ids, err := e.TryProduce(50, nil)
		if err != nil {
			return false
		}
		after = ids
		_, err = pgq.Tick(e.Ctx, e.Pool, e.Queue)
		return err == nil
	}, 30*time.Second, 50*time.Millisecond)

	all := slices.Concat(before, during, after)
	col.waitIDs(t, all, 60*time.Second)
	require.Positive(t, failures.get(), "the restart was noticed")
	mu.Lock()
	require.GreaterOrEqual(t, attempts[held], 2, "the held batch was processed again after the restart")
	mu.Unlock()
	got := col.ids()
	// At-least-once: the interrupted batch repeats, nothing is missing.
	for _, id := range all {
		require.Contains(t, got, id)
	}
	require.Subset(t, all, got)
}

// TestConnectionCutListenerRecovers: after a network cut the tick listener
// reconnects, so notifications wake the consumer again (its poll interval
// is far too long to be what delivers the events).
func TestConnectionCutListenerRecovers(t *testing.T) {
	t.Parallel()
	e := setup(t)
	proxy := pgtest.NewProxy(t, cluster.Addr())
	cpool, err := pgxpool.New(e.Ctx, cluster.DSNVia(proxy.Addr(), e.DB.Name))
	require.NoError(t, err)
	t.Cleanup(cpool.Close)

	col := &collector{}
	var idle, failures counter
	cfg := e.cfg(t)
	cfg.PollInterval = 10 * time.Minute
	cfg.Hooks.OnIdle = idle.inc
	cfg.Hooks.OnError = func(consumer.ErrorInfo) { failures.inc() }
	startOn(t, e.Ctx, cpool, cfg, col)
	idle.waitAbove(t, 0)

	notifyUntil := func(ids []int64, tick int64) {
		require.Eventually(t, func() bool {
			_, err := e.Pool.Exec(e.Ctx, "select pg_notify($1, $2)", pgq.NotifyChannel(e.Queue), strconv.FormatInt(tick, 10))
			require.NoError(t, err)
			got := col.ids()
			for _, id := range ids {
				if !slices.Contains(got, id) {
					return false
				}
			}
			return true
		}, 30*time.Second, 50*time.Millisecond)
	}
	first := e.Produce(t, 2, nil)
	firstTick := e.Tick(t)
	notifyUntil(first, firstTick)
	// The handler has seen them; cut only once the batch is finished too
	// (a cut before its commit redelivers it, as it should).
	require.Eventually(t, func() bool { return e.Info(t).LastTick == firstTick }, 30*time.Second, 10*time.Millisecond)

	proxy.Cut()
	// The events of this tick wait for the network.
	second := e.Produce(t, 2, nil)
	tick := e.Tick(t)
	proxy.Restore()
	notifyUntil(second, tick)
	require.Equal(t, slices.Concat(first, second), col.ids())
}
