package main

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/remote"
	"github.com/stretchr/testify/require"
)

// TestTrackingSkytoolsPlainPgqExt: a Skytools pgq_ext installed as plain
// SQL (no CREATE EXTENSION) answers pgq_ext.version() with NULL. Status and
// install work on it, say the version is unknown, and leave it as it is.
func TestTrackingSkytoolsPlainPgqExt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := cluster.NewPlainDB(t)
	fixture, err := pgtest.ReadFixture("pgq_ext_skytools3_plain.sql")
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, string(fixture))
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, "select pgq_ext.set_batch_done('pull.n1', '', 42), pgq_ext.set_last_tick('serial', 'sub', 7)")
	require.NoError(t, err)
	var version *string
	require.NoError(t, db.Pool.QueryRow(ctx, "select pgq_ext.version()").Scan(&version))
	require.Nil(t, version, "the fixture is what Skytools installs as plain SQL")

	code, out, errOut := pgqctl(t, "tracking", "status", "--dsn", db.DSN)
	require.Equal(t, 0, code, "stdout: %s\nstderr: %s", out, errOut)
	require.Contains(t, out, "pgq_ext (version unknown, not installed by pgq-go)")
	require.Contains(t, out, "pgq_go: not installed")
	require.Regexp(t, `pull\.n1\s+42\s+-`, out)
	require.Regexp(t, `serial\s+sub\s+-\s+7`, out)

	code, out, errOut = pgqctl(t, "tracking", "status", "--dsn", db.DSN, "--json")
	require.Equal(t, 0, code, errOut)
	var rep trackingReport
	require.NoError(t, json.Unmarshal([]byte(out), &rep), out)
	require.True(t, rep.Installed)
	require.Empty(t, rep.PgqExtVersion)
	require.False(t, rep.PgqExtOurs)
	require.Len(t, rep.Positions, 2)

	for range 2 { // idempotent
		code, out, errOut = pgqctl(t, "tracking", "install", "--dsn", db.DSN)
		require.Equal(t, 0, code, "stdout: %s\nstderr: %s", out, errOut)
		require.Contains(t, out, "tracking schema installed: pgq_ext (version unknown, not installed by pgq-go), pgq_go migrations pgq_go/1")
		require.Empty(t, errOut)
	}
	require.NoError(t, remote.Install(ctx, db.Pool))
	st, err := remote.Status(ctx, db.Pool)
	require.NoError(t, err)
	require.False(t, st.PgqExtOurs)
	require.NotContains(t, st.Migrations, "pgq_ext/1", "the existing pgq_ext is used as-is")
	require.NoError(t, db.Pool.QueryRow(ctx, "select pgq_ext.version()").Scan(&version))
	require.Nil(t, version, "pgq_ext left alone")
	b, err := remote.LastBatch(ctx, db.Pool, "pull.n1", "")
	require.NoError(t, err)
	require.EqualValues(t, 42, b)
	tick, err := remote.LastTick(ctx, db.Pool, "serial", "sub")
	require.NoError(t, err)
	require.EqualValues(t, 7, tick)

	code, out, errOut = pgqctl(t, "tracking", "status", "--dsn", db.DSN)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "pgq_ext (version unknown, not installed by pgq-go)")
	require.Contains(t, out, "pgq_go migrations: pgq_go/1")
}
