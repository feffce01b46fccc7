package pgcluster

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

var cluster *Cluster

func TestMain(m *testing.M) {
	cluster = MustStart()
	code := m.Run()
	cluster.Close()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

func TestCreateAndDropDB(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := fmt.Sprintf("pgcluster_%d", os.Getpid())
	dsn, err := cluster.CreateDB(ctx, name, true)
	require.NoError(t, err)
	conn, err := pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	var db, v string
	require.NoError(t, conn.QueryRow(ctx, "select current_database(), pgq.version()").Scan(&db, &v))
	require.Equal(t, name, db)
	require.Regexp(t, `^3\.`, v)

	// DropDB closes what is still connected.
	require.NoError(t, cluster.DropDB(ctx, name))
	require.Error(t, conn.Ping(ctx), "the connection must be gone with its database")
	conn.Close(ctx)
	_, err = pgx.Connect(ctx, dsn)
	require.Error(t, err, "the database must be gone")
	require.NoError(t, cluster.DropDB(ctx, name), "dropping a dropped database is no error")

	plain := name + "_plain"
	dsn, err = cluster.CreateDB(ctx, plain, false)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cluster.DropDB(context.Background(), plain) })
	conn, err = pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var n int
	require.NoError(t, conn.QueryRow(ctx, "select count(*) from pg_namespace where nspname = 'pgq'").Scan(&n))
	require.Equal(t, 0, n)
}

// TestConcurrentCreateDB: creations with pgq run at the same time must all
// succeed (the extension's cluster-wide roles are created once).
func TestConcurrentCreateDB(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	errs := make(chan error, 4)
	for i := range cap(errs) {
		name := fmt.Sprintf("pgcluster_%d_c%d", os.Getpid(), i)
		t.Cleanup(func() { _ = cluster.DropDB(context.Background(), name) })
		go func() {
			_, err := cluster.CreateDB(ctx, name, true)
			errs <- err
		}()
	}
	for range cap(errs) {
		require.NoError(t, <-errs)
	}
}

func TestRestartAndCleanup(t *testing.T) {
	t.Parallel()
	if os.Getenv(EnvDSN) != "" {
		t.Skip("pgcluster: restart needs a throwaway cluster; unset " + EnvDSN)
	}
	c, err := Start()
	require.NoError(t, err)
	t.Cleanup(c.Close)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	require.NoError(t, err)
	require.NoError(t, c.Restart())
	require.Error(t, conn.Ping(ctx), "old connection must be broken by the restart")
	conn2, err := pgx.Connect(ctx, c.DSN("postgres"))
	require.NoError(t, err)
	conn2.Close(ctx)

	require.NoError(t, c.Kill())
	require.NoError(t, c.Start(), "start after crash runs recovery")
	dir := c.dir
	c.Close()
	require.Eventually(t, func() bool {
		_, err := os.Stat(dir)
		return os.IsNotExist(err)
	}, 10*time.Second, 20*time.Millisecond, "cluster directory must be removed")
}

// TestStartWithMaxConnections: Options.MaxConnections sets the server's
// max_connections; Start keeps the default of 300; a negative value is
// refused before anything starts.
func TestStartWithMaxConnections(t *testing.T) {
	t.Parallel()
	if os.Getenv(EnvDSN) != "" {
		t.Skip("pgcluster: options need a throwaway cluster; unset " + EnvDSN)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	maxConns := func(c *Cluster) string {
		conn, err := pgx.Connect(ctx, c.DSN("postgres"))
		require.NoError(t, err)
		defer conn.Close(ctx)
		var v string
		require.NoError(t, conn.QueryRow(ctx, "show max_connections").Scan(&v))
		return v
	}
	require.Equal(t, "300", maxConns(cluster), "Start's default")

	c, err := StartWith(Options{MaxConnections: 450})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	require.Equal(t, "450", maxConns(c))

	_, err = StartWith(Options{MaxConnections: -1})
	require.ErrorContains(t, err, "MaxConnections")
}
