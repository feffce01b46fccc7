package remote_test

import (
	"context"
	"os"
	"testing"

	"github.com/pgq-go/pgq/remote"
	"github.com/stretchr/testify/require"
)

// TestStatusPgqExtWithoutVersion: Skytools' pgq_ext installed as plain SQL
// answers version() with NULL. Status reports it present with an unknown
// version, and Install uses it as it is.
func TestStatusPgqExtWithoutVersion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dst := cluster.NewPlainDB(t)

	st, err := remote.Status(ctx, dst.Pool)
	require.NoError(t, err)
	require.Equal(t, remote.TrackingStatus{}, st, "nothing installed")

	fixture, err := os.ReadFile("../testdata/pgq_ext_skytools3_plain.sql")
	require.NoError(t, err)
	_, err = dst.Pool.Exec(ctx, string(fixture))
	require.NoError(t, err)
	st, err = remote.Status(ctx, dst.Pool)
	require.NoError(t, err)
	require.True(t, st.PgqExt)
	require.Empty(t, st.PgqExtVersion, "unknown")
	require.False(t, st.PgqExtOurs)
	require.Empty(t, st.Migrations)

	require.NoError(t, remote.Install(ctx, dst.Pool))
	require.NoError(t, remote.Install(ctx, dst.Pool), "idempotent")
	st, err = remote.Status(ctx, dst.Pool)
	require.NoError(t, err)
	require.True(t, st.PgqExt)
	require.Empty(t, st.PgqExtVersion)
	require.False(t, st.PgqExtOurs)
	require.Contains(t, st.Migrations, "pgq_go/1")
	require.NotContains(t, st.Migrations, "pgq_ext/1", "the existing pgq_ext is used as it is")
}
