package job_test

import (
	"testing"
	"time"

	"github.com/pgq-go/pgq/job"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

func TestParseQuery(t *testing.T) {
	t.Parallel()
	ok := []struct {
		in, sql string
		keys    []string
	}{
		{"select * from f(%(pgq.ev_data)s)", "select * from f($1)", []string{"pgq.ev_data"}},
		{"insert into t (a, b, a2) values (%(a)s, %(b)s, %(a)s)", "insert into t (a, b, a2) values ($1, $2, $1)", []string{"a", "b"}},
		{"select %(pgq.ev_time)s", "select $1::timestamptz", []string{"pgq.ev_time"}},
		{"select '100%%' || %(x)s -- 5%% off\n", "select '100%' || $1 -- 5% off\n", []string{"x"}},
		{"select %(a b)s", "select $1", []string{"a b"}},
		{"select $f$ $1 %% $f$ || %(a)s", "select $f$ $1 % $f$ || $1", []string{"a"}},
		{"select $$ don't $$, %(a)s", "select $$ don't $$, $1", []string{"a"}},
		{"select E'it\\'s', %(a)s", "select E'it\\'s', $1", []string{"a"}},
		{"select 'it''s', \"we\"\"ird\", %(a)s", "select 'it''s', \"we\"\"ird\", $1", []string{"a"}},
		{"select a$1 from t /* a /* nested */ comment */ where x = %(a)s", "select a$1 from t /* a /* nested */ comment */ where x = $1", []string{"a"}},
		{"select 1", "select 1", nil},
	}
	for _, c := range ok {
		q, err := job.ParseQuery(c.in)
		require.NoError(t, err, c.in)
		require.Equal(t, c.sql, q.SQL, c.in)
		require.Equal(t, c.keys, q.Keys, c.in)
	}
	bad := map[string]string{
		"":                                 "empty",
		"select %s":                        "not a placeholder",
		"select %(a)d":                     "not %(key)s",
		"select %(a":                       "not %(key)s",
		"select %()s":                      "empty placeholder key",
		"select '%(a)s'":                   "inside a quoted string",
		"select \"%(a)s\"":                 "inside a quoted identifier",
		"select 1 -- %(a)s":                "inside a comment",
		"select 1 /* %(a)s */":             "inside a block comment",
		"select $q$ %(a)s $q$":             "inside a dollar-quoted string",
		"select $1":                        "parameter of its own",
		"select 'open":                     "unterminated quoted string",
		"select 100%":                      "not a placeholder",
		"select E'\\'%(a)s'":               "inside a quoted string",
		"select 1; select %(a)s /* open *": "unterminated block comment",
	}
	for in, want := range bad {
		_, err := job.ParseQuery(in)
		require.ErrorContains(t, err, want, "%q", in)
	}
}

func TestQueryArgs(t *testing.T) {
	t.Parallel()
	q, err := job.ParseQuery("select %(id)s, %(name)s, %(gone)s, %(pgq.ev_id)s, %(pgq.tick_id)s, %(pgq.ev_time)s, " +
		"%(pgq.ev_type)s, %(pgq.ev_data)s, %(pgq.ev_extra1)s, %(pgq.ev_extra2)s")
	require.NoError(t, err)
	at := time.Date(2026, 12, 6, 20, 1, 2, 345678000, time.FixedZone("x", 3600))
	ev := &pgq.Event{ID: 7, Time: at, EventData: pgq.EventData{Type: pgq.T("I:id"),
		Data: pgq.T("id=1&name=J%C3%BCrgen+O%27Brien&gone"), Extra1: pgq.T("public.t")}}
	args, err := q.Args(ev, 42)
	require.NoError(t, err)
	require.Equal(t, []any{"1", "Jürgen O'Brien", nil, "7", "42", "2026-12-06 20:01:02.345678+01:00",
		"I:id", "id=1&name=J%C3%BCrgen+O%27Brien&gone", "public.t", nil}, args)

	// A key the event lacks fails, naming the event and the key.
	ev.Data = pgq.T("id=1")
	_, err = q.Args(ev, 42)
	require.ErrorContains(t, err, `event 7 has no key "name"`)
	// NULL ev_data: no fields.
	ev.Data = pgq.Text{}
	_, err = q.Args(ev, 42)
	require.ErrorContains(t, err, `no key "id"`)
	// Not urlencoded.
	ev.Data = pgq.T("a=%zz")
	_, err = q.Args(ev, 42)
	require.ErrorContains(t, err, "event 7: ev_data is not urlencoded")
}
