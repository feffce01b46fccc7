package main

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

// TestCopyCapture: copy capture add, list (table and --json) and remove
// against a node database, with flags anywhere on the line; a column
// added after add is a problem list reports (exit 1) until add runs
// again; writes are sent while captured and not after remove.
func TestCopyCapture(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := cluster.NewDB(t)
	_, err := pgq.CreateQueue(ctx, db.Pool, "push_queue")
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, `create table items (id int primary key, name text, targets text[], secret text);
		create table orders (code text not null unique, region text);
		create function order_targets(o orders) returns text language sql as $$ select case o.region when 'eu' then 'n2' end $$;`)
	require.NoError(t, err)
	events := func() (n int) {
		require.NoError(t, db.Pool.QueryRow(ctx, "select count(*) from pgq.event_template").Scan(&n))
		return n
	}

	code, out, errOut := pgqctl(t, "copy", "capture", "list", "--dsn", db.DSN)
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "no captured tables\n", out)

	code, out, errOut = pgqctl(t, "copy", "capture", "add", "items", "--dsn", db.DSN, "--origin", "n1", "--target-column", "targets", "--exclude", "secret")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "captured public.items: queue push_queue, origin n1, targets from column targets, keys id, 3 columns sent (secret excluded)\n", out)
	code, out, errOut = pgqctl(t, "copy", "capture", "add", "--dsn", db.DSN, "--origin", "n1", "--target-function", "order_targets",
		"--keys", "code", "--queue", "push_queue", "public.orders")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "captured public.orders: queue push_queue, origin n1, targets from function order_targets(orders), keys code, 2 columns sent\n", out)

	_, err = db.Pool.Exec(ctx, `insert into items values (1, 'a', '{n2,n3}', 's'); insert into orders values ('o1', 'eu'), ('o2', 'us')`)
	require.NoError(t, err)
	require.Equal(t, 3, events())

	code, out, errOut = pgqctl(t, "copy", "capture", "list", "--dsn", db.DSN)
	require.Equal(t, 0, code, errOut)
	require.Equal(t, `TABLE          QUEUE       ORIGIN  TARGETS                         KEYS  EXCLUDED  COLUMNS  PROBLEM
public.items   push_queue  n1      column targets                  id    secret    3        -
public.orders  push_queue  n1      function order_targets(orders)  code  -         2        -
`, out)

	_, err = db.Pool.Exec(ctx, `alter table items add column color text`)
	require.NoError(t, err)
	code, out, errOut = pgqctl(t, "copy", "capture", "list", "--json", "--dsn", db.DSN)
	require.Equal(t, 1, code, "a capture with a problem")
	require.Contains(t, errOut, "1 of 2 captures have a problem")
	var caps []captureJSON
	require.NoError(t, json.Unmarshal([]byte(out), &caps), out)
	require.Len(t, caps, 2)
	require.Equal(t, "items", caps[0].Table)
	require.Equal(t, []string{"id", "name", "targets"}, caps[0].Columns)
	require.Equal(t, []string{"secret"}, caps[0].ExcludeColumns)
	require.Equal(t, "public.items", caps[0].EventTable)
	require.Regexp(t, `^pgq_go\.items_[0-9a-f]{8}_payload$`, caps[0].PayloadFunction)
	require.Contains(t, caps[0].Problem, `columns ["color"] added`)
	require.Equal(t, "order_targets(orders)", caps[1].TargetFunction)
	require.Equal(t, []string{}, caps[1].ExcludeColumns)
	require.Empty(t, caps[1].Problem)

	code, _, errOut = pgqctl(t, "copy", "capture", "add", "items", "--dsn", db.DSN, "--origin", "n1", "--target-column", "targets", "--exclude", "secret")
	require.Equal(t, 0, code, errOut)
	code, out, _ = pgqctl(t, "copy", "capture", "list", "--dsn", db.DSN, "--json")
	require.Equal(t, 0, code)
	require.NoError(t, json.Unmarshal([]byte(out), &caps))
	require.Equal(t, []string{"id", "name", "targets", "color"}, caps[0].Columns)

	code, out, errOut = pgqctl(t, "copy", "capture", "remove", "--dsn", db.DSN, "items")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "capture of items removed\n", out)
	_, err = db.Pool.Exec(ctx, `update items set name = 'b'`)
	require.NoError(t, err)
	require.Equal(t, 3, events(), "not sent after remove")
	code, _, errOut = pgqctl(t, "copy", "capture", "remove", "--dsn", db.DSN, "items")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "table is not captured")
	code, _, errOut = pgqctl(t, "copy", "capture", "add", "--dsn", db.DSN, "nope", "--origin", "n1", "--target-column", "t")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, `pgqctl copy capture add: copier: capture "nope": table not found`)
	code, _, errOut = pgqctl(t, "copy", "capture", "add", "--dsn", db.DSN, "items", "--origin", "n1", "--target-column", "t", "--queue", "other")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "queue other: queue not found")

	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"copy", "capture"}, "usage: pgqctl copy capture"},
		{[]string{"copy", "capture", "drop"}, `unknown subcommand "drop"`},
		{[]string{"copy", "capture", "add", "--dsn", db.DSN, "--origin", "n1", "--target-column", "t"}, "name the TABLE"},
		{[]string{"copy", "capture", "add", "--dsn", db.DSN, "a", "b", "--origin", "n1", "--target-column", "t"}, `unexpected argument "b"`},
		{[]string{"copy", "capture", "add", "--dsn", db.DSN, "items", "--target-column", "t"}, "--origin is required"},
		{[]string{"copy", "capture", "add", "--dsn", db.DSN, "items", "--origin", "n 1", "--target-column", "t"}, "--origin: route: invalid node id"},
		{[]string{"copy", "capture", "add", "--dsn", db.DSN, "items", "--origin", "n1"}, "give --target-column or --target-function"},
		{[]string{"copy", "capture", "add", "--dsn", db.DSN, "items", "--origin", "n1", "--target-column", "t", "--target-function", "f"}, "not both"},
		{[]string{"copy", "capture", "add", "--dsn", db.DSN, "items", "--origin", "n1", "--target-column", "t", "--queue", ""}, "--queue"},
		{[]string{"copy", "capture", "add", "--dsn", db.DSN, "items", "--bogus"}, "flag provided but not defined"},
		{[]string{"copy", "capture", "add", "items", "--origin", "n1", "--target-column", "t"}, "no database"},
		{[]string{"copy", "capture", "remove", "--dsn", db.DSN}, "name the TABLE"},
		{[]string{"copy", "capture", "list", "--dsn", db.DSN, "items"}, `unexpected argument "items"`},
	} {
		if tc.msg == "no database" && os.Getenv("DATABASE_URL") != "" {
			continue
		}
		code, _, errOut := pgqctl(t, tc.args...)
		require.Equal(t, 2, code, "%v: %s", tc.args, errOut)
		require.Contains(t, errOut, tc.msg, tc.args)
	}
}
