package pgtest

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Main is a package's TestMain body: it starts one cluster for the test
// binary into *c, runs each setup step on it, runs the tests, removes the
// cluster and, when the tests passed, fails the run if any goroutine leaked.
// It returns the exit code:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, &cluster)) }
//
// A setup step that fails stops the run before any test (exit code 2).
func Main(m *testing.M, c **Cluster, setup ...func(*Cluster) error) int {
	*c = MustStart()
	code := func() int {
		for _, s := range setup {
			if err := s(*c); err != nil {
				fmt.Fprintf(os.Stderr, "pgtest: setup: %v\n", err)
				return 2
			}
		}
		return m.Run()
	}()
	(*c).Close()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	return code
}

// ExamplesDB is a setup step for Main: it creates database name with the
// pgq extension and points DATABASE_URL at it, because runnable Example
// functions read DATABASE_URL like the programs users copy them into.
func ExamplesDB(name string) func(*Cluster) error {
	return func(c *Cluster) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		dsn, err := c.CreateDB(ctx, name, true)
		if err != nil {
			return fmt.Errorf("examples database: %w", err)
		}
		return os.Setenv("DATABASE_URL", dsn)
	}
}
