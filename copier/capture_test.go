package copier_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/copier"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/urlenc"
	"github.com/stretchr/testify/require"
)

// capItemsDDL is the captured table of most capture tests: targets in a
// text[] column, one excluded column (secret), a generated column (never
// sent), values of several kinds.
const capItemsDDL = `create table items (
	id       int primary key,
	name     text,
	tags     text[],
	qty      numeric,
	at       timestamptz,
	targets  text[],
	secret   text,
	doubled  numeric generated always as (qty * 2) stored
);`

// capEvent is one event read straight from the push queue's tables.
type capEvent struct {
	Type, Target, Origin, Table string
	Row                         map[string]pgq.Text
}

// capEnv is a database with a push queue and a captured table.
type capEnv struct {
	t    *testing.T
	ctx  context.Context
	db   *pgtest.DB
	pool *pgxpool.Pool
}

func newCapEnv(t *testing.T, ddl string) *capEnv {
	t.Helper()
	e := &capEnv{t: t, ctx: t.Context(), db: cluster.NewDB(t)}
	e.pool = e.db.Pool
	_, err := pgq.CreateQueue(e.ctx, e.pool, "push_queue")
	require.NoError(t, err)
	_, err = e.pool.Exec(e.ctx, ddl)
	require.NoError(t, err)
	return e
}

func (e *capEnv) exec(sql string, args ...any) {
	e.t.Helper()
	_, err := e.pool.Exec(e.ctx, sql, args...)
	require.NoError(e.t, err, sql)
}

// drain returns and deletes the events written so far, in event order.
func (e *capEnv) drain() []capEvent {
	e.t.Helper()
	rows, err := e.pool.Query(e.ctx, `delete from pgq.event_template
		returning ev_id, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4`)
	require.NoError(e.t, err)
	type raw struct {
		id             int64
		typ, data      string
		e1, e2, e3, e4 string
	}
	var rs []raw
	var r raw
	_, err = pgx.ForEachRow(rows, []any{&r.id, &r.typ, &r.data, &r.e1, &r.e2, &r.e3, &r.e4}, func() error {
		rs = append(rs, r)
		return nil
	})
	require.NoError(e.t, err)
	slices.SortFunc(rs, func(a, b raw) int { return int(a.id - b.id) })
	var out []capEvent
	for _, r := range rs {
		require.Empty(e.t, r.data, "ev_data is empty, as route.Sender writes it")
		row, err := urlenc.Parse(r.e2)
		require.NoError(e.t, err, "payload %q", r.e2)
		out = append(out, capEvent{Type: r.typ, Target: r.e1, Origin: r.e3, Table: r.e4, Row: row})
	}
	return out
}

// capSummary is "type target id" per event, for comparing event lists.
func capSummary(evs []capEvent) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Type+" "+ev.Target+" "+ev.Row["id"].String)
	}
	return out
}

func capItemsConfig() copier.CaptureConfig {
	return copier.CaptureConfig{Table: "items", Queue: "push_queue", Origin: "n1", TargetColumn: "targets", ExcludeColumns: []string{"secret"}}
}

// TestCaptureEvents: each write becomes the documented events, in the
// writing transaction, and nothing else: insert, delete, updates that
// move the row between targets, change it, change only an excluded
// column, change its key; rows without targets; a rolled back write.
func TestCaptureEvents(t *testing.T) {
	t.Parallel()
	e := newCapEnv(t, capItemsDDL)
	require.NoError(t, copier.AddCapture(e.ctx, e.pool, capItemsConfig()))

	for _, step := range []struct {
		name string
		sql  string
		want []string
	}{
		{"insert to two targets", `insert into items (id, name, qty, targets, secret) values (1, 'a', 2, '{n2,n3}', 's')`,
			[]string{"I:id n2 1", "I:id n3 1"}},
		{"insert without targets", `insert into items (id, targets) values (2, null), (3, '{}'), (4, '{null,""}')`, nil},
		{"duplicate and empty targets", `insert into items (id, targets) values (5, '{n3,"",n3,null,n2}')`,
			[]string{"I:id n3 5", "I:id n2 5"}},
		{"update of an excluded column only", `update items set secret = 'changed' where id = 1`, nil},
		{"update of nothing", `update items set name = name where id = 1`, nil},
		{"update of a captured column", `update items set name = 'b' where id = 1`, []string{"I:id n2 1", "I:id n3 1"}},
		// targets is a column sent too: n2, where the row stays, gets it.
		{"move: leave n3, join n4", `update items set targets = '{n2,n4}' where id = 1`, []string{"D:id n3 1", "I:id n2 1", "I:id n4 1"}},
		{"move and change", `update items set targets = '{n4}', name = 'c' where id = 1`, []string{"D:id n2 1", "I:id n4 1"}},
		{"gain targets", `update items set targets = '{n2}' where id = 2`, []string{"I:id n2 2"}},
		{"key change", `update items set id = 10, targets = '{n4,n5}' where id = 1`, []string{"D:id n4 1", "I:id n4 10", "I:id n5 10"}},
		{"delete", `delete from items where id in (10, 3)`, []string{"D:id n4 10", "D:id n5 10"}},
	} {
		e.exec(step.sql)
		evs := e.drain()
		require.Equal(t, step.want, capSummary(evs), step.name)
		for _, ev := range evs {
			require.Equal(t, "n1", ev.Origin, step.name)
			require.Equal(t, "public.items", ev.Table, step.name)
			require.NotContains(t, ev.Row, "secret", "%s: excluded column sent", step.name)
			require.NotContains(t, ev.Row, "doubled", "%s: generated column sent", step.name)
		}
	}

	// The payload is the whole row (a D: the old row), each value its text.
	e.exec(`insert into items (id, name, tags, qty, at, targets) values (20, 'x y', '{a,"b c"}', 1.50, '2024-02-03 04:05:06+00', '{n2}')`)
	e.exec(`delete from items where id = 20`)
	evs := e.drain()
	require.Len(t, evs, 2)
	var at string
	require.NoError(t, e.pool.QueryRow(e.ctx, `select '2024-02-03 04:05:06+00'::timestamptz::text`).Scan(&at))
	want := map[string]pgq.Text{"id": pgq.T("20"), "name": pgq.T("x y"), "tags": pgq.T(`{a,"b c"}`), "qty": pgq.T("1.50"),
		"at": pgq.T(at), "targets": pgq.T("{n2}")}
	require.Equal(t, want, evs[0].Row)
	require.Equal(t, want, evs[1].Row)
	require.Equal(t, []string{"I:id n2 20", "D:id n2 20"}, capSummary(evs))

	// A rolled back write sends nothing.
	tx, err := e.pool.Begin(e.ctx)
	require.NoError(t, err)
	_, err = tx.Exec(e.ctx, `insert into items (id, targets) values (30, '{n2}')`)
	require.NoError(t, err)
	require.NoError(t, tx.Rollback(e.ctx))
	require.Empty(t, e.drain())
}

// TestCaptureInvalidTarget: a target that is not a node id fails the
// writing statement with an error naming the table and the value; nothing
// is sent, and no other row of the statement is.
func TestCaptureInvalidTarget(t *testing.T) {
	t.Parallel()
	e := newCapEnv(t, capItemsDDL+`create table routed (id int primary key, target varchar(100));`)
	require.NoError(t, copier.AddCapture(e.ctx, e.pool, capItemsConfig()))
	require.NoError(t, copier.AddCapture(e.ctx, e.pool, copier.CaptureConfig{Table: "routed", Queue: "push_queue", Origin: "n1", TargetColumn: "target"}))
	for _, bad := range []struct{ sql, value string }{
		{`insert into items (id, targets) values (1, '{n2}'), (2, '{n2,"bad node"}')`, `'bad node'`},
		{`insert into items (id, targets) values (3, '{_n2}')`, `'_n2'`},
		{`insert into items (id, targets) values (4, array[repeat('x', 64)])`, `'` + strings.Repeat("x", 64) + `'`},
		{`insert into routed values (1, 'n2;drop')`, `'n2;drop'`},
		{`insert into routed values (2, 'nœud')`, `'nœud'`},
		{`insert into routed values (3, 'n2 ')`, `'n2 '`},
	} {
		_, err := e.pool.Exec(e.ctx, bad.sql)
		require.Error(t, err, bad.sql)
		pe, ok := errors.AsType[*pgconn.PgError](err)
		require.True(t, ok, "%v", err)
		require.Equal(t, "22023", pe.Code)
		require.Contains(t, pe.Message, "invalid target node "+bad.value)
		require.Contains(t, pe.Message, "on table public.")
	}
	require.Empty(t, e.drain())
	var n int
	require.NoError(t, e.pool.QueryRow(e.ctx, "select (select count(*) from items) + (select count(*) from routed)").Scan(&n))
	require.Zero(t, n)
	// A valid text target is one event; NULL and empty are none.
	e.exec(`insert into routed values (4, 'n-2.x_y'), (5, null), (6, '')`)
	require.Equal(t, []string{"I:id n-2.x_y 4"}, capSummary(e.drain()))
}
