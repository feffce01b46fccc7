package copier_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/apply"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/copier"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/urlenc"
	"github.com/stretchr/testify/assert"
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
	Raw                         string // ev_extra2
	Row                         map[string]pgq.Text
}

// capEnv is a database with a push queue and a captured table.
type capEnv struct {
	t    testing.TB
	ctx  context.Context
	db   *pgtest.DB
	pool *pgxpool.Pool
}

func newCapEnv(t testing.TB, ddl string) *capEnv {
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
		out = append(out, capEvent{Type: r.typ, Target: r.e1, Origin: r.e3, Table: r.e4, Raw: r.e2, Row: row})
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

// capEncDDL has a column of each kind whose text a payload carries.
const capEncDDL = `create type enc_pair as (a text, b int);
create domain enc_word as text;
create table enc (
	id   int primary key,
	t    text,
	arr  text[],
	comp enc_pair,
	w    enc_word,
	ts   timestamptz,
	d    date,
	iv   interval,
	f8   float8,
	f4   real,
	b    bytea,
	j    jsonb,
	n    numeric,
	bo   boolean,
	u    uuid,
	"we=ird & ke+y%" text,
	tgt  text not null default 'n2'
);`

// capEncColumns are enc's columns, as sent.
var capEncColumns = []string{"id", "t", "arr", "comp", "w", "ts", "d", "iv", "f8", "f4", "b", "j", "n", "bo", "u", "we=ird & ke+y%", "tgt"}

// TestCapturePayloadEncoding: every payload decodes, with urlenc.Parse
// and with both of Skytools' db_urldecode (C and Python), to each
// column's text as PostgreSQL prints it under the canonical settings
// (NULL as NULL): hostile strings (quotes, &, =, %, +, spaces, newlines,
// backslashes, unicode, emoji) in text, arrays, composites and a domain,
// every ASCII control and printable character, and date/time, interval
// and float columns written by a session whose DateStyle, IntervalStyle
// and extra_float_digits differ from the canonical ones.
func TestCapturePayloadEncoding(t *testing.T) {
	t.Parallel()
	e := newCapEnv(t, capEncDDL)
	require.NoError(t, copier.AddCapture(e.ctx, e.pool, copier.CaptureConfig{Table: "public.enc", Queue: "push_queue", Origin: "n1", TargetColumn: "tgt"}))

	values := pgtest.Hostile(t)
	var ascii strings.Builder
	for c := 1; c < 128; c++ {
		ascii.WriteByte(byte(c))
	}
	values = append(values, ascii.String(), "ünïcødé 日本語 😀 \u200b\u0301", strings.Repeat("%&=+ ", 1000))
	const insert = `insert into enc (id, t, arr, comp, w, ts, d, iv, f8, f4, b, j, n, bo, u, "we=ird & ke+y%")
		values ($1, $2, array[$2, null, $2 || ','], row($2, $1)::enc_pair, $2, '2024-02-29 23:59:59.123456+05:30', '2024-12-31',
		'-1 year 2 mons -3 days 04:05:06.5', 0.1 + $1, 1.1::real / 3, convert_to($2, 'UTF8'), jsonb_build_object($2, $2),
		1.50, $1 % 2 = 0, gen_random_uuid(), $2)`
	for i, v := range values {
		e.exec(insert, i, v)
	}
	e.exec(`insert into enc (id) values (-1)`) // NULLs
	// A session with other output settings: the payload must not follow them.
	conn, err := e.pool.Acquire(e.ctx)
	require.NoError(t, err)
	_, err = conn.Exec(e.ctx, `set datestyle = 'SQL, DMY'; set intervalstyle = 'sql_standard'; set extra_float_digits = 0; set timezone = 'America/St_Johns'`)
	require.NoError(t, err)
	_, err = conn.Exec(e.ctx, insert, 1000, "odd settings")
	require.NoError(t, err)
	_, err = conn.Exec(e.ctx, `reset all`)
	require.NoError(t, err)
	conn.Release()

	// What each row must decode to: every column's text, read back in a
	// canonical session (the time zone is the node's own: any offset
	// reads back as the same instant).
	cols := make([]string, len(capEncColumns))
	for i, c := range capEncColumns {
		cols[i] = "(e." + pgx.Identifier{c}.Sanitize() + ")::text"
	}
	rows, err := e.pool.Query(e.ctx, "select "+strings.Join(cols, ", ")+" from enc e order by id")
	require.NoError(t, err)
	want := map[string]map[string]pgq.Text{}
	for rows.Next() {
		vals := make([]pgq.Text, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		require.NoError(t, rows.Scan(ptrs...))
		m := map[string]pgq.Text{}
		for i, c := range capEncColumns {
			m[c] = vals[i]
		}
		want[vals[0].String] = m
	}
	require.NoError(t, rows.Err())
	require.Len(t, want, len(values)+2)

	evs := e.drain()
	require.Len(t, evs, len(want))
	for _, ev := range evs {
		require.Equal(t, "I:id", ev.Type)
		w := want[ev.Row["id"].String]
		// The writer's time zone may differ: ISO text with its offset,
		// the same instant.
		if got := ev.Row["ts"]; got.Valid && got != w["ts"] {
			var same bool
			require.NoError(t, e.pool.QueryRow(e.ctx, "select $1::timestamptz = $2::timestamptz", got.String, w["ts"].String).Scan(&same))
			require.True(t, same, "ts %q vs %q", got.String, w["ts"].String)
			require.Regexp(t, `^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+[-+]\d\d(:\d\d)?$`, got.String, "ISO")
			w["ts"] = got
		}
		require.Equal(t, w, ev.Row, "row %s", ev.Row["id"].String)
	}
	// Skytools reads the same rows.
	raws := make([]string, len(evs))
	for i, ev := range evs {
		raws[i] = ev.Raw
		require.NotRegexp(t, `[\x00-\x20\x7f]`, ev.Raw, "control characters and spaces are escaped")
	}
	for _, impl := range []string{"c", "py"} {
		decoded := skytoolsDecode(t, impl, raws)
		require.Len(t, decoded, len(evs))
		for i, d := range decoded {
			w := want[evs[i].Row["id"].String]
			require.Len(t, d, len(w), "%s decoder, row %d", impl, i)
			for k, v := range w {
				if !v.Valid {
					require.Nil(t, d[k], "%s decoder: %s", impl, k)
					continue
				}
				require.NotNil(t, d[k], "%s decoder: %s", impl, k)
				require.Equal(t, v.String, *d[k], "%s decoder: %s", impl, k)
			}
		}
	}
}

// TestCaptureSettingsPinnedPerType: a table whose only setting-dependent
// column is of one kind is encoded canonically when a session changes the
// one setting that kind depends on (the trigger checks only the settings
// its table needs).
func TestCaptureSettingsPinnedPerType(t *testing.T) {
	t.Parallel()
	e := newCapEnv(t, "")
	for i, tc := range []struct{ typ, value, set string }{
		{"timestamptz", "2024-02-29 23:59:59.5+00", "set datestyle = 'German'"},
		{"date", "2024-12-31", "set datestyle = 'SQL, DMY'"},
		{"interval", "-1 year 2 mons -3 days 04:05:06.5", "set intervalstyle = 'sql_standard'"},
		{"float8", "0.30000000000000004", "set extra_float_digits = -3"},
		{"point", "(0.30000000000000004,1)", "set extra_float_digits = -3"},
		{"tstzrange", "[2024-01-01 00:00:00+00,2024-02-01 00:00:00+00)", "set datestyle = 'Postgres'"},
	} {
		tbl := fmt.Sprintf("pinned%d", i)
		e.exec(fmt.Sprintf("create table %s (id int primary key, v %s, tgt text default 'n2')", tbl, tc.typ))
		require.NoError(t, copier.AddCapture(e.ctx, e.pool, copier.CaptureConfig{Table: tbl, Queue: "push_queue", Origin: "n1", TargetColumn: "tgt"}))
		var want string
		require.NoError(t, e.pool.QueryRow(e.ctx, fmt.Sprintf("select $1::%s::text", tc.typ), tc.value).Scan(&want))
		err := pgx.BeginFunc(e.ctx, e.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(e.ctx, strings.Replace(tc.set, "set ", "set local ", 1)); err != nil {
				return err
			}
			var odd string
			if err := tx.QueryRow(e.ctx, fmt.Sprintf("select $1::%s::text", tc.typ), tc.value).Scan(&odd); err != nil {
				return err
			}
			require.NotEqual(t, want, odd, "%s: the setting changes the text", tc.typ)
			_, err := tx.Exec(e.ctx, fmt.Sprintf("insert into %s (id, v) values (1, $1::%s)", tbl, tc.typ), tc.value)
			return err
		})
		require.NoError(t, err)
		evs := e.drain()
		require.Len(t, evs, 1)
		require.Equal(t, pgq.T(want), evs[0].Row["v"], tc.typ)
	}
}

// skytoolsDecode decodes payloads with Skytools' db_urldecode, its C
// (impl "c") or Python ("py") implementation, from the system
// python3-skytools.
func skytoolsDecode(t *testing.T, impl string, payloads []string) []map[string]*string {
	t.Helper()
	const script = `import json, sys
import skytools._cquoting as c, skytools._pyquoting as py
dec = {"c": c.db_urldecode, "py": py.db_urldecode}[sys.argv[1]]
json.dump([dec(p) for p in json.load(sys.stdin)], sys.stdout)`
	in, err := json.Marshal(payloads)
	require.NoError(t, err)
	cmd := exec.Command("/usr/bin/python3", "-I", "-c", script, impl)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if strings.Contains(stderr.String(), "ModuleNotFoundError") {
		t.Fatalf("python3-skytools missing: run scripts/ensure-deps (%s)", stderr.String())
	}
	require.NoError(t, err, stderr.String())
	var res []map[string]*string
	require.NoError(t, json.Unmarshal(out, &res))
	return res
}

// capNodeDDL is every node's schema in the end-to-end capture test:
// items (targets in a column) and orders (targets from a function), and
// a log of every row applied or deleted, to count applies.
const capNodeDDL = capItemsDDL + `
create table orders (id text primary key, region text, note text);
create function order_targets(o orders) returns text[] language sql immutable
	as $$ select case o.region when 'eu' then array['n2'] when 'us' then array['n3']
	     when 'all' then array['n2', 'n3', 'n2'] end $$;
create table applies (tbl text not null, op text not null, id text not null);
create function log_apply() returns trigger language plpgsql as $$
begin
	if tg_op = 'DELETE' then
		insert into applies values (tg_table_name, 'D', old.id::text);
	else
		insert into applies values (tg_table_name, 'I', new.id::text);
	end if;
	return null;
end $$;
create trigger log_apply after insert or update or delete on items for each row execute function log_apply();
create trigger log_apply after insert or update or delete on orders for each row execute function log_apply();`

// capCluster is a hub and three nodes running TargetedCopiers; n1
// captures items and orders, n2 captures its own items too.
type capCluster struct {
	t     *testing.T
	ctx   context.Context
	hub   *pgtest.DB
	nodes map[string]*pgtest.DB
}

var capNodes = []string{"n1", "n2", "n3"}

// tableApplier applies each row into the table its event names
// (ev_extra4, set by the capture trigger) with that table's RowApplier.
func tableApplier(t *testing.T, tables ...string) apply.Applier {
	appliers := map[string]*apply.RowApplier{}
	for _, tbl := range tables {
		ra, err := apply.NewRowApplier(tbl, []string{"id"})
		require.NoError(t, err)
		appliers["public."+tbl] = ra
	}
	return apply.ApplierFunc(func(ctx context.Context, tx pgx.Tx, ev *pgq.Event) error {
		ra, ok := appliers[ev.Extra4.String]
		if !ok {
			return fmt.Errorf("%w: event %d: no table %q", apply.ErrBadPayload, ev.ID, ev.Extra4.String)
		}
		return ra.Apply(ctx, tx, ev)
	})
}

func newCapCluster(t *testing.T) *capCluster {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	c := &capCluster{t: t, ctx: ctx, hub: cluster.NewDB(t), nodes: map[string]*pgtest.DB{}}
	for _, n := range capNodes {
		c.nodes[n] = cluster.NewDB(t)
		c.exec(n, capNodeDDL)
	}
	applier := tableApplier(t, "items", "orders")
	var pools []*pgxpool.Pool
	for _, n := range capNodes {
		// The node's ordinary pool: the pull turns capture off in the
		// transactions that apply rows, so the rows it applies into n2's
		// captured items are not sent on again.
		cfg := copier.Config{Node: n, Local: c.nodes[n].Pool, Hubs: []*pgxpool.Pool{c.hub.Pool}, Applier: applier,
			RetryDelay: 10 * time.Millisecond, MaxRetries: 2, PollInterval: 20 * time.Millisecond,
			ErrorBackoff: consumer.Backoff{Initial: 10 * time.Millisecond, Max: 200 * time.Millisecond}}
		tc, err := copier.New(cfg)
		require.NoError(t, err)
		require.NoError(t, tc.Setup(ctx))
		runCopier(t, ctx, cfg)
		pools = append(pools, c.nodes[n].Pool)
	}
	tctx, tcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { tickLoop(tctx, append(pools, c.hub.Pool)...); close(done) }()
	t.Cleanup(func() { tcancel(); <-done })
	return c
}

func (c *capCluster) exec(node, sql string, args ...any) {
	c.t.Helper()
	_, err := c.nodes[node].Pool.Exec(c.ctx, sql, args...)
	require.NoError(c.t, err, "%s: %s", node, sql)
}

func (c *capCluster) strings(node, sql string, args ...any) []string {
	c.t.Helper()
	rows, err := c.nodes[node].Pool.Query(c.ctx, sql, args...)
	require.NoError(c.t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(c.t, err)
	return out
}

// Each row as text, every column but the excluded secret (NULL on the
// targets) and the generated doubled (computed on each node).
const (
	capItemsRows  = `select format('%s|%s|%s|%s|%s|%s', id, name, tags, qty, at, targets) from items i where {cond} order by id`
	capOrdersRows = `select format('%s|%s|%s', id, region, note) from orders o where {cond} order by id`
)

// want is what node must hold: the rows of n1 addressed to it and those
// of n2 (which also captures items; its own rows have ids from 5000),
// for n2 all of them.
func (c *capCluster) want(node string) (items, orders []string) {
	items = c.strings("n1", strings.Replace(capItemsRows, "{cond}", "$1 = any (targets)", 1), node)
	// n2's own rows (n1's it holds are in the list already).
	items = append(items, c.strings("n2", strings.Replace(capItemsRows, "{cond}", "id >= 5000 and ($1 = 'n2' or $1 = any (targets))", 1), node)...)
	slices.Sort(items)
	if node != "n1" {
		orders = c.strings("n1", strings.Replace(capOrdersRows, "{cond}", "$1 = any (order_targets(o))", 1), node)
	}
	return items, orders
}

func (c *capCluster) has(node string) (items, orders []string) {
	items = c.strings(node, strings.Replace(capItemsRows, "{cond}", "true", 1))
	slices.Sort(items)
	if node != "n1" {
		orders = c.strings(node, strings.Replace(capOrdersRows, "{cond}", "true", 1))
	}
	return items, orders
}

// converged waits until every node holds exactly its rows.
func (c *capCluster) converged() {
	c.t.Helper()
	for _, n := range capNodes[1:] {
		var wi, wo, hi, ho []string
		if !assert.Eventually(c.t, func() bool {
			wi, wo = c.want(n)
			hi, ho = c.has(n)
			return slices.Equal(wi, hi) && slices.Equal(wo, ho)
		}, 90*time.Second, 20*time.Millisecond, "node %s", n) {
			require.Equal(c.t, wi, hi, "node %s: items", n)
			require.Equal(c.t, wo, ho, "node %s: orders", n)
		}
		var secrets int
		require.NoError(c.t, c.nodes[n].Pool.QueryRow(c.ctx, "select count(*) from items where secret is not null and id < 5000").Scan(&secrets))
		require.Zero(c.t, secrets, "node %s holds excluded values", n)
	}
}

// sentEvents counts, per "target table op id", the events the nodes'
// push queues hold (no rotation happens during the test).
func (c *capCluster) sentEvents() map[string]int {
	out := map[string]int{}
	for _, n := range capNodes {
		for _, s := range c.strings(n, `select ev_extra1 || ' ' || split_part(ev_extra4, '.', 2) || ' ' || left(ev_type, 1) || ' ' ||
				substring(ev_extra2 from '(?:^|&)id=([^&]*)') from pgq.event_template where ev_extra4 is not null`) {
			out[s]++
		}
	}
	return out
}

// TestCaptureEndToEnd: plain INSERT, UPDATE and DELETE on captured tables
// reach exactly their targets through real TargetedCopiers (a hub, three
// nodes) and the RowApplier, exactly once: rows appear, change, move
// between targets, change key, disappear; values are hostile strings,
// arrays and NULLs; the excluded column never leaves n1; targets come
// from a column (items) and from a function (orders). n2 captures its own
// items too, while its copier applies n1's rows into that table with
// capture off: those rows are not sent on again.
func TestCaptureEndToEnd(t *testing.T) {
	t.Parallel()
	c := newCapCluster(t)
	n1 := c.nodes["n1"].Pool
	require.NoError(t, copier.AddCapture(c.ctx, n1, capItemsConfig()))
	require.NoError(t, copier.AddCapture(c.ctx, n1, copier.CaptureConfig{Table: "orders", Queue: "push_queue", Origin: "n1", TargetFunction: "order_targets"}))
	require.NoError(t, copier.AddCapture(c.ctx, c.nodes["n2"].Pool, copier.CaptureConfig{Table: "items", Queue: "push_queue", Origin: "n2", TargetColumn: "targets"}))

	hostile := pgtest.Hostile(t)
	targetSets := []string{"{n2}", "{n3}", "{n2,n3}", "{}", "", "{n3,n2,n3}"}
	regions := []string{"eu", "us", "all", "none", ""}
	tx, err := n1.Begin(c.ctx)
	require.NoError(t, err)
	defer tx.Rollback(c.ctx)
	for i, h := range hostile {
		var targets, region any
		if ts := targetSets[i%len(targetSets)]; ts != "" {
			targets = ts
		}
		if r := regions[i%len(regions)]; r != "" {
			region = r
		}
		var name any = h
		if i%7 == 3 {
			name = nil
		}
		_, err := tx.Exec(c.ctx, `insert into items (id, name, tags, qty, at, targets, secret)
			values ($1::int, $2, array[$3, null, 'x y'], $1::int * 1.5, '2024-01-01 00:00:00+00'::timestamptz + $1::int * interval '1 hour', $4, 'secret')`,
			i, name, h, targets)
		require.NoError(t, err)
		_, err = tx.Exec(c.ctx, `insert into orders values ($1, $2, $3)`, h+"#"+strconv.Itoa(i), region, h)
		require.NoError(t, err)
	}
	require.NoError(t, tx.Commit(c.ctx))
	// n2's own rows, for n3.
	c.exec("n2", `insert into items (id, name, targets) select g, 'from n2 ' || g, '{n3}' from generate_series(5000, 5004) g`)
	c.converged()

	// Changes, each in its own transaction.
	for _, sql := range []string{
		`update items set name = name || ' & changed' where id % 3 = 0`,
		`update items set targets = '{n3}' where targets = '{n2}'`,                      // move n2 → n3
		`update items set targets = array_append(targets, 'n2') where targets = '{n3}'`, // join n2
		`update items set targets = '{}' where id % 5 = 1`,                              // leave all
		`update items set secret = 'changed again'`,                                     // excluded only: nothing sent
		`update items set id = id + 1000, targets = '{n2}' where id % 4 = 2`,            // key change
		`update items set id = id + 2000 where id % 4 = 3`,                              // key change, same targets
		`delete from items where id % 6 = 5`,
		`update items set qty = null, tags = null, at = null where id % 2 = 0`,
		`update orders set region = 'all' where region = 'eu'`,
		`update orders set region = 'us' where region is null`,
		`update orders set note = note || E'\n+1' where region = 'all'`,
		`delete from orders where region = 'us'`,
	} {
		c.exec("n1", sql)
	}
	c.exec("n2", `update items set name = 'from n2, changed' where id = 5000`)
	c.exec("n2", `delete from items where id = 5001`)
	c.converged()

	// Exactly once: each target applied each row as many times as events
	// were sent to it, and n2 sent only its own rows.
	sent := c.sentEvents()
	for key := range sent {
		f := strings.Fields(key)
		if f[0] == "n2" || f[0] == "n3" {
			if id, _ := strconv.Atoi(f[3]); f[1] == "items" && id >= 5000 {
				require.Equal(t, "n3", f[0], "n2's own rows go to n3 only")
			}
		}
	}
	for _, n := range capNodes[1:] {
		applied := map[string]int{}
		for _, s := range c.strings(n, `select tbl || ' ' || op || ' ' || id from applies`) {
			applied[n+" "+s]++
		}
		want := map[string]int{}
		for key, k := range sent {
			f := strings.Fields(key)
			if f[0] != n {
				continue
			}
			id, err := url.QueryUnescape(f[3])
			require.NoError(t, err)
			want[n+" "+f[1]+" "+f[2]+" "+id] += k
		}
		if n == "n2" {
			// n2's own writes are logged by its trigger too.
			for _, s := range c.strings(n, `select 'items ' || op || ' ' || id from applies where id::int >= 5000 and tbl = 'items'`) {
				want[n+" "+s]++
			}
		}
		require.Equal(t, want, applied, "node %s: applies per row vs events sent", n)
	}
	var echoes int
	require.NoError(t, c.nodes["n2"].Pool.QueryRow(c.ctx, `select count(*) from pgq.event_template
		where substring(ev_extra2 from '(?:^|&)id=([^&]*)')::int < 5000`).Scan(&echoes))
	require.Zero(t, echoes, "n2 sent rows its copier applied")
}

// TestCaptureTruncateRefused: TRUNCATE of a captured table fails with an
// error naming it and what to do, and changes nothing; with capture off
// (pgq_go.capture) it is allowed, as it is once the capture is removed.
func TestCaptureTruncateRefused(t *testing.T) {
	t.Parallel()
	e := newCapEnv(t, capItemsDDL)
	require.NoError(t, copier.AddCapture(e.ctx, e.pool, capItemsConfig()))
	e.exec(`insert into items (id, targets) values (1, '{n2}')`)
	e.drain()
	_, err := e.pool.Exec(e.ctx, "truncate items")
	pe, ok := errors.AsType[*pgconn.PgError](err)
	require.True(t, ok, "%v", err)
	require.Equal(t, "0A000", pe.Code)
	require.Equal(t, "table public.items is captured for targeted copy: TRUNCATE would not reach its targets", pe.Message)
	require.Contains(t, pe.Hint, "RemoveCapture")
	var n int
	require.NoError(t, e.pool.QueryRow(e.ctx, "select count(*) from items").Scan(&n))
	require.Equal(t, 1, n)

	tx, err := e.pool.Begin(e.ctx)
	require.NoError(t, err)
	_, err = tx.Exec(e.ctx, "set local pgq_go.capture = 'off'; truncate items")
	require.NoError(t, err)
	require.NoError(t, tx.Rollback(e.ctx))

	require.NoError(t, copier.RemoveCapture(e.ctx, e.pool, "items"))
	e.exec("truncate items")
	require.Empty(t, e.drain())
}

// TestCaptureAddAgainAndAlter: AddCapture run again changes nothing (same
// functions, one trigger, one row); after ALTER TABLE ADD COLUMN the new
// column is not sent (ListCaptures says so) until AddCapture runs again;
// a captured column cannot be dropped while captured; a renamed table
// gets functions of its new name and the old ones go; a new configuration
// (another origin, excluded column) replaces the old.
func TestCaptureAddAgainAndAlter(t *testing.T) {
	t.Parallel()
	e := newCapEnv(t, capItemsDDL)
	fns := func() []string {
		rows, err := e.pool.Query(e.ctx, `select p.oid::regprocedure::text || ' ' || p.oid from pg_proc p
			join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'pgq_go' and p.proname like 'item%' order by 1`)
		require.NoError(t, err)
		out, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		return out
	}
	triggers := func() []string {
		rows, err := e.pool.Query(e.ctx, `select tgname::text from pg_trigger where tgrelid = 'items'::regclass and not tgisinternal order by 1`)
		require.NoError(t, err)
		out, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		return out
	}
	require.NoError(t, copier.AddCapture(e.ctx, e.pool, capItemsConfig()))
	first := fns()
	require.Len(t, first, 3)
	require.NoError(t, copier.AddCapture(e.ctx, e.pool, capItemsConfig()))
	require.Equal(t, first, fns(), "same functions, same oids")
	require.Equal(t, []string{"pgq_go_capture", "pgq_go_capture_truncate"}, triggers())
	caps, err := copier.ListCaptures(e.ctx, e.pool)
	require.NoError(t, err)
	require.Len(t, caps, 1)
	c := caps[0]
	require.Equal(t, copier.Capture{Schema: "public", Table: "items", Queue: "push_queue", Origin: "n1", TargetColumn: "targets",
		KeyColumns: []string{"id"}, ExcludeColumns: []string{"secret"}, Columns: []string{"id", "name", "tags", "qty", "at", "targets"},
		PayloadFunc: c.PayloadFunc, TargetsFunc: c.TargetsFunc, EventTable: "public.items", Updated: c.Updated}, c)
	require.Regexp(t, `^pgq_go\.items_[0-9a-f]{8}_payload$`, c.PayloadFunc)
	require.Regexp(t, `^pgq_go\.items_[0-9a-f]{8}_targets$`, c.TargetsFunc)
	e.exec(`insert into items (id, name, targets) values (1, 'a', '{n2}')`)
	// The functions are what a backfill calls.
	var payload string
	var targets []string
	require.NoError(t, e.pool.QueryRow(e.ctx, "select "+c.PayloadFunc+"(i), "+c.TargetsFunc+"(i) from items i").Scan(&payload, &targets))
	evs := e.drain()
	require.Len(t, evs, 1)
	require.Equal(t, evs[0].Raw, payload)
	require.Equal(t, []string{"n2"}, targets)

	e.exec(`alter table items add column color text`)
	caps, err = copier.ListCaptures(e.ctx, e.pool)
	require.NoError(t, err)
	require.Equal(t, `the table changed since AddCapture (columns ["color"] added): run AddCapture again`, caps[0].Problem)
	e.exec(`update items set color = 'red', name = 'b' where id = 1`)
	evs = e.drain()
	require.Len(t, evs, 1)
	require.NotContains(t, evs[0].Row, "color", "not captured before AddCapture runs again")
	require.NoError(t, copier.AddCapture(e.ctx, e.pool, capItemsConfig()))
	caps, err = copier.ListCaptures(e.ctx, e.pool)
	require.NoError(t, err)
	require.Empty(t, caps[0].Problem)
	e.exec(`update items set color = 'blue' where id = 1`)
	evs = e.drain()
	require.Len(t, evs, 1)
	require.Equal(t, pgq.T("blue"), evs[0].Row["color"])

	_, err = e.pool.Exec(e.ctx, `alter table items drop column color`)
	require.ErrorContains(t, err, "cannot drop column color of table items because other objects depend on it")
	_, err = e.pool.Exec(e.ctx, `drop table items`)
	require.ErrorContains(t, err, "cannot drop table items because other objects depend on it")

	// Renamed: new names, old functions dropped; another configuration.
	e.exec(`alter table items rename to "Things & stuff"`)
	cfg := capItemsConfig()
	cfg.Table, cfg.Origin, cfg.ExcludeColumns = "public.Things & stuff", "n9", []string{"secret", "name"}
	require.NoError(t, copier.AddCapture(e.ctx, e.pool, cfg))
	require.Empty(t, fns(), "the old functions are gone")
	caps, err = copier.ListCaptures(e.ctx, e.pool)
	require.NoError(t, err)
	require.Len(t, caps, 1)
	require.Equal(t, "Things & stuff", caps[0].Table)
	require.Equal(t, `public."Things & stuff"`, caps[0].EventTable)
	require.Equal(t, "n9", caps[0].Origin)
	require.Regexp(t, `^pgq_go\."Things & stuff_[0-9a-f]{8}_payload"$`, caps[0].PayloadFunc)
	e.exec(`update "Things & stuff" set name = 'not sent', qty = 3 where id = 1`)
	evs = e.drain()
	require.Len(t, evs, 1)
	require.Equal(t, "n9", evs[0].Origin)
	require.Equal(t, `public."Things & stuff"`, evs[0].Table)
	require.NotContains(t, evs[0].Row, "name")
	require.Equal(t, pgq.T("3"), evs[0].Row["qty"])
}

// TestRemoveCapture: RemoveCapture leaves nothing of the capture behind
// (triggers, generated functions, its row), writes are no longer sent,
// and a second removal says the table is not captured. A table dropped
// with CASCADE is removed by its old name.
func TestRemoveCapture(t *testing.T) {
	t.Parallel()
	e := newCapEnv(t, capItemsDDL+`create table other (id int primary key, t text);`)
	objects := func() []string {
		rows, err := e.pool.Query(e.ctx, `select 'function ' || p.oid::regprocedure::text from pg_proc p
				join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'pgq_go'
			union all select 'trigger ' || tgname || ' on ' || tgrelid::regclass::text from pg_trigger where not tgisinternal
			union all select 'capture ' || table_name from pgq_go.capture
			order by 1`)
		require.NoError(t, err)
		out, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		return out
	}
	require.NoError(t, copier.AddCapture(e.ctx, e.pool, copier.CaptureConfig{Table: "other", Queue: "push_queue", Origin: "n1", TargetColumn: "t"}))
	before := objects()
	require.NoError(t, copier.AddCapture(e.ctx, e.pool, capItemsConfig()))
	require.Len(t, objects(), len(before)+6)
	require.NoError(t, copier.RemoveCapture(e.ctx, e.pool, "public.items"))
	require.Equal(t, before, objects())
	e.exec(`insert into items (id, targets) values (1, '{n2}'); update items set name = 'x'; delete from items`)
	require.Empty(t, e.drain())
	require.ErrorIs(t, copier.RemoveCapture(e.ctx, e.pool, "items"), copier.ErrCaptureNotFound)
	require.ErrorIs(t, copier.RemoveCapture(e.ctx, e.pool, "nope"), copier.ErrCaptureNotFound)

	// Dropped with CASCADE: the row and the trigger function remain until
	// RemoveCapture, which finds the table by its old name.
	require.NoError(t, copier.AddCapture(e.ctx, e.pool, capItemsConfig()))
	e.exec(`drop table items cascade`)
	caps, err := copier.ListCaptures(e.ctx, e.pool)
	require.NoError(t, err)
	require.Len(t, caps, 2)
	require.Equal(t, "items", caps[0].Table)
	require.Contains(t, caps[0].Problem, "the table was dropped")
	require.Empty(t, caps[1].Problem)
	require.NoError(t, copier.RemoveCapture(e.ctx, e.pool, "items"))
	require.Equal(t, before, objects())
	require.NoError(t, copier.RemoveCapture(e.ctx, e.pool, "other"))
	caps, err = copier.ListCaptures(e.ctx, e.pool)
	require.NoError(t, err)
	require.Empty(t, caps)
}

// TestCaptureConfigErrors: a configuration that cannot work is refused
// with an error naming the table and the field, and creates nothing.
func TestCaptureConfigErrors(t *testing.T) {
	t.Parallel()
	e := newCapEnv(t, capItemsDDL+`
		create table nokey (a int, b text);
		create table nullkey (a int, b text);
		create table part (id int primary key, t text) partition by range (id);
		create view v as select * from items;
		create function f_int(i items) returns int language sql as 'select 1';
		create function f_set(i items) returns setof text language sql as 'select ''n2''';
		create function f_ok(i items) returns text language sql as 'select ''n2''';
		create procedure p_ok(i items) language sql as 'select 1';`)
	base := capItemsConfig
	for _, tc := range []struct {
		name string
		mod  func(c *copier.CaptureConfig)
		msg  string
	}{
		{"no table", func(c *copier.CaptureConfig) { c.Table = "" }, "Table is required"},
		{"bad table name", func(c *copier.CaptureConfig) { c.Table = "a." }, `invalid table name "a."`},
		{"bad queue", func(c *copier.CaptureConfig) { c.Queue = "" }, "Queue"},
		{"bad origin", func(c *copier.CaptureConfig) { c.Origin = "n 1" }, "Origin"},
		{"no targets", func(c *copier.CaptureConfig) { c.TargetColumn = "" }, "give TargetColumn or TargetFunction"},
		{"both targets", func(c *copier.CaptureConfig) { c.TargetFunction = "f_ok" }, "not both"},
		{"key listed twice", func(c *copier.CaptureConfig) { c.KeyColumns = []string{"id", "id"} }, `column "id" listed twice`},
		{"key excluded", func(c *copier.CaptureConfig) { c.ExcludeColumns = []string{"id"} }, `key column "id" cannot be excluded`},
		{"no such table", func(c *copier.CaptureConfig) { c.Table = "public.nope" }, `"public"."nope": table not found`},
		{"view", func(c *copier.CaptureConfig) { c.Table = "v" }, "not an ordinary table"},
		{"partitioned", func(c *copier.CaptureConfig) { c.Table, c.TargetColumn, c.ExcludeColumns = "part", "t", nil }, "capture each partition"},
		{"no queue", func(c *copier.CaptureConfig) { c.Queue = "other_queue" }, "queue other_queue: queue not found"},
		{"no primary key", func(c *copier.CaptureConfig) { c.Table, c.TargetColumn, c.ExcludeColumns = "nokey", "b", nil }, "no primary key: give its key columns"},
		{"nullable key", func(c *copier.CaptureConfig) {
			c.Table, c.TargetColumn, c.ExcludeColumns, c.KeyColumns = "nullkey", "b", nil, []string{"a"}
		}, `key column "a" may be NULL`},
		{"unknown key", func(c *copier.CaptureConfig) { c.KeyColumns = []string{"nope"} }, `key column "nope" does not exist`},
		{"generated key", func(c *copier.CaptureConfig) { c.KeyColumns = []string{"doubled"} }, `key column "doubled" is a generated column`},
		{"unknown excluded", func(c *copier.CaptureConfig) { c.ExcludeColumns = []string{"nope"} }, `excluded column "nope" does not exist`},
		{"unknown target column", func(c *copier.CaptureConfig) { c.TargetColumn = "nope" }, `target column "nope" does not exist`},
		{"target column type", func(c *copier.CaptureConfig) { c.TargetColumn = "qty" }, `target column "qty" is numeric: want text or text[]`},
		{"target function missing", func(c *copier.CaptureConfig) { c.TargetColumn, c.TargetFunction = "", "nope" }, `target function "nope"(public.items) not found`},
		{"target function type", func(c *copier.CaptureConfig) { c.TargetColumn, c.TargetFunction = "", "f_int" }, "returns integer: want text or text[]"},
		{"target function set", func(c *copier.CaptureConfig) { c.TargetColumn, c.TargetFunction = "", "public.f_set" }, "returns a set"},
		{"target procedure", func(c *copier.CaptureConfig) { c.TargetColumn, c.TargetFunction = "", "p_ok" }, "is not a function"},
	} {
		cfg := base()
		tc.mod(&cfg)
		err := copier.AddCapture(e.ctx, e.pool, cfg)
		require.ErrorContains(t, err, tc.msg, tc.name)
		if parts := strings.Split(cfg.Table, "."); parts[len(parts)-1] != "" {
			require.ErrorContains(t, err, parts[len(parts)-1], "%s: the error names the table", tc.name)
		}
	}
	caps, err := copier.ListCaptures(e.ctx, e.pool)
	require.NoError(t, err)
	require.Empty(t, caps)

	// A database without pgq.
	plain := cluster.NewPlainDB(t)
	_, err = plain.Pool.Exec(e.ctx, capItemsDDL)
	require.NoError(t, err)
	err = copier.AddCapture(e.ctx, plain.Pool, capItemsConfig())
	require.ErrorIs(t, err, pgq.ErrNoExtension)
	require.ErrorContains(t, err, "capture public.items")
	caps, err = copier.ListCaptures(e.ctx, plain.Pool)
	require.NoError(t, err)
	require.Empty(t, caps, "nothing was installed")
	var triggers int
	require.NoError(t, e.pool.QueryRow(e.ctx, "select count(*) from pg_trigger where not tgisinternal").Scan(&triggers))
	require.Zero(t, triggers)
}

// capRotation drives table rotations of a queue by hand, as route's
// tests do: its consumer drains every batch, and rotate runs step1 and
// step2 and waits for a tick whose snapshot is past step2, after which
// batches read the new event table only.
type capRotation struct {
	t        *testing.T
	ctx      context.Context
	pool     *pgxpool.Pool
	queue    string
	consumer string
}

func newCapRotation(t *testing.T, ctx context.Context, pool *pgxpool.Pool, queue string) *capRotation {
	r := &capRotation{t: t, ctx: ctx, pool: pool, queue: queue, consumer: "c"}
	_, err := pgq.RegisterConsumer(ctx, pool, queue, r.consumer)
	require.NoError(t, err)
	require.NoError(t, pgq.SetQueueConfig(ctx, pool, queue, pgq.QueueConfig{RotationPeriod: pgq.Ptr(time.Millisecond)}))
	r.drain()
	return r
}

// drain ticks and finishes every batch, returning their events' payloads.
func (r *capRotation) drain() []string {
	_, err := pgq.Tick(r.ctx, r.pool, r.queue)
	require.NoError(r.t, err)
	var out []string
	for {
		info, err := pgq.NextBatch(r.ctx, r.pool, r.queue, r.consumer)
		require.NoError(r.t, err)
		if info == nil {
			return out
		}
		evs, err := pgq.NewBatch(r.pool, r.queue, r.consumer, *info, pgq.ReadOptions{}).All(r.ctx)
		require.NoError(r.t, err)
		for _, ev := range evs {
			out = append(out, ev.Type.String+" "+ev.Extra1.String+" "+ev.Data.String+ev.Extra2.String)
		}
		_, err = pgq.FinishBatch(r.ctx, r.pool, info.ID)
		require.NoError(r.t, err)
	}
}

func (r *capRotation) curTable() (n int) {
	require.NoError(r.t, r.pool.QueryRow(r.ctx, "select queue_cur_table from pgq.queue where queue_name = $1", r.queue).Scan(&n))
	return n
}

// step1 runs rotation step1 (switching to the next event table); it
// returns the events the batches meanwhile held.
func (r *capRotation) step1() (drained []string) {
	before := r.curTable()
	require.Eventually(r.t, func() bool {
		drained = append(drained, r.drain()...)
		_, err := r.pool.Exec(r.ctx, "select pgq.maint_rotate_tables_step1($1)", r.queue)
		require.NoError(r.t, err)
		return r.curTable() != before
	}, time.Minute, 10*time.Millisecond, "rotation step1 never ran")
	return drained
}

// rotate runs a whole rotation and moves the consumer past it; it
// returns the events the batches meanwhile held.
func (r *capRotation) rotate() (drained []string) {
	drained = r.step1()
	return append(drained, r.finish()...)
}

// finish runs rotation step2 and waits for a tick past it.
func (r *capRotation) finish() (drained []string) {
	_, err := r.pool.Exec(r.ctx, "select pgq.maint_rotate_tables_step2()")
	require.NoError(r.t, err)
	var step2 int64
	require.NoError(r.t, r.pool.QueryRow(r.ctx, "select queue_switch_step2 from pgq.queue where queue_name = $1", r.queue).Scan(&step2))
	require.Eventually(r.t, func() bool {
		drained = append(drained, r.drain()...)
		var xmin int64
		require.NoError(r.t, r.pool.QueryRow(r.ctx, `select txid_snapshot_xmin(t.tick_snapshot)
			  from pgq.subscription s join pgq.queue q on q.queue_id = s.sub_queue
			  join pgq.consumer c on c.co_id = s.sub_consumer
			  join pgq.tick t on t.tick_queue = s.sub_queue and t.tick_id = s.sub_last_tick
			 where q.queue_name = $1 and c.co_name = $2`, r.queue, r.consumer).Scan(&xmin))
		return xmin > step2
	}, time.Minute, 10*time.Millisecond, "no tick past step2")
	return drained
}

// TestCaptureRepeatableReadRotation: a REPEATABLE READ or SERIALIZABLE
// transaction whose snapshot predates a whole rotation would make
// pgq.insert_event write into an event table the consumers no longer
// read (the control below loses its event, as route's
// TestInsertEventLosesEventsUnderRepeatableRead shows). The capture
// trigger locks the queue's row first: the write fails with a
// serialization failure (40001), the retried transaction sends its event,
// and it is delivered; while such a transaction is open, rotation waits
// for it. Not parallel: the tick past step2 needs no other transaction
// of the cluster running.
func TestCaptureRepeatableReadRotation(t *testing.T) {
	e := newCapEnv(t, `create table rr (id int primary key, target text)`)
	require.NoError(t, copier.AddCapture(e.ctx, e.pool, copier.CaptureConfig{Table: "rr", Queue: "push_queue", Origin: "n1", TargetColumn: "target"}))
	r := newCapRotation(t, e.ctx, e.pool, "push_queue")

	// beginOld opens a transaction at iso and takes its snapshot, then
	// lets a whole rotation happen.
	beginOld := func(iso pgx.TxIsoLevel) pgx.Tx {
		tx, err := e.pool.BeginTx(e.ctx, pgx.TxOptions{IsoLevel: iso})
		require.NoError(t, err)
		t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
		_, err = tx.Exec(e.ctx, "select 1") // takes the snapshot
		require.NoError(t, err)
		r.rotate()
		return tx
	}

	// Control: the same schedule loses a plain pgq.insert_event.
	tx := beginOld(pgx.RepeatableRead)
	_, err := tx.Exec(e.ctx, "select pgq.insert_event('push_queue', 'control', 'lost', null, null, null, null)")
	require.NoError(t, err)
	require.NoError(t, tx.Commit(e.ctx))
	var delivered []string
	for range 3 {
		delivered = append(delivered, r.drain()...)
	}
	require.Empty(t, delivered, "the control event was delivered: the schedule no longer loses events")

	for i, iso := range []pgx.TxIsoLevel{pgx.RepeatableRead, pgx.Serializable} {
		tx := beginOld(iso)
		_, err := tx.Exec(e.ctx, "insert into rr values ($1, 'n2')", i)
		pe, ok := errors.AsType[*pgconn.PgError](err)
		require.True(t, ok, "%s: the write must fail, got %v", iso, err)
		require.Equal(t, "40001", pe.Code, "%s: %v", iso, err)
		require.NoError(t, tx.Rollback(e.ctx))

		// The retry, with a snapshot after the rotation.
		err = pgx.BeginTxFunc(e.ctx, e.pool, pgx.TxOptions{IsoLevel: iso}, func(tx pgx.Tx) error {
			_, err := tx.Exec(e.ctx, "insert into rr values ($1, 'n2')", i)
			return err
		})
		require.NoError(t, err, iso)
		delivered = nil
		for range 2 {
			delivered = append(delivered, r.drain()...)
		}
		require.Equal(t, []string{fmt.Sprintf("I:id n2 id=%d&target=n2", i)}, delivered, iso)
	}

	// The lock is taken once per transaction; one taken in a
	// subtransaction that rolls back is gone, and taken again: the write
	// after a rotation still fails.
	tx, err = e.pool.BeginTx(e.ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	require.NoError(t, err)
	defer tx.Rollback(context.Background())
	_, err = tx.Exec(e.ctx, "savepoint s; insert into rr values (5, 'n2'); rollback to savepoint s")
	require.NoError(t, err)
	r.step1() // not held back by the rolled back lock
	_, err = tx.Exec(e.ctx, "insert into rr values (6, 'n2')")
	pe, ok := errors.AsType[*pgconn.PgError](err)
	require.True(t, ok, "the write after the rolled back lock must fail, got %v", err)
	require.Equal(t, "40001", pe.Code)
	require.NoError(t, tx.Rollback(e.ctx))
	r.finish()

	// While a REPEATABLE READ transaction that wrote a captured row is
	// open, rotation step1 waits for it; then the row's event arrives.
	tx, err = e.pool.BeginTx(e.ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	require.NoError(t, err)
	defer tx.Rollback(context.Background())
	_, err = tx.Exec(e.ctx, "insert into rr values (10, 'n3'), (11, 'n3'); insert into rr values (12, 'n3')")
	require.NoError(t, err)
	r.drain()
	_, err = e.pool.Exec(e.ctx, "set lock_timeout = '200ms'; select pgq.maint_rotate_tables_step1('push_queue')")
	pe, ok = errors.AsType[*pgconn.PgError](err)
	require.True(t, ok, "step1 must wait for the transaction, got %v", err)
	require.Equal(t, "55P03", pe.Code)
	require.NoError(t, tx.Commit(e.ctx))
	delivered = r.rotate()
	for range 2 {
		delivered = append(delivered, r.drain()...)
	}
	require.Equal(t, []string{"I:id n3 id=10&target=n3", "I:id n3 id=11&target=n3", "I:id n3 id=12&target=n3"}, delivered)
}

// TestCaptureWriterRole: a role that only may write the table and is a
// member of pgq_writer (what pgq.logutriga's writers need) writes
// captured rows, under READ COMMITTED and REPEATABLE READ (the queue lock
// runs as the migration's owner); a role outside pgq_writer cannot.
func TestCaptureWriterRole(t *testing.T) {
	t.Parallel()
	e := newCapEnv(t, capItemsDDL)
	require.NoError(t, copier.AddCapture(e.ctx, e.pool, capItemsConfig()))
	writer := fmt.Sprintf("capwriter_%d", os.Getpid())
	outsider := fmt.Sprintf("capoutsider_%d", os.Getpid())
	for _, role := range []string{writer, outsider} {
		e.exec("create role " + role + " login")
		e.exec("grant select, insert, update, delete on items to " + role)
		t.Cleanup(func() {
			_, _ = e.pool.Exec(context.Background(), "drop owned by "+role)
			_, _ = e.pool.Exec(context.Background(), "drop role if exists "+role)
		})
	}
	e.exec("grant pgq_writer to " + writer)
	connect := func(role string) *pgxpool.Pool {
		p, err := pgxpool.New(e.ctx, strings.Replace(e.db.DSN, "user=postgres", "user="+role, 1))
		require.NoError(t, err)
		t.Cleanup(p.Close)
		var super bool
		require.NoError(t, p.QueryRow(e.ctx, "select rolsuper from pg_roles where rolname = current_user").Scan(&super))
		require.False(t, super)
		return p
	}
	w := connect(writer)
	_, err := w.Exec(e.ctx, "insert into items (id, targets) values (1, '{n2}')")
	require.NoError(t, err)
	err = pgx.BeginTxFunc(e.ctx, w, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		_, err := tx.Exec(e.ctx, "update items set name = 'rr', targets = '{n2,n3}' where id = 1")
		return err
	})
	require.NoError(t, err)
	require.Equal(t, []string{"I:id n2 1", "I:id n2 1", "I:id n3 1"}, capSummary(e.drain()))

	_, err = connect(outsider).Exec(e.ctx, "insert into items (id, targets) values (2, '{n2}')")
	require.ErrorContains(t, err, "permission denied")
	require.Empty(t, e.drain())
}

// BenchmarkCaptureCost measures the capture trigger's cost per row beside
// pgq.logutriga on the same table, in the same run (make bench has the
// bulk figure; this adds single-row statements):
//
//	go test ./copier/ -run '^$' -bench CaptureCost -benchtime 1x -v
//
// Each variant inserts the same rows into its own copy of one table: N
// single-row INSERT statements from one connection (each its own
// transaction: what an application does), and N rows in one INSERT ...
// SELECT (the trigger alone, without round trips). Rounds are interleaved
// and the best of each variant reported, with the trigger's added cost
// per row (the variant minus the table without trigger) and its ratio to
// logutriga's. PGQ_CAPTURE_COST_ROWS sets N (default 20000).
func BenchmarkCaptureCost(b *testing.B) {
	t := b
	n, rounds := 20000, 3
	if s := os.Getenv("PGQ_CAPTURE_COST_ROWS"); s != "" {
		var err error
		n, err = strconv.Atoi(s)
		require.NoError(t, err)
	}
	e := newCapEnv(t, "")
	const shape = `(id int primary key, name text, qty numeric, at timestamptz, tags text[], note text, targets text[])`
	type variant struct {
		name, table string
		targets     string
		iso         pgx.TxIsoLevel
	}
	variants := []variant{
		{"no trigger", "cost_none", "{n2}", ""},
		{"pgq.logutriga", "cost_logu", "{n2}", ""},
		{"capture, 1 target", "cost_cap1", "{n2}", ""},
		{"capture, 2 targets", "cost_cap2", "{n2,n3}", ""},
		{"capture, 4 targets", "cost_cap4", "{n2,n3,n4,n5}", ""},
		// Single rows in BEGIN/COMMIT (three round trips), to compare with:
		{"capture, 1 target, BEGIN READ COMMITTED", "cost_cap1", "{n2}", pgx.ReadCommitted},
		{"capture, 1 target, BEGIN REPEATABLE READ", "cost_cap1", "{n2}", pgx.RepeatableRead},
	}
	for _, v := range variants {
		e.exec("create table if not exists " + v.table + " " + shape)
	}
	e.exec(`create trigger logu after insert or update or delete on cost_logu for each row execute function pgq.logutriga('push_queue')`)
	for _, tbl := range []string{"cost_cap1", "cost_cap2", "cost_cap4"} {
		require.NoError(t, copier.AddCapture(e.ctx, e.pool, copier.CaptureConfig{Table: tbl, Queue: "push_queue", Origin: "n1", TargetColumn: "targets"}))
	}
	conn, err := pgx.Connect(e.ctx, e.db.DSN)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	reset := func(table string) {
		_, err := conn.Exec(e.ctx, "set pgq_go.capture = 'off'; truncate "+table+"; reset pgq_go.capture")
		require.NoError(t, err)
		_, err = conn.Exec(e.ctx, "select pgq.force_tick('push_queue')") // keep the ticker's idea of the queue fresh
		require.NoError(t, err)
		rows, err := conn.Query(e.ctx, "select format('truncate %I.%I', schemaname, tablename) from pg_tables where schemaname = 'pgq' and tablename ~ '^event_[0-9]+_[0-9]+$'")
		require.NoError(t, err)
		stmts, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		for _, s := range stmts {
			_, err := conn.Exec(e.ctx, s)
			require.NoError(t, err)
		}
		_, err = conn.Exec(e.ctx, "vacuum analyze "+table)
		require.NoError(t, err)
	}
	const row = `($1::int, 'name ' || $1 || ' & more', $1 * 1.5, now(), '{a,"b c"}', 'a note, with spaces', $2::text[])`
	single := func(v variant) time.Duration {
		reset(v.table)
		sql := "insert into " + v.table + " values " + row
		start := time.Now()
		for i := range n {
			if v.iso == "" {
				_, err = conn.Exec(e.ctx, sql, i, v.targets)
			} else {
				err = pgx.BeginTxFunc(e.ctx, conn, pgx.TxOptions{IsoLevel: v.iso}, func(tx pgx.Tx) error {
					_, err := tx.Exec(e.ctx, sql, i, v.targets)
					return err
				})
			}
			require.NoError(t, err)
		}
		return time.Since(start)
	}
	bulk := func(v variant) time.Duration {
		reset(v.table)
		start := time.Now()
		err := pgx.BeginTxFunc(e.ctx, conn, pgx.TxOptions{IsoLevel: v.iso}, func(tx pgx.Tx) error {
			_, err := tx.Exec(e.ctx, "insert into "+v.table+` select g, 'name ' || g || ' & more', g * 1.5, now(), '{a,"b c"}',
				'a note, with spaces', $2::text[] from generate_series(1, $1::int) g`, n, v.targets)
			return err
		})
		require.NoError(t, err)
		return time.Since(start)
	}
	best := map[string][2]time.Duration{}
	for range rounds {
		for _, v := range variants {
			s, b := single(v), bulk(v)
			cur, ok := best[v.name]
			if !ok || s < cur[0] {
				cur[0] = s
			}
			if !ok || b < cur[1] {
				cur[1] = b
			}
			best[v.name] = cur
		}
	}
	perRow := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) }
	none, logu := best["no trigger"], best["pgq.logutriga"]
	t.Logf("%d rows, best of %d rounds; added = per row minus the table without trigger; ratio = added / logutriga's added", n, rounds)
	t.Logf("%-40s %10s %8s %6s | %10s %8s %6s", "variant", "single µs", "added", "ratio", "bulk µs", "added", "ratio")
	for _, v := range variants {
		d := best[v.name]
		t.Logf("%-40s %10.1f %8.1f %6.2f | %10.1f %8.1f %6.2f", v.name,
			perRow(d[0]), perRow(d[0]-none[0]), float64(d[0]-none[0])/float64(logu[0]-none[0]),
			perRow(d[1]), perRow(d[1]-none[1]), float64(d[1]-none[1])/float64(logu[1]-none[1]))
	}
}

// A node's table is captured once; from then on plain INSERT, UPDATE and
// DELETE send each row to the nodes its targets column names, through the
// node's push queue, in the writing transaction. A TargetedCopier running
// on the node carries the events to their targets (see Example).
func ExampleAddCapture() {
	ctx := context.Background()
	node, err := pgx.Connect(ctx, exampleNode("capture"))
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close(ctx)
	// copier Setup creates the push queue; here, by hand.
	if _, err := pgq.CreateQueue(ctx, node, "push_queue"); err != nil {
		log.Fatal(err)
	}
	if _, err := node.Exec(ctx, `create table customers (id int primary key, name text, regions text[], notes text)`); err != nil {
		log.Fatal(err)
	}
	err = copier.AddCapture(ctx, node, copier.CaptureConfig{
		Table:          "customers",
		Queue:          "push_queue",
		Origin:         "paris",
		TargetColumn:   "regions",         // text[]: one event per target
		ExcludeColumns: []string{"notes"}, // stays on this node
	})
	if err != nil {
		log.Fatal(err)
	}
	// The application writes as it always did.
	if _, err := node.Exec(ctx, `insert into customers values (1, 'Zoë & Co', '{berlin,madrid}', 'private');
		update customers set regions = '{madrid}' where id = 1`); err != nil {
		log.Fatal(err)
	}
	rows, err := node.Query(ctx, `select ev_type, ev_extra1, ev_extra2 from pgq.event_template order by ev_id`)
	if err != nil {
		log.Fatal(err)
	}
	// Each event: type, target, the row urlencoded (non-ASCII text as it
	// is; the excluded column absent).
	var typ, target, row string
	_, err = pgx.ForEachRow(rows, []any{&typ, &target, &row}, func() error {
		fmt.Println(typ, target, row)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// I:id berlin id=1&name=Zoë+%26+Co&regions={berlin,madrid}
	// I:id madrid id=1&name=Zoë+%26+Co&regions={berlin,madrid}
	// D:id berlin id=1&name=Zoë+%26+Co&regions={berlin,madrid}
	// I:id madrid id=1&name=Zoë+%26+Co&regions={madrid}
}
