package pgqtest_test

import (
	"os"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/stretchr/testify/require"
)

var cluster *pgtest.Cluster

func TestMain(m *testing.M) {
	os.Exit(pgtest.Main(m, &cluster, pgtest.ExamplesDB("pgqtest_examples")))
}

// sharedPool is a pool on the one database every test of this package
// shares (the examples database), as a user's test suite would share
// theirs: pgqtest's queues keep the tests apart. It is closed by a cleanup
// registered before the test's queues, so it outlives their drop.
func sharedPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), os.Getenv("DATABASE_URL"))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}
