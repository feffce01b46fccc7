package remote_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/remote"
	"github.com/stretchr/testify/require"
)

// The crash tests re-run this test binary as a child process that runs a
// RemoteConsumer and stops dead at a chosen point, announcing it on stdout;
// the parent then kills it with SIGKILL.
const helperEnv = "PGQ_REMOTE_HELPER"

// Crash points.
const (
	crashBeforeDstCommit = "before-dst-commit" // handler applied rows, dst not committed
	crashAfterDstCommit  = "after-dst-commit"  // dst committed, src not finished
	crashMidStream       = "mid-stream"        // half the batch read and applied
)

func runHelperProcess() int {
	point := os.Getenv(helperEnv)
	ctx := context.Background()
	if point == "instance" {
		return runInstanceProcess(ctx)
	}
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
	stop := func() {
		fmt.Println("STOPPED")
		os.Stdout.Sync()
		select {} // wait for SIGKILL
	}
	if point == crashAfterDstCommit {
		remote.SetAfterDstCommit(func(int64) { stop() })
	}
	h := copyHandler(func(n int) {
		if point == crashMidStream && n == 50 {
			stop()
		}
	})
	if os.Getenv("PIPE") == "1" {
		h = pipeHandler(nil)
	}
	rc, err := remote.New(src, dst, remote.Config{Consumer: consumer.Config{Queue: "q", Name: "copier", LazyFetch: 10}},
		remote.HandlerFunc(func(ctx context.Context, b *pgq.Batch, tx pgx.Tx) error {
			if err := h.ProcessRemoteBatch(ctx, b, tx); err != nil {
				return err
			}
			if point == crashBeforeDstCommit {
				stop()
			}
			return nil
		}))
	if err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	if err := rc.Run(ctx); err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	return 0
}

// copyHandler applies each event as a row of dst table applied; events
// whose data starts with "retry" are tagged for retry on their first
// delivery and applied on the next. progress is called after each event.
func copyHandler(progress func(n int)) remote.Handler {
	return remote.HandlerFunc(func(ctx context.Context, b *pgq.Batch, tx pgx.Tx) error {
		n := 0
		for ev, err := range b.Events(ctx) {
			if err != nil {
				return err
			}
			n++
			if strings.HasPrefix(ev.Data.String, "retry") && ev.Retry == 0 {
				ev.TagRetry(0)
			} else if _, err := tx.Exec(ctx, "insert into applied (ev_id, data, retry) values ($1, $2, $3)",
				ev.ID, ev.Data.String, ev.Retry); err != nil {
				return err
			}
			if progress != nil {
				progress(n)
			}
		}
		return nil
	})
}

// crashAt starts a child consumer and SIGKILLs it when it reaches point.
// With pipe, the child's handler writes through remote.Pipeline.
func crashAt(t *testing.T, point string, pipe bool, srcDSN, dstDSN string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+point, "SRC_DSN="+srcDSN, "DST_DSN="+dstDSN)
	if pipe {
		cmd.Env = append(cmd.Env, "PIPE=1")
	}
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	select {
	case l := <-lines:
		require.Equal(t, "STOPPED", l, "child said %q", l)
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("child never reached " + point)
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	err = cmd.Wait()
	require.Error(t, err, "killed")
	for range lines { // drain
	}
}
