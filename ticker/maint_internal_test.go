package ticker

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

func TestMaintStatement(t *testing.T) {
	s := func(v string) *string { return &v }
	for _, tc := range []struct {
		op   pgq.MaintOp
		sql  string
		args []any
	}{
		{pgq.MaintOp{Func: "pgq.maint_rotate_tables_step1", Arg: s("my queue")}, `select "pgq"."maint_rotate_tables_step1"($1::text)`, []any{"my queue"}},
		{pgq.MaintOp{Func: "pgq.maint_rotate_tables_step2"}, `select "pgq"."maint_rotate_tables_step2"()`, nil},
		{pgq.MaintOp{Func: "Londiste.Root_Check_Seqs", Arg: s("q'; drop table x; --")}, `select "londiste"."root_check_seqs"($1::text)`, []any{"q'; drop table x; --"}},
		{pgq.MaintOp{Func: "vacuum", Arg: s("pgq.retry_queue")}, `vacuum "pgq"."retry_queue"`, nil},
	} {
		sql, args, err := maintStatement(tc.op)
		require.NoError(t, err)
		require.Equal(t, tc.sql, sql)
		require.Equal(t, tc.args, args)
	}
	for _, bad := range []pgq.MaintOp{
		{Func: "pgq.f(); drop table x; --"},
		{Func: `"quoted"`},
		{Func: "a.b.c"},
		{Func: ""},
		{Func: "vacuum"},
		{Func: "vacuum", Arg: s("pgq.tick; drop table x")},
	} {
		_, _, err := maintStatement(bad)
		require.Error(t, err, "%+v", bad)
	}
}

// TestRunMaintOp runs each kind of operation against a real database:
// vacuum outside a transaction block, rotation steps, and the repeat of a
// function that asks to be called again.
func TestRunMaintOp(t *testing.T) {
	c, err := pgtest.Start()
	require.NoError(t, err)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := c.NewDB(t)
	conn, err := pgx.Connect(ctx, db.DSN)
	require.NoError(t, err)
	defer conn.Close(ctx)

	s := func(v string) *string { return &v }
	calls, err := runMaintOp(ctx, conn, pgq.MaintOp{Func: "vacuum", Arg: s("pgq.tick")}, nil)
	require.NoError(t, err)
	require.Equal(t, 1, calls)

	_, err = pgq.CreateQueue(ctx, conn, "q")
	require.NoError(t, err)
	for _, op := range []pgq.MaintOp{{Func: "pgq.maint_rotate_tables_step1", Arg: s("q")}, {Func: "pgq.maint_rotate_tables_step2"}} {
		calls, err := runMaintOp(ctx, conn, op, nil)
		require.NoError(t, err, opString(op))
		require.Equal(t, 1, calls, "returns 0: called once")
	}

	_, err = conn.Exec(ctx, `create sequence public.countdown; select setval('public.countdown', 5);
		create function public.countdown_step(text) returns int language sql as
		$$ select case when nextval('public.countdown') < 9 then 1 else 0 end $$`)
	require.NoError(t, err)
	between := 0
	calls, err = runMaintOp(ctx, conn, pgq.MaintOp{Func: "public.countdown_step", Arg: s("x")}, func() error { between++; return nil })
	require.NoError(t, err)
	require.Equal(t, 4, calls, "repeated while it returns non-zero")
	require.Equal(t, 3, between, "the worker may tick between repeated calls")
}
