package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// cluster is the test server shared by every pgqctl command's tests.
var cluster *pgtest.Cluster

func TestMain(m *testing.M) {
	os.Exit(pgtest.Main(m, &cluster))
}

func TestRegistry(t *testing.T) {
	register("test-echo", "echo args (test)", func(_ context.Context, args []string, stdout, _ io.Writer) int {
		fmt.Fprint(stdout, strings.Join(args, " "))
		return 3
	})
	t.Cleanup(func() { delete(commands, "test-echo") })
	ctx := context.Background()
	var out, errOut strings.Builder

	require.Equal(t, 3, run(ctx, []string{"test-echo", "a", "b"}, &out, &errOut))
	require.Equal(t, "a b", out.String())

	out.Reset()
	require.Equal(t, exitUsage, run(ctx, nil, &out, &errOut))
	require.Contains(t, errOut.String(), "test-echo")
	require.Contains(t, errOut.String(), "ticker")

	errOut.Reset()
	require.Equal(t, exitUsage, run(ctx, []string{"nope"}, &out, &errOut))
	require.Contains(t, errOut.String(), `unknown command "nope"`)

	out.Reset()
	require.Equal(t, 0, run(ctx, []string{"help"}, &out, &errOut))
	require.Contains(t, out.String(), "usage: pgqctl")

	require.Panics(t, func() { register("test-echo", "", nil) })

	register("test-panic", "", func(context.Context, []string, io.Writer, io.Writer) int { panic("boom") })
	t.Cleanup(func() { delete(commands, "test-panic") })
	errOut.Reset()
	require.Equal(t, 1, run(ctx, []string{"test-panic"}, &out, &errOut))
	require.Equal(t, "pgqctl test-panic: internal error: boom\n", errOut.String(), "no stack trace")

	errOut.Reset()
	require.Equal(t, exitUsage, run(ctx, []string{"ticker", "--bogus"}, &out, &errOut))
	require.Equal(t, 0, run(ctx, []string{"ticker", "--help"}, &out, &errOut))
}
