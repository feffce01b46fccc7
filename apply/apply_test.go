package apply_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/apply"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/route"
	"github.com/pgq-go/pgq/urlenc"
	"github.com/stretchr/testify/require"
)

func mustFunc(t *testing.T, fn string, opts ...apply.Option) *apply.FuncApplier {
	t.Helper()
	a, err := apply.NewFuncApplier(fn, opts...)
	require.NoError(t, err)
	return a
}

func mustRow(t *testing.T, table string, keys []string, opts ...apply.Option) *apply.RowApplier {
	t.Helper()
	a, err := apply.NewRowApplier(table, keys, opts...)
	require.NoError(t, err)
	return a
}

type applierEnv struct {
	ctx  context.Context
	pool *pgxpool.Pool
}

// applierDB gives a fresh database with ddl run in it.
func applierDB(t *testing.T, ddl ...string) *applierEnv {
	t.Helper()
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	e := &applierEnv{ctx: ctx, pool: cluster.NewPlainDB(t).Pool}
	for _, s := range ddl {
		_, err := e.pool.Exec(ctx, s)
		require.NoError(t, err, s)
	}
	return e
}

// apply runs a.Apply in its own transaction, committed on success.
func (e *applierEnv) apply(a apply.Applier, ev *pgq.Event) error {
	tx, err := e.pool.Begin(e.ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if err := a.Apply(e.ctx, tx, ev); err != nil {
		return err
	}
	return tx.Commit(e.ctx)
}

func (e *applierEnv) rows(t *testing.T, sql string) [][]any {
	t.Helper()
	rows, err := e.pool.Query(e.ctx, sql)
	require.NoError(t, err)
	var out [][]any
	for rows.Next() {
		v, err := rows.Values()
		require.NoError(t, err)
		out = append(out, v)
	}
	require.NoError(t, rows.Err())
	return out
}

func applierEvent(id int64, typ string, payload route.Payload) *pgq.Event {
	data, err := payload.Encode()
	if err != nil {
		panic(err)
	}
	return &pgq.Event{ID: id, EventData: pgq.EventData{Type: pgq.T(typ), Data: pgq.T(""),
		Extra1: pgq.T("node-1"), Extra2: pgq.T(data)}}
}

func TestApplierFuncPassesDataVerbatim(t *testing.T) {
	e := applierDB(t,
		"create table victim (x int)",
		"create table got (target text, data text)",
		// The seed's function, storing what it was given.
		`create function __data_copier(target text, data text) returns void language plpgsql as $$
		 begin insert into got values (target, data); end $$`,
		`create schema "Odd ""Schema"""`,
		`create function "Odd ""Schema"""."Copy Fn"(target text, data text) returns int language sql as
		 $$ insert into got values ('odd:' || target, data) returning 1 $$`,
	)
	hostile := pgtest.Hostile(t)
	a, err := apply.NewFuncApplier("__data_copier")
	require.NoError(t, err)
	for i, s := range hostile {
		require.NoError(t, e.apply(a, applierEvent(int64(i+1), "copy", route.Raw(s))))
	}
	// A NULL payload reaches the function as NULL.
	require.NoError(t, e.apply(a, &pgq.Event{ID: 99, EventData: pgq.EventData{Extra1: pgq.T("node-1")}}))

	got := e.rows(t, "select target, data from got")
	require.Len(t, got, len(hostile)+1)
	for i, s := range hostile {
		require.Equal(t, []any{"node-1", s}, got[i])
	}
	require.Equal(t, []any{"node-1", nil}, got[len(hostile)])
	require.Len(t, e.rows(t, "select * from victim"), 0) // still there

	// Schema-qualified, quoted as given.
	odd := mustFunc(t, `Odd "Schema".Copy Fn`)
	require.NoError(t, e.apply(odd, applierEvent(100, "copy", route.Raw("x'y"))))
	require.Equal(t, [][]any{{"odd:node-1", "x'y"}}, e.rows(t, "select * from got where target like 'odd:%'"))
}

func TestApplierFuncErrors(t *testing.T) {
	e := applierDB(t,
		`create function fails(target text, data text) returns void language plpgsql as $$
		 begin raise exception 'no: %', data; end $$`,
		`create function sink(target text, data text) returns void language sql as $$ select $$`)

	for _, name := range []string{"", ".", "s.", ".f", "a\x00b"} {
		_, err := apply.NewFuncApplier(name)
		require.Error(t, err, name)
		err = e.apply(&apply.FuncApplier{}, applierEvent(7, "copy", route.Raw("x")))
		require.ErrorContains(t, err, "event 7")
		require.NotErrorIs(t, err, apply.ErrBadPayload)
	}

	// A failing function is retryable, names the event, keeps the PgError.
	err := e.apply(mustFunc(t, "fails"), applierEvent(8, "copy", route.Raw("data")))
	require.ErrorContains(t, err, "event 8")
	require.NotErrorIs(t, err, apply.ErrBadPayload)
	pgErr, ok := errors.AsType[*pgconn.PgError](err)
	require.True(t, ok)
	require.Equal(t, "no: data", pgErr.Message)

	err = e.apply(mustFunc(t, "missing_fn"), applierEvent(9, "copy", route.Raw("x")))
	require.ErrorContains(t, err, "event 9")
	require.NotErrorIs(t, err, apply.ErrBadPayload)

	// Oversized payloads are permanent.
	sink := mustFunc(t, "public.sink", apply.MaxPayload(10))
	require.NoError(t, e.apply(sink, applierEvent(10, "copy", route.Raw("0123456789"))))
	err = e.apply(sink, applierEvent(11, "copy", route.Raw("0123456789a")))
	require.ErrorIs(t, err, apply.ErrBadPayload)
	require.ErrorContains(t, err, "event 11")
	big := strings.Repeat("x", urlenc.MaxRowSize)
	require.NoError(t, e.apply(mustFunc(t, "sink"), applierEvent(12, "copy", route.Raw(big))))
	ev := applierEvent(13, "copy", route.Raw("x"))
	ev.Extra2 = pgq.T(big + "x")
	require.ErrorIs(t, e.apply(mustFunc(t, "sink"), ev), apply.ErrBadPayload)
}

const applierItemsDDL = `create table items (
	id int primary key, name text, qty integer, price numeric(10,2), ok boolean,
	at timestamptz, tags text[], code varchar(3), ch char(3), bits bit(3),
	doubled int generated always as (qty * 2) stored)`

func TestApplierRowInsertUpdateDelete(t *testing.T) {
	e := applierDB(t, applierItemsDDL)
	a, err := apply.NewRowApplier("items", []string{"id"})
	require.NoError(t, err)
	at := time.Date(2024, 2, 29, 15, 4, 5, 123456000, time.FixedZone("x", 2*3600))

	require.NoError(t, e.apply(a, applierEvent(1, "copy", urlenc.Fields{"action": "ins", "id": 1, "name": "one",
		"qty": 5, "price": "12.345", "ok": true, "at": at, "tags": `{a,"b c"}`, "code": "abc", "ch": "x", "bits": "101"})))
	const q = "select id, name, qty, price::text, ok, to_char(at at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), tags, code, ch, bits::text, doubled from items order by id"
	require.Equal(t, [][]any{{int32(1), "one", int32(5), "12.35", true, "2024-02-29 13:04:05.123456", []any{"a", "b c"}, "abc", "x  ", "101", int32(10)}},
		e.rows(t, q))

	// ins again: upsert, NULLs written as NULL, missing columns untouched.
	require.NoError(t, e.apply(a, applierEvent(2, "copy", urlenc.Fields{"action": "ins", "id": 1, "name": nil, "qty": 6})))
	require.Equal(t, [][]any{{int32(1), nil, int32(6), "12.35", true, "2024-02-29 13:04:05.123456", []any{"a", "b c"}, "abc", "x  ", "101", int32(12)}},
		e.rows(t, q))

	// ins with only the key of an existing row: nothing happens.
	require.NoError(t, e.apply(a, applierEvent(3, "copy", urlenc.Fields{"action": "ins", "id": 1})))
	require.Equal(t, int32(6), e.rows(t, q)[0][2])

	// upd.
	require.NoError(t, e.apply(a, applierEvent(4, "copy", urlenc.Fields{"action": "upd", "id": 1, "ok": false, "at": nil})))
	require.Equal(t, [][]any{{false, nil}}, e.rows(t, "select ok, at from items"))
	require.NoError(t, e.apply(a, applierEvent(5, "copy", urlenc.Fields{"action": "upd", "id": 1})))

	// upd of a missing row: an error that may succeed later, not a bad payload.
	err = e.apply(a, applierEvent(6, "copy", urlenc.Fields{"action": "upd", "id": 2, "qty": 1}))
	require.ErrorContains(t, err, `event 6`)
	require.ErrorContains(t, err, `no row with key id="2"`)
	require.NotErrorIs(t, err, apply.ErrBadPayload)

	// Lengths are checked, not truncated.
	err = e.apply(a, applierEvent(7, "copy", urlenc.Fields{"action": "ins", "id": 3, "code": "abcd"}))
	require.ErrorContains(t, err, "too long")
	require.ErrorContains(t, err, "event 7")
	err = e.apply(a, applierEvent(8, "copy", urlenc.Fields{"action": "ins", "id": 3, "bits": "1010"}))
	require.ErrorContains(t, err, "bit string length 4 does not match type bit(3)")
	err = e.apply(a, applierEvent(8, "copy", urlenc.Fields{"action": "ins", "id": 3, "ch": "abcd"}))
	require.ErrorContains(t, err, "value too long for type character(3)")
	// A value of the wrong type is a database error naming the event.
	err = e.apply(a, applierEvent(9, "copy", urlenc.Fields{"action": "ins", "id": 3, "qty": "many"}))
	require.ErrorContains(t, err, "event 9")
	require.ErrorContains(t, err, "invalid input syntax for type integer")

	// A generated column cannot be written.
	err = e.apply(a, applierEvent(10, "copy", urlenc.Fields{"action": "ins", "id": 3, "doubled": 1}))
	require.ErrorIs(t, err, apply.ErrBadPayload)
	require.ErrorContains(t, err, `unknown column "doubled"`)

	// del, twice: the second deletes nothing and is fine.
	for id := int64(10); id < 12; id++ {
		require.NoError(t, e.apply(a, applierEvent(id, "copy", urlenc.Fields{"action": "del", "id": 1, "name": "ignored"})))
	}
	require.Empty(t, e.rows(t, q))
}

func TestApplierRowCompositeKeyQualifiedTable(t *testing.T) {
	e := applierDB(t, `create schema "App"`,
		`create table "App"."Pairs" ("A" text, b int, "Value" text, primary key ("A", b))`)
	a, err := apply.NewRowApplier("App.Pairs", []string{"A", "b"})
	require.NoError(t, err)
	for i, r := range []urlenc.Fields{
		{"action": "ins", "A": "x", "b": 1, "Value": "x1"},
		{"action": "ins", "A": "x", "b": 2, "Value": "x2"},
		{"action": "ins", "A": "y", "b": 1, "Value": "y1"},
		{"action": "upd", "A": "x", "b": 2, "Value": "x2'"},
		{"action": "del", "A": "y", "b": 1},
	} {
		require.NoError(t, e.apply(a, applierEvent(int64(i+1), "copy", r)), i)
	}
	require.Equal(t, [][]any{{"x", int32(1), "x1"}, {"x", int32(2), "x2'"}},
		e.rows(t, `select * from "App"."Pairs" order by 1, 2`))

	err = e.apply(a, applierEvent(9, "copy", urlenc.Fields{"action": "upd", "A": "y", "b": 1, "Value": "v"}))
	require.ErrorContains(t, err, `no row with key A="y", b="1"`)
	err = e.apply(a, applierEvent(10, "copy", urlenc.Fields{"action": "ins", "A": "y", "Value": "v"}))
	require.ErrorIs(t, err, apply.ErrBadPayload)
	require.ErrorContains(t, err, `event 10: key column "b" missing`)
}

func TestApplierRowLondisteTypes(t *testing.T) {
	e := applierDB(t, "create table t (id int primary key, v text)",
		"create table logs (id int primary key, action text)")
	a, err := apply.NewRowApplier("t", []string{"id"})
	require.NoError(t, err)
	require.NoError(t, e.apply(a, applierEvent(1, "I:id", urlenc.Fields{"id": 1, "v": "a"})))
	require.NoError(t, e.apply(a, applierEvent(2, "I:id", urlenc.Fields{"id": 2, "v": "b"})))
	require.NoError(t, e.apply(a, applierEvent(3, "U:id", urlenc.Fields{"id": 1, "v": "a2"})))
	// The type wins over an action field, which is not a column of t: ignored.
	require.NoError(t, e.apply(a, applierEvent(4, "D:id", urlenc.Fields{"id": 2, "action": "ins"})))
	require.Equal(t, [][]any{{int32(1), "a2"}}, e.rows(t, "select * from t order by id"))

	// In a londiste row, "action" is data when the table has such a column.
	l, err := apply.NewRowApplier("logs", []string{"id"})
	require.NoError(t, err)
	require.NoError(t, e.apply(l, applierEvent(5, "I:id", urlenc.Fields{"id": 1, "action": "del"})))
	require.NoError(t, e.apply(l, applierEvent(6, "U:", urlenc.Fields{"id": 1, "action": "upd'"})))
	require.Equal(t, [][]any{{int32(1), "upd'"}}, e.rows(t, "select * from logs"))

	// Unknown types fall back to the action field; without one, bad payload.
	require.NoError(t, e.apply(a, applierEvent(7, "X:id", urlenc.Fields{"id": 3, "action": "ins"})))
	for _, typ := range []string{"copy", "X:id", "I", "i:id", ""} {
		err = e.apply(a, applierEvent(8, typ, urlenc.Fields{"id": 4}))
		require.ErrorIs(t, err, apply.ErrBadPayload, typ)
		require.ErrorContains(t, err, "event 8: no action")
	}
}

func TestApplierRowBadPayloads(t *testing.T) {
	e := applierDB(t, "create table t (id int primary key, v text)")
	a, err := apply.NewRowApplier("t", []string{"id"})
	require.NoError(t, err)
	ev := func(id int64, payload string) *pgq.Event {
		return &pgq.Event{ID: id, EventData: pgq.EventData{Type: pgq.T("copy"), Extra2: pgq.T(payload)}}
	}
	for _, tc := range []struct {
		payload, want string
	}{
		{"action=ins&id=1&nope=x", `unknown column "nope"`},
		{"action=ins&id=1&v%22%3B+drop+table+t%3B+--=x", `unknown column "v\"; drop table t; --"`},
		{"action=ins&v=x", `key column "id" missing`},
		{"action=ins&id&v=x", `key column "id" is NULL`},
		{"action=upsert&id=1", `unknown action "upsert"`},
		{"action&id=1", `unknown action ""`},
		{"action=&id=1", `unknown action ""`},
		{"id=1&v=x", "no action"},
		{"action=ins&id=1&v=%zz", "invalid escape"},
		{"action=ins&id=1&v=a=b", "unescaped '='"},
		{"action=ins&id=1&id=2", "given twice"},
		{"action=ins&id=1&=x", "empty key"},
		{"action=ins&id=1&v=" + strings.Repeat("x", urlenc.MaxRowSize), "more than"},
	} {
		err := e.apply(a, ev(42, tc.payload))
		require.ErrorIs(t, err, apply.ErrBadPayload, tc.payload)
		require.ErrorContains(t, err, "event 42", tc.payload)
		require.ErrorContains(t, err, tc.want, tc.payload)
	}
	err = e.apply(a, &pgq.Event{ID: 43, EventData: pgq.EventData{Type: pgq.T("I:id")}})
	require.ErrorIs(t, err, apply.ErrBadPayload)
	require.ErrorContains(t, err, "event 43: no payload")

	small := mustRow(t, "t", []string{"id"}, apply.MaxPayload(21))
	require.NoError(t, e.apply(small, ev(44, "action=ins&id=1&v=abc")))
	err = e.apply(small, ev(45, "action=ins&id=1&v=abcd"))
	require.ErrorIs(t, err, apply.ErrBadPayload)
	require.ErrorContains(t, err, "event 45: payload is 22 bytes")
	require.Equal(t, [][]any{{int32(1), "abc"}}, e.rows(t, "select * from t"))
}

func TestApplierRowConfigErrors(t *testing.T) {
	e := applierDB(t, "create table t (id int primary key, v text)")
	for _, tc := range []struct {
		table string
		keys  []string
	}{{"", []string{"id"}}, {"t", nil}, {"t", []string{""}}, {"t", []string{"id", "id"}}, {".t", []string{"id"}}, {"s.", []string{"id"}}} {
		_, err := apply.NewRowApplier(tc.table, tc.keys)
		require.Error(t, err, tc)
	}
	// A missing table or key column is configuration: retried, not parked.
	for _, tc := range []struct {
		table string
		keys  []string
	}{
		{"missing", []string{"id"}},
		{"nosuchschema.t", []string{"id"}},
		{"T", []string{"id"}}, // not case-folded
		{"t", []string{"nope"}},
	} {
		err := e.apply(mustRow(t, tc.table, tc.keys), applierEvent(5, "copy", urlenc.Fields{"action": "ins", "id": 1}))
		require.Error(t, err, tc.table)
		require.NotErrorIs(t, err, apply.ErrBadPayload, tc.table)
		require.ErrorContains(t, err, "event 5", tc.table)
	}
	for _, a := range []apply.Applier{&apply.RowApplier{}, &apply.FuncApplier{}} {
		err := e.apply(a, applierEvent(5, "copy", urlenc.Fields{"action": "ins", "id": 1}))
		require.ErrorContains(t, err, "not built by its constructor")
	}
	_, err := apply.NewRowApplier("t", []string{"id"}, apply.MaxPayload(0))
	require.ErrorContains(t, err, "MaxPayload")
	// Created later, the same applier works.
	a := mustRow(t, "later", []string{"id"})
	err = e.apply(a, applierEvent(6, "copy", urlenc.Fields{"action": "ins", "id": 1}))
	require.ErrorContains(t, err, "does not exist")
	_, err = e.pool.Exec(e.ctx, "create table later (id int primary key)")
	require.NoError(t, err)
	require.NoError(t, e.apply(a, applierEvent(6, "copy", urlenc.Fields{"action": "ins", "id": 1})))
}

func TestApplierRowHostileValuesLandVerbatim(t *testing.T) {
	e := applierDB(t, "create table victim (x int)", `create table "we""ird; table" (id text primary key, v text)`)
	hostile := pgtest.Hostile(t)
	a, err := apply.NewRowApplier(`we"ird; table`, []string{"id"})
	require.NoError(t, err)
	for i, s := range hostile {
		require.NoError(t, e.apply(a, applierEvent(int64(i), "copy",
			urlenc.Fields{"action": "ins", "id": fmt.Sprintf("%02d %s", i, s), "v": s})))
	}
	got := e.rows(t, `select id, v from "we""ird; table" order by id`)
	require.Len(t, got, len(hostile))
	for i, s := range hostile {
		require.Equal(t, []any{fmt.Sprintf("%02d %s", i, s), s}, got[i])
	}
	require.Empty(t, e.rows(t, "select * from victim"))
	// Keys are hostile too: update and delete find them.
	for i, s := range hostile {
		id := fmt.Sprintf("%02d %s", i, s)
		require.NoError(t, e.apply(a, applierEvent(100, "U:id", urlenc.Fields{"id": id, "v": s + "!"})))
		require.NoError(t, e.apply(a, applierEvent(101, "D:id", urlenc.Fields{"id": id})))
	}
	require.Empty(t, e.rows(t, `select * from "we""ird; table"`))
}

func TestApplierRowCatalogChanges(t *testing.T) {
	e := applierDB(t, "create table t (id int primary key, v text, old text)")
	a, err := apply.NewRowApplier("t", []string{"id"})
	require.NoError(t, err)
	require.NoError(t, e.apply(a, applierEvent(1, "copy", urlenc.Fields{"action": "ins", "id": 1, "v": "a", "old": "o"})))

	// A column added after the applier read the catalog is found.
	_, err = e.pool.Exec(e.ctx, "alter table t add column added int")
	require.NoError(t, err)
	require.NoError(t, e.apply(a, applierEvent(2, "copy", urlenc.Fields{"action": "upd", "id": 1, "added": 7})))

	// A dropped column fails once as a database error (retryable, cache
	// dropped), then as a bad payload.
	_, err = e.pool.Exec(e.ctx, "alter table t drop column old")
	require.NoError(t, err)
	ev := applierEvent(3, "copy", urlenc.Fields{"action": "upd", "id": 1, "old": "x"})
	err = e.apply(a, ev)
	require.ErrorContains(t, err, "event 3")
	require.NotErrorIs(t, err, apply.ErrBadPayload)
	err = e.apply(a, ev)
	require.ErrorIs(t, err, apply.ErrBadPayload)
	require.ErrorContains(t, err, `event 3: unknown column "old"`)

	// A changed type is picked up too.
	_, err = e.pool.Exec(e.ctx, "alter table t alter column added type boolean using added <> 0")
	require.NoError(t, err)
	ev = applierEvent(4, "copy", urlenc.Fields{"action": "upd", "id": 1, "added": false})
	require.Error(t, e.apply(a, ev)) // cast to the cached type, integer
	require.NoError(t, e.apply(a, ev))
	require.Equal(t, [][]any{{int32(1), "a", false}}, e.rows(t, "select * from t"))
}

func TestApplierRowConcurrentUse(t *testing.T) {
	e := applierDB(t, "create table t (id int primary key, n int)")
	a, err := apply.NewRowApplier("public.t", []string{"id"})
	require.NoError(t, err)
	var wg sync.WaitGroup
	errs := make(chan error, 8*25)
	for w := range 8 {
		wg.Go(func() {
			for i := range 25 {
				errs <- e.apply(a, applierEvent(int64(w*100+i), "I:id", urlenc.Fields{"id": w*100 + i, "n": i}))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, [][]any{{int64(200)}}, e.rows(t, "select count(*) from t"))
}

func TestApplierFuncAdapter(t *testing.T) {
	e := applierDB(t, "create table seen (id bigint, target text)")
	var a apply.Applier = apply.ApplierFunc(func(ctx context.Context, tx pgx.Tx, ev *pgq.Event) error {
		_, err := tx.Exec(ctx, "insert into seen values ($1, $2)", ev.ID, ev.Extra1)
		return err
	})
	require.NoError(t, e.apply(a, applierEvent(5, "copy", route.Raw("x"))))
	require.Equal(t, [][]any{{int64(5), "node-1"}}, e.rows(t, "select * from seen"))
}
