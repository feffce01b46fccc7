package copier_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/copier"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestTargetedCopyThroughPgBouncer: every node's hub pool goes through
// PgBouncer in transaction pooling (two server connections for all
// nodes), with default_query_exec_mode=exec (pgx's statement cache names
// prepared statements, which transaction pooling cannot keep); the pull's
// LISTEN connection goes to PostgreSQL directly (Config.HubListen). Rows
// flow while PgBouncer is SIGKILLed and restarted mid-stream (every hub
// connection cut, some inside a transaction); every row arrives once, and
// the hub serves the nodes with one listener each plus PgBouncer's two
// connections.
func TestTargetedCopyThroughPgBouncer(t *testing.T) {
	t.Parallel()
	cc := newCopyCluster(t, 4, 1, copier.RoutingShared, func(int) *pgtest.Cluster { return cluster }, cluster)
	cc.setupAll()
	cc.startTicker()
	const serverConns = 2
	b := pgtest.NewPgBouncer(t, cluster.Addr(), "transaction", serverConns)
	for _, n := range cc.nodes {
		pool := hubPool(t, cc, cluster.DSNVia(b.Addr(), cc.hubs[0].Name)+" default_query_exec_mode=exec", 2, "via-pgbouncer")
		direct, err := pgx.ParseConfig(cc.hubs[0].DSN)
		require.NoError(t, err)
		direct.RuntimeParams["application_name"] = "listener-" + n
		cfg := cc.config(n)
		cfg.Hubs = []*pgxpool.Pool{pool}
		cfg.HubListen = []*pgx.ConnConfig{direct}
		runCopier(t, cc.ctx, cfg)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for round := range 6 {
		for _, n := range cc.nodes {
			cc.produce(n, 30+round, rng)
		}
		if round == 2 {
			b.Kill()
		}
	}
	require.Eventually(t, cc.delivered, 90*time.Second, 50*time.Millisecond)
	cc.verify()

	count := func(app string) int {
		var k int
		require.NoError(t, cc.hubs[0].Pool.QueryRow(cc.ctx, `select count(*) from pg_stat_activity
			where datname = current_database() and application_name like $1`, app).Scan(&k))
		return k
	}
	require.Equal(t, len(cc.nodes), count("listener-%"), "one listener per node")
	require.LessOrEqual(t, count("via-pgbouncer"), serverConns, "PgBouncer's server connections")
}

// TestHubListenOnePerHub: HubListen, when set, has one entry per hub.
func TestHubListenOnePerHub(t *testing.T) {
	t.Parallel()
	cc := newCopyCluster(t, 1, 1, copier.RoutingShared, func(int) *pgtest.Cluster { return cluster }, cluster)
	cfg := cc.config("n1")
	cfg.HubListen = []*pgx.ConnConfig{nil, nil}
	_, err := copier.New(cfg)
	require.ErrorContains(t, err, "Config.HubListen has 2 entries for 1 hubs")
	cfg.HubListen = []*pgx.ConnConfig{nil}
	_, err = copier.New(cfg)
	require.NoError(t, err)
}
