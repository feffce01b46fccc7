package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// testOnlyDeps are import paths (or path prefixes ending in "/") that belong
// to tests and must not be linked into the operator binary.
var testOnlyDeps = []string{
	"testing",
	"testing/",
	"go.uber.org/goleak",
	"go.uber.org/goleak/",
	"github.com/stretchr/testify",
	"github.com/stretchr/testify/",
	"github.com/pgq-go/pgq/internal/pgtest",
	"github.com/pgq-go/pgq/internal/pgtest/",
}

// TestDepsHaveNoTestCode lists the packages linked into pgqctl (go list
// -deps, which leaves out the test files) and fails if any of them is test
// code: the testing package, goleak, testify or internal/pgtest.
func TestDepsHaveNoTestCode(t *testing.T) {
	// go test puts its own GOROOT/bin first on PATH, so "go" is this toolchain.
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	require.NoError(t, err, "go list -deps:\n%s", out)
	deps := strings.Fields(string(out))
	require.Contains(t, deps, "github.com/pgq-go/pgq/copier", "the listing must cover pgqctl's own imports")
	require.NotContains(t, deps, "github.com/pgq-go/pgq/bench/internal/harness", "the benchmark harness is its own command (go run ./bench)")
	var bad []string
	for _, dep := range deps {
		for _, p := range testOnlyDeps {
			if dep == p || (strings.HasSuffix(p, "/") && strings.HasPrefix(dep, p)) {
				bad = append(bad, dep)
			}
		}
	}
	require.Empty(t, bad, "pgqctl links test-only packages")
}
