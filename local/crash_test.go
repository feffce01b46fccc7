package local_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/local"
	"github.com/stretchr/testify/require"
)

// helperEnv makes the test binary a local consumer subprocess (see
// helperProcess), configured by the other helper variables.
const (
	helperEnv     = "PGQ_LOCAL_HELPER"
	helperSrc     = "PGQ_LOCAL_HELPER_SRC"
	helperDst     = "PGQ_LOCAL_HELPER_DST"
	helperFile    = "PGQ_LOCAL_HELPER_FILE"
	helperDieTick = "PGQ_LOCAL_HELPER_DIE_TICK"
)

// helperProcess runs a local consumer of q as c that inserts each event
// into the destination's applied table (by "go-killed"), one transaction
// per batch. When it has written the tick named by helperDieTick to the
// tracking file, before finish_batch, it prints "saved <batch> <tick>" and
// stops dead, waiting for SIGKILL.
func helperProcess() int {
	ctx := context.Background()
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "helper:", err); return 2 }
	src, err := pgxpool.New(ctx, os.Getenv(helperSrc))
	if err != nil {
		return fail(err)
	}
	dst, err := pgxpool.New(ctx, os.Getenv(helperDst))
	if err != nil {
		return fail(err)
	}
	die, err := strconv.ParseInt(os.Getenv(helperDieTick), 10, 64)
	if err != nil {
		return fail(err)
	}
	local.SetAfterSave(func(batchID, tick int64) {
		if tick == die {
			fmt.Printf("saved %d %d\n", batchID, tick)
			_ = os.Stdout.Sync()
			time.Sleep(time.Hour) // until killed
		}
	})
	lc, err := local.New(src, local.Config{
		Consumer:     consumer.Config{Queue: "q", Name: "c", PollInterval: 20 * time.Millisecond},
		TrackingFile: os.Getenv(helperFile),
	}, &applier{dst: dst, by: "go-killed"})
	if err != nil {
		return fail(err)
	}
	if err := lc.Run(ctx); err != nil {
		return fail(err)
	}
	return 0
}

// killAfterSave runs helperProcess on e until it has written tick to the
// tracking file, kills it with SIGKILL there and returns the batch it was
// finishing.
func killAfterSave(t *testing.T, e *env, tick int64) int64 {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=1", helperSrc+"="+e.DB.DSN, helperDst+"="+e.dst.DSN,
		helperFile+"="+e.file, helperDieTick+"="+strconv.FormatInt(tick, 10))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	waited := false
	t.Cleanup(func() {
		if !waited {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	line := make(chan string, 1)
	go func() {
		defer close(line)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "saved ") {
				line <- sc.Text()
			}
		}
	}()
	var got string
	select {
	case l, ok := <-line:
		require.True(t, ok, "the subprocess ended before saving tick %d", tick)
		got = l
	case <-time.After(60 * time.Second):
		t.Fatalf("the subprocess did not save tick %d", tick)
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	waited = true
	_ = cmd.Wait()
	for range line { // drain
	}
	f := strings.Fields(got)
	batch, err := strconv.ParseInt(f[1], 10, 64)
	require.NoError(t, err)
	require.Equal(t, strconv.FormatInt(tick, 10), f[2])
	return batch
}

// TestKilledAfterFileWrite: a local consumer process is killed with
// SIGKILL after writing a batch's end tick to the tracking file and
// before finish_batch. After a restart the destination holds every event
// exactly once: the batch, still open on the queue, is finished without
// being applied again.
func TestKilledAfterFileWrite(t *testing.T) {
	t.Parallel()
	e := setup(t)
	t1 := e.Info(t).LastTick
	first := e.Produce(t, 5, nil)
	t2 := e.Tick(t)
	second := e.Produce(t, 3, nil)
	t3 := e.Tick(t)

	batch := killAfterSave(t, e, t2)
	require.Equal(t, t2, e.fileTick(t), "killed after the file write")
	info := e.Info(t)
	require.Equal(t, t1, info.LastTick, "killed before finish_batch")
	require.Equal(t, batch, info.CurrentBatch, "the batch stays open")
	e.requireExactlyOnce(t, first)

	a := &applier{dst: e.dst.Pool, by: "go"}
	var finished batchLog
	var errs counter
	cfg := e.cfg(t)
	cfg.Consumer.Hooks.OnBatch = finished.add
	cfg.Consumer.Hooks.OnError = func(consumer.ErrorInfo) { errs.inc() }
	e.start(t, cfg, a)
	e.waitQueueTick(t, t3)

	e.requireExactlyOnce(t, first, second)
	require.NotContains(t, a.batchIDs(), batch, "the killed process's batch is not applied again")
	require.Equal(t, batch, finished.ids()[0], "it is finished after the restart")
	require.Zero(t, errs.get())
	require.Equal(t, t3, e.fileTick(t))
}
