package pgtest

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// Main is a package's TestMain body: it starts one cluster for the test
// binary into *c, runs the tests, removes the cluster and, when the tests
// passed, fails the run if any goroutine leaked. It returns the exit code:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, &cluster)) }
func Main(m *testing.M, c **Cluster) int {
	*c = MustStart()
	code := m.Run()
	(*c).Close()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	return code
}
