package remote_test

import (
	"context"
	"testing"

	"github.com/pgq-go/pgq/remote"
	"github.com/stretchr/testify/require"
)

func TestInstallIdempotentAndPgqExtSemantics(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dst := cluster.NewPlainDB(t) // no pgq needed on the destination
	for range 2 {
		require.NoError(t, remote.Install(ctx, dst.Pool))
	}
	st, err := remote.Status(ctx, dst.Pool)
	require.NoError(t, err)
	require.Equal(t, "3.1", st.PgqExtVersion)
	require.True(t, st.PgqExtOurs)
	require.Equal(t, []string{"pgq_ext/1", "pgq_go/1", "pgq_go/2"}, st.Migrations)

	q := func(sql string, args ...any) any {
		t.Helper()
		var v any
		require.NoError(t, dst.Pool.QueryRow(ctx, sql, args...).Scan(&v))
		return v
	}
	// batch tracking, as pgq_ext's own regression test expects
	require.Equal(t, false, q("select pgq_ext.is_batch_done('c', 1)"))
	require.Equal(t, true, q("select pgq_ext.set_batch_done('c', 1)"))
	require.Equal(t, true, q("select pgq_ext.is_batch_done('c', 1)"))
	require.Equal(t, false, q("select pgq_ext.set_batch_done('c', 1)"))
	require.Equal(t, false, q("select pgq_ext.is_batch_done('c', 2)"))
	require.Equal(t, true, q("select pgq_ext.set_batch_done('c', 2)"))
	require.Equal(t, false, q("select pgq_ext.is_batch_done('c', 'sub', 2)"), "subconsumers are separate")
	// event tracking: a new batch clears the old marks
	require.Equal(t, false, q("select pgq_ext.is_event_done('c', 3, 101)"))
	require.Equal(t, true, q("select pgq_ext.set_event_done('c', 3, 101)"))
	require.Equal(t, true, q("select pgq_ext.is_event_done('c', 3, 101)"))
	require.Equal(t, false, q("select pgq_ext.set_event_done('c', 3, 101)"))
	require.Equal(t, true, q("select pgq_ext.set_event_done('c', 4, 102)"))
	require.Equal(t, false, q("select pgq_ext.is_event_done('c', 3, 101)"))
	require.EqualValues(t, 1, q("select count(*) from pgq_ext.completed_event"))
	// tick tracking: NULL deletes
	require.Nil(t, q("select pgq_ext.get_last_tick('c')"))
	q("select pgq_ext.set_last_tick('c', 7)")
	require.EqualValues(t, 7, q("select pgq_ext.get_last_tick('c')"))
	q("select pgq_ext.set_last_tick('c', 8)")
	tick, err := remote.LastTick(ctx, dst.Pool, "c", "")
	require.NoError(t, err)
	require.EqualValues(t, 8, tick)
	q("select pgq_ext.set_last_tick('c', null)")
	require.EqualValues(t, 0, q("select count(*) from pgq_ext.completed_tick"))
	b, err := remote.LastBatch(ctx, dst.Pool, "c", "")
	require.NoError(t, err)
	require.EqualValues(t, 2, b)
}

func TestInstallKeepsExistingPgqExt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dst := cluster.NewPlainDB(t)
	// A Skytools-installed pgq_ext: simulate with a minimal compatible schema.
	_, err := dst.Pool.Exec(ctx, `create schema pgq_ext;
		create table pgq_ext.completed_batch (consumer_id text, subconsumer_id text, last_batch_id bigint, primary key (consumer_id, subconsumer_id));
		create function pgq_ext.version() returns text language sql as $$ select '3.1.5'::text $$;
		create function pgq_ext.is_batch_done(text, text, bigint) returns boolean language sql as $$ select false $$;
		create function pgq_ext.set_batch_done(text, text, bigint) returns boolean language sql as $$ select true $$;
		create function pgq_ext.get_last_tick(text, text) returns bigint language sql as $$ select null::bigint $$;`)
	require.NoError(t, err)
	err = remote.Install(ctx, dst.Pool)
	require.ErrorIs(t, err, remote.ErrTrackingSchema, "set_last_tick is missing")
	require.ErrorContains(t, err, "set_last_tick")

	_, err = dst.Pool.Exec(ctx, `create function pgq_ext.set_last_tick(text, text, bigint) returns integer language sql as $$ select 1 $$`)
	require.NoError(t, err)
	require.NoError(t, remote.Install(ctx, dst.Pool))
	st, err := remote.Status(ctx, dst.Pool)
	require.NoError(t, err)
	require.Equal(t, "3.1.5", st.PgqExtVersion, "the existing pgq_ext is used as-is")
	require.False(t, st.PgqExtOurs)
	require.Equal(t, []string{"pgq_go/1", "pgq_go/2"}, st.Migrations)
}
