// Package pgtest is the test harness for integration tests against a real
// PostgreSQL with pgq: a throwaway cluster per test binary (Main), a fresh
// database per test (Cluster.NewDB), a database with a queue and a consumer
// ready (Cluster.NewEnv), a dedicated cluster for tests that restart their
// server (NewCluster), and a TCP proxy that cuts or freezes connections
// (NewProxy).
//
// The cluster itself is managed by internal/pgcluster, which programs may
// link; this package imports testing and goleak, so only tests import it.
//
// Set PGQ_TEST_DSN to a superuser DSN to use an existing server instead of a
// throwaway cluster.
package pgtest

import (
	"os"
	"testing"

	"github.com/pgq-go/pgq/internal/pgcluster"
)

// EnvDSN names the environment variable that points tests at an existing
// server (a superuser DSN) instead of a throwaway cluster.
const EnvDSN = pgcluster.EnvDSN

// Cluster is a PostgreSQL server used by tests: a *pgcluster.Cluster (its
// methods Start, Stop, Kill, Restart, Close, Addr, DSN, DSNVia, External and
// CreateDB are promoted) with the helpers tests call on it (NewDB,
// NewPlainDB, NewEnv).
type Cluster struct {
	*pgcluster.Cluster
}

// Start starts a throwaway cluster, or connects to PGQ_TEST_DSN when set.
// The caller closes it.
func Start() (*Cluster, error) {
	c, err := pgcluster.Start()
	if err != nil {
		return nil, err
	}
	return &Cluster{c}, nil
}

// MustStart is Start for TestMain: it exits the process with a clear message
// when the cluster cannot start.
func MustStart() *Cluster {
	return &Cluster{pgcluster.MustStart()}
}

// Close stops the server and removes its directory; a nil Cluster is a
// no-op.
func (c *Cluster) Close() {
	if c == nil {
		return
	}
	c.Cluster.Close()
}

// NewCluster starts a dedicated throwaway cluster for a test that stops or
// restarts its server; it is removed when the test ends. With PGQ_TEST_DSN
// set, the test is skipped: an external server cannot be restarted.
func NewCluster(t testing.TB) *Cluster {
	t.Helper()
	if os.Getenv(EnvDSN) != "" {
		t.Skip("pgtest: fault test needs a throwaway cluster; unset " + EnvDSN)
	}
	c, err := Start()
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}
