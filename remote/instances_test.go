package remote_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/remote"
	"github.com/stretchr/testify/require"
)

// runInstanceProcess runs one instance of the RemoteConsumer "copier"
// (or, with KIND=serial, a SerialConsumer) until killed. It wakes on tick
// notifications only, so every instance calls next_batch at the same
// moment.
func runInstanceProcess(ctx context.Context) int {
	src, err := pgxpool.New(ctx, os.Getenv("SRC_DSN"))
	if err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	dst, err := pgxpool.New(ctx, os.Getenv("DST_DSN"))
	if err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	cfg := remote.Config{Consumer: consumer.Config{Queue: "q", Name: "copier", LazyFetch: 10,
		PollInterval: time.Hour,
		ErrorBackoff: consumer.Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond}}}
	if os.Getenv("PGQ_INSTANCE_DEBUG") != "" {
		cfg.Consumer.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("pid", os.Getpid())
	}
	h := copyHandler(nil)
	var run func(context.Context) error
	if os.Getenv("KIND") == "serial" {
		sc, err := remote.NewSerial(src, dst, cfg, h)
		if err != nil {
			fmt.Println("ERR", err)
			return 1
		}
		run = sc.Run
	} else {
		rc, err := remote.New(src, dst, cfg, h)
		if err != nil {
			fmt.Println("ERR", err)
			return 1
		}
		run = rc.Run
	}
	fmt.Println("STARTED")
	if err := run(ctx); err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	return 0
}

// startInstances starts n instance processes of one consumer; they are
// SIGKILLed at cleanup. Lines they print after STARTED go to errs.
func startInstances(t *testing.T, e *env, kind string, n int) (errs chan string) {
	t.Helper()
	errs = make(chan string, 100)
	for range n {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"=instance", "KIND="+kind,
			"SRC_DSN="+e.src.DSN, "DST_DSN="+e.dst.DSN)
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		cmd.Stderr = os.Stderr
		require.NoError(t, cmd.Start())
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()
		})
		started := make(chan struct{})
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if sc.Text() == "STARTED" {
					close(started)
					continue
				}
				select {
				case errs <- sc.Text():
				default:
				}
			}
		}()
		select {
		case <-started:
		case <-time.After(60 * time.Second):
			t.Fatal("instance did not start")
		}
	}
	return errs
}

// raceRounds produces rounds of events, each made visible by one tick
// followed by a notification that wakes every instance at once, and waits
// until all of them are applied.
func raceRounds(t *testing.T, e *env, rounds, perRound int) {
	t.Helper()
	ch := pgq.NotifyChannel("q")
	for r := range rounds {
		e.produce(t, r*perRound, perRound, plain)
		_, err := pgq.Tick(e.ctx, e.src.Pool, "q")
		require.NoError(t, err)
		_, err = e.src.Pool.Exec(e.ctx, "select pg_notify($1, '')", ch)
		require.NoError(t, err)
		want := (r + 1) * perRound
		require.Eventually(t, func() bool {
			var n int
			require.NoError(t, e.dst.Pool.QueryRow(e.ctx, "select count(distinct data) from applied").Scan(&n))
			if n < want {
				// a batch may have been dropped by a racing instance: wake them again
				_, _ = e.src.Pool.Exec(e.ctx, "select pg_notify($1, '')", ch)
			}
			return n >= want
		}, 60*time.Second, 5*time.Millisecond, "round %d", r)
	}
}

// TestRemoteConsumerInstancesRace runs three processes of one
// RemoteConsumer, all woken by the same tick notifications: PgQ's
// next_batch_custom reads sub_batch without a lock, so two of them can
// open two batches (two batch ids) over the same ticks. Every event must
// still be applied exactly once.
func TestRemoteConsumerInstancesRace(t *testing.T) {
	e := setup(t, cluster, cluster)
	errs := startInstances(t, e, "remote", 3)
	const rounds, perRound = 150, 3
	raceRounds(t, e, rounds, perRound)
	requireExactlyOnce(t, e.ctx, e.dst.Pool, rounds*perRound)
	select {
	case l := <-errs:
		t.Fatalf("an instance stopped: %s", l)
	default:
	}
}

// TestSerialConsumerInstancesRace is the same race for SerialConsumer: an
// instance that lost the race must neither apply twice nor stop with a
// false lost position.
func TestSerialConsumerInstancesRace(t *testing.T) {
	e := setup(t, cluster, cluster)
	errs := startInstances(t, e, "serial", 3)
	const rounds, perRound = 150, 3
	raceRounds(t, e, rounds, perRound)
	requireExactlyOnce(t, e.ctx, e.dst.Pool, rounds*perRound)
	select {
	case l := <-errs:
		t.Fatalf("an instance stopped: %s", l)
	default:
	}
}

// raceForeignAllocation reproduces, step by step, the race of two
// instances calling next_batch at once, where the other instance does not
// lock the subscription (python-pgq, an older pgq-go): our consumer (run
// by the caller after lock returns) allocates a batch and commits, while
// the other had read sub_batch as NULL before and then allocates a second
// batch id over the same ticks, committing only when release is called.
func raceForeignAllocation(t *testing.T, e *env) (lock func(), release func()) {
	t.Helper()
	ctx := e.ctx
	waiting := func(like string) func() bool {
		return func() bool {
			var n int
			require.NoError(t, e.src.Pool.QueryRow(ctx, `select count(*) from pg_stat_activity
				where datname = current_database() and wait_event_type = 'Lock' and query like $1`, like).Scan(&n))
			return n > 0
		}
	}
	tx0, err := e.src.Pool.Begin(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx0.Rollback(context.Background()) })
	_, err = tx0.Exec(ctx, `select 1 from pgq.subscription s join pgq.consumer c on c.co_id = s.sub_consumer
		where c.co_name = 'copier' for update of s`)
	require.NoError(t, err)
	tx2, err := e.src.Pool.Begin(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx2.Rollback(context.Background()) })
	allocated := make(chan error, 1)
	lock = func() {
		// Our consumer queues first for the row, then the other instance.
		require.Eventually(t, waiting("%pgq.next_batch:%"), 30*time.Second, 5*time.Millisecond)
		go func() {
			var id int64
			allocated <- tx2.QueryRow(ctx, "select batch_id from pgq.next_batch_custom('q', 'copier', null, null, null)").Scan(&id)
		}()
		require.Eventually(t, waiting("%next_batch_custom('q'%"), 30*time.Second, 5*time.Millisecond)
		require.NoError(t, tx0.Commit(ctx))
	}
	release = func() {
		select {
		case err := <-allocated:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Fatal("second allocation did not return")
		}
		require.NoError(t, tx2.Commit(ctx))
	}
	return lock, release
}

// TestTwoBatchIDsSameTicks drives the race deterministically: our
// consumer processes the first batch while another instance's second
// allocation is not yet committed, then the second batch (same ticks,
// another id) arrives. Batch-id tracking alone applied the events twice; a
// SerialConsumer must also not stop with a false lost position, and both
// must keep going afterwards.
func TestTwoBatchIDsSameTicks(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func(e *env) (func(context.Context) error, error)
	}{
		{"remote", func(e *env) (func(context.Context) error, error) {
			rc, err := remote.New(e.src.Pool, e.dst.Pool, e.cfg(), copyHandler(nil))
			if err != nil {
				return nil, err
			}
			return rc.Run, nil
		}},
		{"serial", func(e *env) (func(context.Context) error, error) {
			sc, err := remote.NewSerial(e.src.Pool, e.dst.Pool, e.cfg(), copyHandler(nil))
			if err != nil {
				return nil, err
			}
			return sc.Run, nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t, cluster, cluster)
			e.produce(t, 0, 5, plain)
			_, err := pgq.Tick(e.ctx, e.src.Pool, "q")
			require.NoError(t, err)
			lock, release := raceForeignAllocation(t, e)
			run, err := tc.run(e)
			require.NoError(t, err)
			stop := pgtest.Background(t, e.ctx, run)
			lock()
			// The first batch is applied; its finish waits for the second allocation.
			require.Eventually(t, func() bool {
				var n int
				require.NoError(t, e.dst.Pool.QueryRow(e.ctx, "select count(*) from applied").Scan(&n))
				return n >= 5
			}, 30*time.Second, 5*time.Millisecond)
			release()
			require.Eventually(t, func() bool {
				var open bool
				require.NoError(t, e.src.Pool.QueryRow(e.ctx, `select sub_batch is null from pgq.subscription s
					join pgq.consumer c on c.co_id = s.sub_consumer where c.co_name = 'copier'`).Scan(&open))
				return open
			}, 30*time.Second, 5*time.Millisecond, "second batch finished")
			// Another event after the race: the consumer keeps going.
			e.produce(t, 5, 1, plain)
			require.Eventually(t, e.pump(t, e.dst.Pool, 6), 30*time.Second, 10*time.Millisecond)
			require.NoError(t, stop())
			requireExactlyOnce(t, e.ctx, e.dst.Pool, 6)
		})
	}
}
