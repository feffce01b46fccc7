package pgq_test

import (
	"testing"

	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

// TestSQLFilterRefusesStatementShapes: conditions that could end the batch
// query, hide part of it, use its parameters or read differently under
// standard_conforming_strings are refused with ErrInvalidArgument; the
// same characters inside literals, quoted identifiers and dollar quotes
// are accepted.
func TestSQLFilterRefusesStatementShapes(t *testing.T) {
	t.Parallel()
	refused := []string{
		"", "   ", "\n\t",
		"ev_type = 'I'; drop table x",
		"ev_type = 'I';",
		"true -- and the rest",
		"true /* and the rest */",
		"(ev_type = 'I'",
		"ev_type = 'I')",
		"true) or (true",
		"true) union select 1 from pg_authid where (true",
		"ev_type = 'I",
		`ev_type = "ev_type`,
		`ev_data = 'a\'`,
		`ev_data = 'a\' or true; drop table x; select '`,
		"ev_data = $1",
		"ev_data = $abc$ not closed",
		"ev_data = $a$x$b$",
		"ev_type = 'I'\x00",
	}
	for _, s := range refused {
		f := pgq.SQLFilter(s)
		require.ErrorIs(t, f.Err(), pgq.ErrInvalidArgument, "%q", s)
		require.False(t, f.IsZero(), "%q", s)
	}
	accepted := map[string]string{
		"ev_type = 'I'":                      "(ev_type = 'I')",
		"  ev_type = 'I'  ":                  "(ev_type = 'I')",
		"ev_data like '%;%'":                 "(ev_data like '%;%')",
		"ev_data = '-- not a comment'":       "(ev_data = '-- not a comment')",
		"ev_data = '/* nor this */'":         "(ev_data = '/* nor this */')",
		"ev_data = 'it''s (open'":            "(ev_data = 'it''s (open')",
		`ev_data = E'a\'b;'`:                 `(ev_data = E'a\'b;')`,
		`ev_data = e'\\'`:                    `(ev_data = e'\\')`,
		`"ev_type" = 'I'`:                    `("ev_type" = 'I')`,
		`ev_data = $$a'b;c$$`:                `(ev_data = $$a'b;c$$)`,
		`ev_data = $q$a$$b;$q$`:              `(ev_data = $q$a$$b;$q$)`,
		"(ev_type = 'I' or (ev_type = 'U'))": "((ev_type = 'I' or (ev_type = 'U')))",
		"ev_retry is null and ev_id > 0":     "(ev_retry is null and ev_id > 0)",
		"a$1 = 1":                            "(a$1 = 1)",
	}
	for in, want := range accepted {
		f := pgq.SQLFilter(in)
		require.NoError(t, f.Err(), "%q", in)
		require.Equal(t, want, f.String(), "%q", in)
	}
	// Composed with a typed filter, an invalid SQLFilter poisons the result.
	require.ErrorIs(t, pgq.And(pgq.Eq(pgq.FieldType, "I"), pgq.SQLFilter("x;")).Err(), pgq.ErrInvalidArgument)
}

// TestSQLFilterReadsMatchingEvents: a batch read with an operator's SQL
// condition, alone and composed with And/TableIn and Not, returns exactly
// the matching events, whether the batch is read in one query, streamed,
// or through get_batch_cursor (buffered fetches).
func TestSQLFilterReadsMatchingEvents(t *testing.T) {
	t.Parallel()
	e := setup(t)
	type ev struct{ typ, data, table string }
	evs := []ev{
		{"I:id", "id=1;note=a", "public.orders"},
		{"U:id", "id=1;note=b", "public.orders"},
		{"D:id", "id=1", "public.orders"},
		{"I:id", "id=2", "sales.orders"},
		{"I:id", "id=3;note=it's", "public.items"},
		{"other", "x", "public.orders"},
	}
	for _, v := range evs {
		_, err := pgq.InsertEvent(e.ctx, e.pool, e.queue, pgq.EventData{Type: pgq.T(v.typ), Data: pgq.T(v.data), Extra1: pgq.T(v.table)})
		require.NoError(t, err)
	}
	e.tick(t)
	info := e.next(t)

	match := func(keep func(ev) bool) []string {
		var out []string
		for _, v := range evs {
			if keep(v) {
				out = append(out, v.data)
			}
		}
		return out
	}
	cases := []struct {
		name string
		f    pgq.Filter
		want []string
	}{
		{"alone", pgq.SQLFilter("ev_type like 'I:%' or ev_type like 'U:%'"),
			match(func(v ev) bool { return v.typ == "I:id" || v.typ == "U:id" })},
		{"quote and semicolon in literals", pgq.SQLFilter("ev_data like '%;note=it''s'"),
			match(func(v ev) bool { return v.data == "id=3;note=it's" })},
		{"and table_filter", pgq.And(pgq.TableIn("orders"), pgq.SQLFilter("ev_type in ('I:id', 'U:id')")),
			match(func(v ev) bool { return v.table == "public.orders" && (v.typ == "I:id" || v.typ == "U:id") })},
		{"or", pgq.Or(pgq.TableIn("sales.orders"), pgq.SQLFilter("ev_type = 'D:id'")),
			match(func(v ev) bool { return v.table == "sales.orders" || v.typ == "D:id" })},
		{"not", pgq.Not(pgq.SQLFilter("ev_type like 'I:%'")),
			match(func(v ev) bool { return v.typ != "I:id" })},
		{"matches nothing", pgq.SQLFilter("false"), nil},
	}
	for _, c := range cases {
		require.NoError(t, c.f.Err(), c.name)
		for _, fetch := range []int{0, 2} {
			got, err := pgq.NewBatch(e.pool, e.queue, e.cons, *info, pgq.ReadOptions{FetchSize: fetch, Filter: c.f}).All(e.ctx)
			require.NoError(t, err, "%s fetch %d: %s", c.name, fetch, c.f)
			require.Equal(t, c.want, sqlFilterData(got), "%s fetch %d: %s", c.name, fetch, c.f)
		}
		b := pgq.NewBatch(e.pool, e.queue, e.cons, *info, pgq.ReadOptions{FetchSize: 2, Filter: c.f})
		b.BufferFetches()
		var got []*pgq.Event
		for ev, err := range b.Events(e.ctx) {
			require.NoError(t, err, "%s buffered: %s", c.name, c.f)
			got = append(got, ev)
		}
		require.Equal(t, c.want, sqlFilterData(got), "%s buffered: %s", c.name, c.f)
	}
	all, err := pgq.NewBatch(e.pool, e.queue, e.cons, *info, pgq.ReadOptions{}).All(e.ctx)
	require.NoError(t, err)
	require.Len(t, all, len(evs), "the filters only select; the batch holds every event")
}

// sqlFilterData returns the events' ev_data, in order.
func sqlFilterData(evs []*pgq.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Data.String)
	}
	return out
}
