package main

import (
	"testing"

	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

func TestCopyHubIndex(t *testing.T) {
	t.Parallel()
	db := cluster.NewDB(t)
	code, _, errOut := pgqctl(t, "copy", "hub-index", "--hub", db.DSN)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "queue not found")

	_, err := pgq.CreateQueue(t.Context(), db.Pool, "pull_queue")
	require.NoError(t, err)
	code, out, errOut := pgqctl(t, "copy", "hub-index", "--hub", db.DSN)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "hub 1: queue pull_queue: 3 event tables indexed")
	code, out, _ = pgqctl(t, "copy", "hub-index", "--hub", db.DSN)
	require.Equal(t, 0, code)
	require.Contains(t, out, "0 event tables indexed", "idempotent")
	var n int
	require.NoError(t, db.Pool.QueryRow(t.Context(), "select count(*) from pg_indexes where schemaname = 'pgq' and indexname like '%_pgq_go_target'").Scan(&n))
	require.Equal(t, 3, n)

	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"copy", "hub-index"}, "give at least one --hub"},
		{[]string{"copy", "hub-index", "--hub", db.DSN, "--pull-queue", ""}, "queue"},
		{[]string{"copy", "hub-index", "--hub", db.DSN, "extra"}, `unexpected argument "extra"`},
	} {
		code, _, errOut := pgqctl(t, tc.args...)
		require.Equal(t, 2, code, tc.args)
		require.Contains(t, errOut, tc.msg, tc.args)
	}
}
