package copier_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/apply"
	"github.com/pgq-go/pgq/copier"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/route"
	"github.com/stretchr/testify/require"
)

// installV1 leaves db as a release that shipped only pgq_ext/1 and
// pgq_go/1 left it: the same DDL and migration records install() writes.
func installV1(t *testing.T, ctx context.Context, db *pgxpool.Pool) {
	t.Helper()
	_, err := db.Exec(ctx, `create schema pgq_go;
		create table pgq_go.migration (name text primary key, applied_at timestamptz not null default now())`)
	require.NoError(t, err)
	for _, f := range []string{"../remote/schema/pgq_ext_1.sql", "testdata/v1/pgq_go_1.sql"} {
		sql, err := os.ReadFile(f)
		require.NoError(t, err)
		_, err = db.Exec(ctx, string(sql))
		require.NoError(t, err, f)
	}
	_, err = db.Exec(ctx, "insert into pgq_go.migration (name) values ('pgq_ext/1'), ('pgq_go/1')")
	require.NoError(t, err)
}

// TestParkKeepsEventsWithRepeatedIDs: a node upgraded in place from a
// pgq_go/1 install, with parked events whose ids the rebuilt hub hands out
// again. Parking the new events must keep both the old rows and the new
// payloads (B5: the upsert kept the old payload and a replay applied it).
func TestParkKeepsEventsWithRepeatedIDs(t *testing.T) {
	t.Parallel()
	cc := newCopyCluster(t, 2, 1, copier.RoutingShared, func(int) *pgtest.Cluster { return cluster }, cluster)
	n2 := cc.local["n2"].Pool
	installV1(t, cc.ctx, n2)
	// Parked by the old release for event ids 1..20 of the hub's pull queue.
	const old = 20
	for id := 1; id <= old; id++ {
		_, err := n2.Exec(cc.ctx, `insert into pgq_go.parked_event (consumer_id, queue_name, error, ev_id, ev_time,
			ev_type, ev_extra1, ev_extra2) values ($1, 'pull_queue', 'old error', $2, now(), 'copy', 'n2', $3)`,
			route.PullConsumerName("n2"), id, fmt.Sprintf("old-%d", id))
		require.NoError(t, err)
	}
	cc.setupAll() // upgrades n2's tracking schema in place
	cc.startTicker()
	_, c2 := runCopier(t, cc.ctx, cc.config("n2"))

	// The hub was rebuilt: its new pull queue hands out ids 1, 2, 3 again,
	// for three events that can never be applied.
	for i := 1; i <= 3; i++ {
		_, err := cc.hubs[0].Pool.Exec(cc.ctx, `select pgq.insert_event_raw('pull_queue', $1, now(), null, null,
			'copy', null, 'n2', $2, null, null)`, i, fmt.Sprintf("action=ins&id=%%zz&new=%d", i))
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return c2.Stats().Parked >= 3 }, 60*time.Second, 20*time.Millisecond)

	parked, err := copier.ListParked(cc.ctx, n2, copier.ParkedFilter{})
	require.NoError(t, err)
	payloads := map[string]int64{}
	for _, p := range parked {
		payloads[p.Event.Extra2.String] = p.Event.ID
	}
	for id := 1; id <= old; id++ {
		require.Equal(t, int64(id), payloads[fmt.Sprintf("old-%d", id)], "old parked row %d kept", id)
	}
	for i := 1; i <= 3; i++ {
		got, ok := payloads[fmt.Sprintf("action=ins&id=%%zz&new=%d", i)]
		require.True(t, ok, "new event %d parked with its own payload (parked: %d rows)", i, len(parked))
		require.Equal(t, int64(i), got)
	}
	require.Len(t, parked, old+3)
}

// TestReplayParkedRefusesOtherNodes (B8): a replay names the node whose
// database it runs on, and refuses parked events addressed to another
// node instead of applying them there.
func TestReplayParkedRefusesOtherNodes(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db := cluster.NewDB(t)
	_, err := db.Pool.Exec(ctx, rowsDDL)
	require.NoError(t, err)
	require.NoError(t, copier.Install(ctx, db.Pool))
	for _, target := range []string{"n3", "n2"} {
		_, err := db.Pool.Exec(ctx, `insert into pgq_go.parked_event (consumer_id, queue_name, error, ev_id, ev_time,
			ev_type, ev_extra1, ev_extra2) values ('pull.n2', 'pull_queue', 'some error', 1, now(), 'copy', $1, $2)`,
			target, "action=ins&id=for-"+target+"&origin=n1")
		require.NoError(t, err)
	}
	ra, err := apply.NewRowApplier("rows", []string{"id"})
	require.NoError(t, err)

	_, err = copier.ReplayParked(ctx, db.Pool, "", ra, copier.ParkedFilter{})
	require.ErrorIs(t, err, route.ErrInvalidNode, "the node is required")

	res, err := copier.ReplayParked(ctx, db.Pool, "n2", ra, copier.ParkedFilter{})
	require.NoError(t, err)
	require.Equal(t, 1, res.Replayed)
	require.Len(t, res.Failed, 1)
	for _, ferr := range res.Failed {
		require.ErrorIs(t, ferr, copier.ErrWrongNode)
		require.ErrorContains(t, ferr, `addressed to "n3", not node "n2"`)
	}
	var ids []string
	rows, err := db.Pool.Query(ctx, "select id from rows order by id")
	require.NoError(t, err)
	for rows.Next() {
		var id string
		require.NoError(t, rows.Scan(&id))
		ids = append(ids, id)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{"for-n2"}, ids, "only n2's event is applied on n2")
	left, err := copier.ListParked(ctx, db.Pool, copier.ParkedFilter{})
	require.NoError(t, err)
	require.Len(t, left, 1)
	require.Equal(t, "n3", left[0].Event.Extra1.String)
	require.Equal(t, "some error", left[0].Error, "a refused event keeps the error that parked it")
}
