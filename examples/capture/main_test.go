package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/stretchr/testify/require"
)

var cluster *pgtest.Cluster

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, &cluster)) }

// TestDemo runs the demo on throwaway databases: every statement's rows
// reach exactly their targets, and the table says so.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	hub := cluster.NewDB(t)
	var specs []string
	for _, n := range []string{"n1", "n2", "n3"} {
		specs = append(specs, n+"="+cluster.NewDB(t).DSN)
	}
	var out strings.Builder
	ok, err := run(ctx, hub.DSN, specs, &out)
	require.NoError(t, err)
	require.True(t, ok, out.String())
	t.Log("\n" + out.String())
	require.Contains(t, out.String(), "n3: 1:alice/100  2:bob/260")
	require.Equal(t, 2, strings.Count(out.String(), "  OK\n"), out.String())
	require.NotContains(t, out.String(), "MISMATCH")

	_, err = run(ctx, hub.DSN, specs[:2], &out)
	require.ErrorContains(t, err, "want nodes n1, n2 and n3")
}
