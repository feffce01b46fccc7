package copier_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/copier"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestTargetedCopySmallHubPools: each node runs as its own process would,
// with a hub pool of its own of a single connection. Relays, pulls and
// target registrations take turns on it (none holds a hub connection while
// it waits for another, or a pool of one would deadlock), every row
// arrives once, and each node holds at most two hub backends: that
// connection and the shared-routing pull's listener (consumer/listen.go),
// which connects with the pool's configuration beside it.
func TestTargetedCopySmallHubPools(t *testing.T) {
	t.Parallel()
	cc := newCopyCluster(t, 4, 1, copier.RoutingShared, func(int) *pgtest.Cluster { return cluster }, cluster)
	cc.setupAll()
	cc.startTicker()
	for _, n := range cc.nodes {
		cfg := cc.config(n)
		cfg.Hubs = []*pgxpool.Pool{hubPool(t, cc, cc.hubs[0].DSN, 1, "small-pool-"+n)}
		runCopier(t, cc.ctx, cfg)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for round := range 5 {
		for _, n := range cc.nodes {
			cc.produce(n, 30+round, rng)
		}
	}
	require.Eventually(t, cc.delivered, 90*time.Second, 50*time.Millisecond)
	cc.verify()
	rows, err := cc.hubs[0].Pool.Query(cc.ctx, `select application_name, count(*) from pg_stat_activity
		where datname = current_database() and application_name like 'small-pool-%' group by 1`)
	require.NoError(t, err)
	defer rows.Close()
	seen := 0
	for rows.Next() {
		var app string
		var k int
		require.NoError(t, rows.Scan(&app, &k))
		require.LessOrEqual(t, k, 2, "%s hub backends: the pool's one and the listener", app)
		seen++
	}
	require.NoError(t, rows.Err())
	require.Equal(t, len(cc.nodes), seen)
}

// hubPool is a node's own hub pool: dsn, at most maxConns connections,
// application name app; closed when the test ends.
func hubPool(t *testing.T, cc *copyCluster, dsn string, maxConns int32, app string) *pgxpool.Pool {
	t.Helper()
	pc, err := pgxpool.ParseConfig(dsn)
	require.NoError(t, err)
	pc.MaxConns = maxConns
	pc.ConnConfig.RuntimeParams["application_name"] = app
	pool, err := pgxpool.NewWithConfig(cc.ctx, pc)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}
