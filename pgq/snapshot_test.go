package pgq_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

// TestBatchSnapshot: a batch carries its end tick's snapshot, and Visible
// agrees with txid_visible_in_snapshot for a transaction in progress at
// the tick, one committed before it and one started after it.
func TestBatchSnapshot(t *testing.T) {
	t.Parallel()
	e := setup(t)
	var before int64
	require.NoError(t, pgx.BeginFunc(e.ctx, e.pool, func(tx pgx.Tx) error {
		if _, err := pgq.InsertEvent(e.ctx, tx, e.queue, pgq.NewEvent("t", "d")); err != nil {
			return err
		}
		return tx.QueryRow(e.ctx, "select txid_current()").Scan(&before)
	}))
	open, err := e.pool.Begin(e.ctx)
	require.NoError(t, err)
	defer func() { _ = open.Rollback(context.WithoutCancel(e.ctx)) }()
	var during int64
	require.NoError(t, open.QueryRow(e.ctx, "select txid_current()").Scan(&during))
	tick := e.tick(t)
	var after int64
	require.NoError(t, e.pool.QueryRow(e.ctx, "select txid_current()").Scan(&after))

	info, err := pgq.NextBatch(e.ctx, e.pool, e.queue, e.cons)
	require.NoError(t, err)
	require.NotNil(t, info)
	require.Equal(t, tick, info.TickID)
	var text string
	require.NoError(t, e.pool.QueryRow(e.ctx, "select tick_snapshot::text from pgq.tick where tick_id = $1", tick).Scan(&text))
	require.Equal(t, text, info.Snapshot.String())
	for _, x := range []int64{before, during, after, info.Snapshot.Xmin - 1, info.Snapshot.Xmax} {
		var want bool
		require.NoError(t, e.pool.QueryRow(e.ctx, "select txid_visible_in_snapshot($1, $2::text::txid_snapshot)", x, text).Scan(&want))
		require.Equal(t, want, info.Snapshot.Visible(x), "txid %d in %s", x, text)
	}
	require.True(t, info.Snapshot.Visible(before))
	require.False(t, info.Snapshot.Visible(during))
	require.False(t, info.Snapshot.Visible(after))
}

func TestParseSnapshot(t *testing.T) {
	t.Parallel()
	s, err := pgq.ParseSnapshot("10:20:12,15")
	require.NoError(t, err)
	require.Equal(t, pgq.Snapshot{Xmin: 10, Xmax: 20, Xip: []int64{12, 15}}, s)
	require.Equal(t, "10:20:12,15", s.String())
	for x, want := range map[int64]bool{9: true, 10: true, 12: false, 13: true, 15: false, 19: true, 20: false, 21: false} {
		require.Equal(t, want, s.Visible(x), "txid %d", x)
	}
	s, err = pgq.ParseSnapshot("7:7:")
	require.NoError(t, err)
	require.Equal(t, "7:7:", s.String())
	require.False(t, pgq.Snapshot{}.Visible(1))
	for _, bad := range []string{"", "1", "1:2", "x:2:", "3:2:", "1:5:7", "1:5:3,2", "1:5:3,3", "1:5:,", "0:1:"} {
		_, err := pgq.ParseSnapshot(bad)
		require.ErrorIs(t, err, pgq.ErrInvalidArgument, "%q", bad)
	}
}
