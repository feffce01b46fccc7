package harness

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSeedFamily runs the seed family once on a few hundred rows: both
// sides deliver every row to its target (the family checks the nodes'
// tables per side and fails otherwise) and every figure is measured.
func TestSeedFamily(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var table bytes.Buffer
	rep, err := Run(ctx, Options{Runs: 1, Scale: 0.005, Cases: []string{"seed"}, DSN: testDSN()}, &table)
	require.NoError(t, err, table.String())
	require.Len(t, rep.Results, 3, table.String())
	for i, want := range []string{"backlog drain", "producers' rows/s", "last commit → last row applied"} {
		r := rep.Results[i]
		require.Contains(t, r.Case, want)
		require.Positive(t, r.Ours, r.Case)
		require.Positive(t, r.Ceiling, r.Case)
		require.Positive(t, r.Ratio, r.Case)
	}
	require.NotNil(t, rep.Results[0].Met, "the drain has a target")
	require.NotNil(t, rep.Results[2].Met, "the lag has a target")
	require.True(t, strings.Contains(table.String(), "the seed in Go"), table.String())
}
