package copier_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/pgq-go/pgq/copier"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

// TestHubIndexServesPulls: the target index exists on every event table
// of the shared queue after IndexHubQueue (idempotent), and a pull's batch
// query, PgQ's own SQL with the pull's filter, reads through it rather
// than scanning every node's rows.
func TestHubIndexServesPulls(t *testing.T) {
	t.Parallel()
	db := cluster.NewDB(t)
	ctx := t.Context()
	const queue = "pull_queue"
	_, err := copier.IndexHubQueue(ctx, db.Pool, queue)
	require.ErrorIs(t, err, pgq.ErrQueueNotFound)
	_, err = pgq.CreateQueue(ctx, db.Pool, queue)
	require.NoError(t, err)
	_, err = pgq.RegisterConsumer(ctx, db.Pool, queue, "pull.n7")
	require.NoError(t, err)
	n, err := copier.IndexHubQueue(ctx, db.Pool, queue)
	require.NoError(t, err)
	require.Equal(t, 3, n, "one index per event table (queue_ntables)")
	n, err = copier.IndexHubQueue(ctx, db.Pool, queue)
	require.NoError(t, err)
	require.Zero(t, n, "idempotent")

	_, err = db.Pool.Exec(ctx, `select pgq.insert_event($1, 'I:id', 'id=' || i, 'n' || (i % 64), null, null, null)
		from generate_series(1, 20000) i`, queue)
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, "analyze pgq.event_template") // no stats on the children: the planner's defaults
	require.NoError(t, err)
	_, err = pgq.Tick(ctx, db.Pool, queue)
	require.NoError(t, err)
	b, err := pgq.NextBatch(ctx, db.Pool, queue, "pull.n7")
	require.NoError(t, err)
	require.NotNil(t, b)
	var batchSQL string
	require.NoError(t, db.Pool.QueryRow(ctx, "select pgq.batch_event_sql($1)", b.ID).Scan(&batchSQL))
	where := pgq.Eq(pgq.FieldExtra1, "n7").String() // the pull's filter, as get_batch_cursor appends it
	rows, err := db.Pool.Query(ctx, fmt.Sprintf("explain (analyze, costs off) select * from (%s) _evs where %s", batchSQL, where))
	require.NoError(t, err)
	var plan []string
	for rows.Next() {
		var line string
		require.NoError(t, rows.Scan(&line))
		plan = append(plan, line)
	}
	require.NoError(t, rows.Err())
	text := strings.Join(plan, "\n")
	require.Contains(t, text, "_pgq_go_target", text)
	require.NotContains(t, text, "Rows Removed by Filter: 19", "the pull reads its rows only:\n%s", text)
}
