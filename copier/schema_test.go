package copier_test

import (
	"context"
	"os"
	"testing"

	"github.com/pgq-go/pgq/copier"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/remote"
	"github.com/stretchr/testify/require"
)

// TestInstallOwnsCopierTables: the tracking schema alone (remote.Install)
// has no copier tables; copier.Install adds them, idempotently, also over
// a database the last release before the split installed (pgq_go/1..3
// recorded, the same tables made by those migrations).
func TestInstallOwnsCopierTables(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tables := func(t *testing.T, db *pgtest.DB) (parked, held bool) {
		t.Helper()
		require.NoError(t, db.Pool.QueryRow(ctx, `select to_regclass('pgq_go.parked_event') is not null,
			to_regclass('pgq_go.held_event') is not null`).Scan(&parked, &held))
		return parked, held
	}

	fresh := cluster.NewPlainDB(t)
	require.NoError(t, remote.Install(ctx, fresh.Pool))
	p, h := tables(t, fresh)
	require.False(t, p || h, "remote.Install makes no copier tables")
	for range 2 {
		require.NoError(t, copier.Install(ctx, fresh.Pool))
	}
	p, h = tables(t, fresh)
	require.True(t, p && h)
	st, err := remote.Status(ctx, fresh.Pool)
	require.NoError(t, err)
	require.Equal(t, []string{"copier/1", "pgq_ext/1", "pgq_go/1", "pgq_go/2"}, st.Migrations)

	// The previous release: its four migrations, parked rows in it.
	old := cluster.NewPlainDB(t)
	_, err = old.Pool.Exec(ctx, `create schema pgq_go;
		create table pgq_go.migration (name text primary key, applied_at timestamptz not null default now())`)
	require.NoError(t, err)
	// Unchanged migrations are read from remote's schema; the files this
	// split changed or removed are kept as they were shipped.
	for _, f := range []string{"../remote/schema/pgq_ext_1.sql", "testdata/v1/pgq_go_1.sql",
		"../remote/schema/pgq_go_2.sql", "testdata/v1/pgq_go_3.sql"} {
		sql, err := os.ReadFile(f)
		require.NoError(t, err)
		_, err = old.Pool.Exec(ctx, string(sql))
		require.NoError(t, err, f)
	}
	_, err = old.Pool.Exec(ctx, `insert into pgq_go.migration (name) values ('pgq_ext/1'), ('pgq_go/1'), ('pgq_go/2'), ('pgq_go/3');
		insert into pgq_go.parked_event (consumer_id, queue_name, error, ev_id, ev_time, order_key)
		values ('pull.n1', 'pull_queue', 'old', 1, now(), 'k')`)
	require.NoError(t, err)
	require.NoError(t, copier.Install(ctx, old.Pool))
	st, err = remote.Status(ctx, old.Pool)
	require.NoError(t, err)
	require.Equal(t, []string{"copier/1", "pgq_ext/1", "pgq_go/1", "pgq_go/2", "pgq_go/3"}, st.Migrations)
	parked, err := copier.CountParked(ctx, old.Pool, "pull.n1")
	require.NoError(t, err)
	require.EqualValues(t, 1, parked, "parked rows kept")
}
