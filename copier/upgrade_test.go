package copier_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/pgq-go/pgq/copier"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/remote"
	"github.com/stretchr/testify/require"
)

// TestUpgradeAdoptsLegacyPosition upgrades a node installed by a version
// that keyed tracking rows by consumer name only (pgq_go/1), in place, and
// takes over a position that version left in the crash gap (batch applied
// on the node, not finished on the hub): the batch is skipped, not applied
// again under the new source-keyed row.
func TestUpgradeAdoptsLegacyPosition(t *testing.T) {
	t.Parallel()
	cc := newCopyCluster(t, 2, 1, copier.RoutingShared, func(int) *pgtest.Cluster { return cluster }, cluster)
	n1, hub := cc.local["n1"].Pool, cc.hubs[0].Pool
	installV1(t, cc.ctx, n1)
	cc.setupAll()
	st, err := remote.Status(cc.ctx, n1)
	require.NoError(t, err)
	require.Equal(t, []string{"copier/1", "pgq_ext/1", "pgq_go/1", "pgq_go/2"}, st.Migrations, "upgraded in place")
	id, err := remote.Identity(cc.ctx, n1)
	require.NoError(t, err)
	require.Len(t, id, 36)

	// n2 sends a row to n1; it reaches the hub.
	cc.startTicker()
	runCopier(t, cc.ctx, cc.config("n2"))
	cc.produce("n2", 1, rand.New(rand.NewPCG(7, 8)))
	var rowID string
	for k := range cc.expected["n1"] {
		rowID = k
	}
	require.NotEmpty(t, rowID)
	// The old version opened the batch holding it, applied it on n1 and
	// recorded the batch under its name-only key, then died.
	var batch int64
	require.Eventually(t, func() bool {
		info, err := pgq.NextBatch(cc.ctx, hub, "pull_queue", "pull.n1")
		require.NoError(t, err)
		if info == nil {
			return false
		}
		evs, err := pgq.NewBatch(hub, "pull_queue", "pull.n1", *info, pgq.ReadOptions{}).All(cc.ctx)
		require.NoError(t, err)
		for _, ev := range evs {
			if ev.Extra1.String == "n1" {
				batch = info.ID
				return true
			}
		}
		_, err = pgq.FinishBatch(cc.ctx, hub, info.ID)
		require.NoError(t, err)
		return false
	}, 60*time.Second, 10*time.Millisecond)
	_, err = n1.Exec(cc.ctx, "insert into rows (id, origin, payload) values ($1, 'n2', $2)", rowID, "it's \\ a; -- row "+rowID)
	require.NoError(t, err)
	_, err = n1.Exec(cc.ctx, "insert into pgq_ext.completed_batch (consumer_id, subconsumer_id, last_batch_id) values ('pull.n1', '', $1)", batch)
	require.NoError(t, err)

	// The new version starts: it adopts the row and skips the batch.
	runCopier(t, cc.ctx, cc.config("n1"))
	require.Eventually(t, func() bool {
		var open bool
		require.NoError(t, hub.QueryRow(cc.ctx, `select sub_batch is null from pgq.subscription s
			join pgq.consumer c on c.co_id = s.sub_consumer where c.co_name = 'pull.n1'`).Scan(&open))
		return open
	}, 60*time.Second, 10*time.Millisecond, "the adopted batch is finished")
	cc.produce("n2", 10, rand.New(rand.NewPCG(9, 10)))
	require.Eventually(t, cc.delivered, 60*time.Second, 20*time.Millisecond)
	cc.verify()
	var legacy int
	require.NoError(t, n1.QueryRow(cc.ctx, "select count(*) from pgq_ext.completed_batch where subconsumer_id = ''").Scan(&legacy))
	require.Zero(t, legacy, "legacy row moved to the source-keyed one")
}
