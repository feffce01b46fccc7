package main

import (
	"context"
	"testing"
	"time"

	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

// TestCopyBackfill: a captured table's rows addressed to a target go into
// the push queue as the trigger's inserts, once each.
func TestCopyBackfill(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := cluster.NewDB(t)
	_, err := pgq.CreateQueue(ctx, db.Pool, "push_queue")
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, `create table items (id int primary key, targets text[], v text);
		insert into items select i, case when i % 2 = 0 then '{n2,n3}'::text[] else '{n2}'::text[] end, 'v' || i from generate_series(1, 9) i`)
	require.NoError(t, err)

	code, _, errOut := pgqctl(t, "copy", "backfill", "--dsn", db.DSN, "--table", "items", "--target", "n3")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "not captured")

	code, _, errOut = pgqctl(t, "copy", "capture", "add", "--dsn", db.DSN, "items", "--origin", "n1", "--target-column", "targets")
	require.Equal(t, 0, code, errOut)
	_, err = pgq.RegisterConsumer(ctx, db.Pool, "push_queue", "audit")
	require.NoError(t, err)
	code, out, errOut := pgqctl(t, "copy", "backfill", "--dsn", db.DSN, "--table", "items", "--target", "n3", "--chunk-rows", "3")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "items: 4 rows sent to n3 in 2 chunks")

	_, err = pgq.Tick(ctx, db.Pool, "push_queue")
	require.NoError(t, err)
	info, err := pgq.NextBatch(ctx, db.Pool, "push_queue", "audit")
	require.NoError(t, err)
	require.NotNil(t, info)
	evs, err := pgq.NewBatch(db.Pool, "push_queue", "audit", *info, pgq.ReadOptions{}).All(ctx)
	require.NoError(t, err)
	var got []string
	for _, ev := range evs {
		require.Equal(t, "I:id", ev.Type.String)
		require.Equal(t, "n3", ev.Extra1.String)
		require.Equal(t, "n1", ev.Extra3.String)
		got = append(got, ev.Extra2.String)
	}
	require.Len(t, got, 4)
	require.Contains(t, got[0], "id=2&")

	for _, bad := range [][]string{
		{"copy", "backfill", "--dsn", db.DSN, "--target", "n3"},
		{"copy", "backfill", "--dsn", db.DSN, "--table", "items"},
		{"copy", "backfill", "--dsn", db.DSN, "--table", "items", "--target", "bad node"},
		{"copy", "backfill", "--dsn", db.DSN, "--table", "items", "--target", "n3", "--chunk-rows", "0"},
	} {
		code, _, _ := pgqctl(t, bad...)
		require.Equal(t, exitUsage, code, bad)
	}
}
