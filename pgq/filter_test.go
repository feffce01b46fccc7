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
