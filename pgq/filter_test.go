package pgq_test

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

// TestFilterLiteralsWithoutStandardConformingStrings runs filters whose
// values hold backslashes, LIKE wildcards and quotes on sessions with
// standard_conforming_strings on and off: results must be exact either way.
func TestFilterLiteralsWithoutStandardConformingStrings(t *testing.T) {
	t.Parallel()
	e := setup(t)
	values := []string{`a\b`, `a\\b`, `a\`, `a%b`, `a_b`, `axb`, `a'b`, `a'`, `a''b`, `\`, `\\`, `%`, `_`, `'`, `\'`, `!`, `a!b`, ``, `ab`}
	for _, v := range values {
		_, err := pgq.InsertEvent(e.ctx, e.pool, e.queue, pgq.EventData{Extra1: pgq.T(v)})
		require.NoError(t, err)
	}
	e.tick(t)
	info := e.next(t)

	prefixes := []string{`\`, `\\`, `a\`, `a\b`, `%`, `a%`, `_`, `a_`, `'`, `a'`, `\'`, `'b`, `!`, `a!`, ``, `a`}
	for _, scs := range []string{"on", "off"} {
		cfg, err := pgxpool.ParseConfig(e.db.DSN)
		require.NoError(t, err)
		cfg.ConnConfig.RuntimeParams["standard_conforming_strings"] = scs
		pool, err := pgxpool.NewWithConfig(e.ctx, cfg)
		require.NoError(t, err)
		t.Cleanup(pool.Close)
		var got string
		require.NoError(t, pool.QueryRow(e.ctx, "show standard_conforming_strings").Scan(&got))
		require.Equal(t, scs, got)

		check := func(name string, f pgq.Filter, want []string) {
			t.Helper()
			require.NoError(t, f.Err())
			for _, fetch := range []int{0, 2} {
				evs, err := pgq.NewBatch(pool, e.queue, e.cons, *info, pgq.ReadOptions{FetchSize: fetch, Filter: f}).All(e.ctx)
				require.NoError(t, err, "scs=%s %s fetch %d: %s", scs, name, fetch, f)
				var out []string
				for _, ev := range evs {
					out = append(out, ev.Extra1.String)
				}
				require.Equal(t, want, out, "scs=%s %s fetch %d: %s", scs, name, fetch, f)
			}
		}
		for _, p := range prefixes {
			var want []string
			for _, v := range values {
				if strings.HasPrefix(v, p) {
					want = append(want, v)
				}
			}
			check("prefix "+p, pgq.HasPrefix(pgq.FieldExtra1, p), want)
		}
		for _, v := range values {
			check("eq "+v, pgq.Eq(pgq.FieldExtra1, v), []string{v})
		}
		check("in", pgq.In(pgq.FieldExtra1, `a\b`, `'`, `\'`, `%`), []string{`a\b`, `%`, `'`, `\'`})
	}
	require.ErrorIs(t, pgq.HasPrefix(pgq.FieldExtra1, "nul\x00").Err(), pgq.ErrInvalidArgument)
}

// TestTableInMatchesSkytoolsTableFilter: a bare table name matches the
// schema-qualified ev_extra1 a trigger-based producer writes (Skytools
// fq_name), qualified names match as written, hostile names are literals.
func TestTableInMatchesSkytoolsTableFilter(t *testing.T) {
	t.Parallel()
	e := setup(t)
	_, err := e.pool.Exec(e.ctx, `create schema sales;
		create table public.orders (id int primary key, note text);
		create table sales.orders (id int primary key);
		create trigger pgq_ins after insert on public.orders for each row execute procedure pgq.logutriga('q');
		create trigger pgq_ins after insert on sales.orders for each row execute procedure pgq.logutriga('q');
		insert into public.orders values (1, 'a');
		insert into sales.orders values (2);`)
	require.NoError(t, err)
	hostile := []string{`x'); drop table orders; --`, `a\'b`, `public.a'b`, `"Q".t`, `x'); drop table public.orders; --`}
	for _, v := range append([]string{"orders", "public.customers"}, hostile...) {
		_, err := pgq.InsertEvent(e.ctx, e.pool, e.queue, pgq.EventData{Type: pgq.T("x"), Extra1: pgq.T(v)})
		require.NoError(t, err)
	}
	for _, v := range []string{`public.x'); drop table orders; --`, `public.a\'b`} {
		_, err = pgq.InsertEvent(e.ctx, e.pool, e.queue, pgq.EventData{Type: pgq.T("x"), Extra1: pgq.T(v)})
		require.NoError(t, err)
	}
	e.tick(t)
	info := e.next(t)
	all := e.events(t, info, pgq.ReadOptions{})
	require.Equal(t, "public.orders", all[0].Extra1.String, "what the trigger writes")
	require.Equal(t, "sales.orders", all[1].Extra1.String)

	cases := []struct {
		name   string
		tables []string
		want   []string
	}{
		{"bare name is public", []string{"orders"}, []string{"public.orders"}},
		{"qualified", []string{"public.orders"}, []string{"public.orders"}},
		{"other schema", []string{"sales.orders"}, []string{"sales.orders"}},
		{"several", []string{"orders", "sales.orders", "customers"}, []string{"public.orders", "sales.orders", "public.customers"}},
		{"hostile bare", []string{`x'); drop table orders; --`, `a\'b`}, []string{`public.x'); drop table orders; --`, `public.a\'b`}},
		// fq_name splits at the first dot: this one counts as qualified.
		{"hostile with a dot", []string{`x'); drop table public.orders; --`}, []string{`x'); drop table public.orders; --`}},
		{"hostile qualified", []string{`public.a'b`, `"Q".t`}, []string{`public.a'b`, `"Q".t`}},
		{"none", nil, nil},
	}
	for _, c := range cases {
		f := pgq.TableIn(c.tables...)
		require.NoError(t, f.Err())
		for _, fetch := range []int{0, 2} {
			var got []string
			for _, ev := range e.events(t, info, pgq.ReadOptions{FetchSize: fetch, Filter: f}) {
				got = append(got, ev.Extra1.String)
			}
			require.Equal(t, c.want, got, "%s fetch %d (%s)", c.name, fetch, f)
		}
	}
	require.ErrorIs(t, pgq.TableIn("orders", "").Err(), pgq.ErrInvalidArgument)
	// The literal match misses what triggers write: why TableIn exists.
	literal := e.events(t, info, pgq.ReadOptions{Filter: pgq.In(pgq.FieldExtra1, "orders")})
	require.Len(t, literal, 1)
	require.Equal(t, "orders", literal[0].Extra1.String)
	require.Equal(t, "ev_extra1 in ('public.orders', 's.t.u')", pgq.TableIn("orders", "s.t.u").String())
	var n int
	require.NoError(t, e.pool.QueryRow(e.ctx, "select count(*) from public.orders").Scan(&n))
	require.Equal(t, 1, n)
}

// TestFilteredBatchLeavesNoPreparedStatement: a filtered batch's query
// text is new for every batch; reading it must not prepare it on the
// server (pgx's default mode would keep up to 512 such one-off plans per
// connection) and its events must come back as the unfiltered read gives
// them.
func TestFilteredBatchLeavesNoPreparedStatement(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, x := range []string{"a", "b", "a"} {
		_, err := pgq.InsertEvent(e.ctx, e.pool, e.queue, pgq.EventData{Type: pgq.T("t"), Data: pgq.T("d " + x), Extra1: pgq.T(x)})
		require.NoError(t, err)
	}
	e.tick(t)
	info := e.next(t)
	conn, err := e.pool.Acquire(e.ctx)
	require.NoError(t, err)
	defer conn.Release()
	got, err := pgq.NewBatch(conn, e.queue, e.cons, *info, pgq.ReadOptions{Filter: pgq.Eq(pgq.FieldExtra1, "a")}).All(e.ctx)
	require.NoError(t, err)
	all, err := pgq.NewBatch(conn, e.queue, e.cons, *info, pgq.ReadOptions{}).All(e.ctx)
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Len(t, all, 3)
	for i, j := range []int{0, 2} {
		a, g := all[j], got[i]
		require.Equal(t, []any{a.ID, a.TxID, a.Retry, a.EventData}, []any{g.ID, g.TxID, g.Retry, g.EventData}, "same event whatever the protocol")
		require.True(t, a.Time.Equal(g.Time), "%v vs %v", a.Time, g.Time)
	}
	var n int
	require.NoError(t, conn.QueryRow(e.ctx, "select count(*) from pg_prepared_statements where statement like $1", "select * from (select ev_id%").Scan(&n))
	require.Zero(t, n, "prepared batch queries left on the connection")
}
