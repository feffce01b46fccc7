package pgtest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

var cluster *Cluster

func TestMain(m *testing.M) {
	cluster = MustStart()
	code := m.Run()
	cluster.Close()
	os.Exit(code)
}

func TestNewDBHasPgq(t *testing.T) {
	t.Parallel()
	db := cluster.NewDB(t)
	var v string
	require.NoError(t, db.Pool.QueryRow(context.Background(), "select pgq.version()").Scan(&v))
	require.Regexp(t, `^3\.`, v)

	plain := cluster.NewPlainDB(t)
	var n int
	require.NoError(t, plain.Pool.QueryRow(context.Background(),
		"select count(*) from pg_namespace where nspname = 'pgq'").Scan(&n))
	require.Equal(t, 0, n)
}

func TestProxyCutAndRestore(t *testing.T) {
	t.Parallel()
	db := cluster.NewPlainDB(t)
	p := NewProxy(t, cluster.Addr())
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, cluster.DSNVia(p.Addr(), db.Name))
	require.NoError(t, err)
	defer conn.Close(ctx)
	require.NoError(t, conn.Ping(ctx))

	p.Cut()
	require.Error(t, conn.Ping(ctx))
	_, err = pgx.Connect(ctx, cluster.DSNVia(p.Addr(), db.Name))
	require.Error(t, err)

	p.Restore()
	conn2, err := pgx.Connect(ctx, cluster.DSNVia(p.Addr(), db.Name))
	require.NoError(t, err)
	require.NoError(t, conn2.Ping(ctx))
	conn2.Close(ctx)
}

func TestRestartAndCleanup(t *testing.T) {
	t.Parallel()
	c := NewCluster(t)
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
