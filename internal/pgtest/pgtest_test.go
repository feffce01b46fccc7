package pgtest

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

var cluster *Cluster

const examplesDB = "pgtest_examples"

func TestMain(m *testing.M) {
	os.Exit(Main(m, &cluster, ExamplesDB(examplesDB)))
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

// TestMainRanSetup: Main ran the ExamplesDB step before the tests.
func TestMainRanSetup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, os.Getenv("DATABASE_URL"))
	require.NoError(t, err)
	defer conn.Close(ctx)
	var name, v string
	require.NoError(t, conn.QueryRow(ctx, "select current_database(), pgq.version()").Scan(&name, &v))
	require.Equal(t, examplesDB, name)
	require.Regexp(t, `^3\.`, v)
}

func TestNewEnv(t *testing.T) {
	t.Parallel()
	e := cluster.NewEnv(t)
	require.Same(t, e.DB.Pool, e.Pool)
	info := e.Info(t)
	require.Equal(t, e.Queue, info.Queue)
	require.Equal(t, e.Consumer, info.Name)

	ids := e.Produce(t, 3, nil)
	require.Len(t, ids, 3)
	tick := e.Tick(t)
	require.Greater(t, tick, info.LastTick, "Tick makes a new tick even without a ticker")

	b, err := pgq.NextBatch(e.Ctx, e.Pool, e.Queue, e.Consumer)
	require.NoError(t, err)
	require.NotNil(t, b)
	evs, err := pgq.NewBatch(e.Pool, e.Queue, e.Consumer, *b, pgq.ReadOptions{}).All(e.Ctx)
	require.NoError(t, err)
	var got []string
	for i, ev := range evs {
		require.Equal(t, ids[i], ev.ID)
		require.Equal(t, "t", ev.Type.String)
		got = append(got, ev.Data.String)
	}
	require.Equal(t, []string{"0", "1", "2"}, got)

	other := *e
	other.Queue = "nope"
	_, err = other.TryProduce(1, nil)
	require.ErrorIs(t, err, pgq.ErrQueueNotFound, "TryProduce returns the insert's error")
}
