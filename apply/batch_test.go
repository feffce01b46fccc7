package apply_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/apply"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/route"
	"github.com/pgq-go/pgq/urlenc"
	"github.com/stretchr/testify/require"
)

// applyBatch runs a.ApplyBatch in its own transaction, committed on success.
func (e *applierEnv) applyBatch(a *apply.RowApplier, evs []*pgq.Event) error {
	tx, err := e.pool.Begin(e.ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if err := a.ApplyBatch(e.ctx, tx, evs); err != nil {
		return err
	}
	return tx.Commit(e.ctx)
}

// randomHistory is a mixed stream of row events over a few keys: inserts,
// updates of rows that exist, deletes, re-inserts, londiste and seed
// forms, NULLs and hostile values, in an order where the same key recurs.
func randomHistory(t *testing.T, n int, seed uint64) []*pgq.Event {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	hostile := pgtest.Hostile(t)
	exists := map[string]bool{}
	var evs []*pgq.Event
	for i := range n {
		ki := rng.IntN(12)
		k := fmt.Sprintf("k%d", ki)
		v := hostile[rng.IntN(len(hostile))]
		var val any = v
		if rng.IntN(7) == 0 {
			val = nil
		}
		id := int64(i + 1)
		londiste := rng.IntN(2) == 0
		var typ, action string
		switch {
		case !exists[k]:
			typ, action = "I:a,b", "ins"
			exists[k] = true
		case rng.IntN(4) == 0:
			typ, action = "D:a,b", "del"
			exists[k] = false
		case rng.IntN(3) == 0:
			typ, action = "I:a,b", "ins" // an upsert of an existing row
		default:
			typ, action = "U:a,b", "upd"
		}
		f := urlenc.Fields{"a": k, "b": int64(ki % 3), "v": val}
		if action == "del" {
			f = urlenc.Fields{"a": k, "b": f["b"]}
		}
		if action == "upd" && rng.IntN(3) == 0 {
			delete(f, "v") // an update of the keys only
		}
		if !londiste {
			typ = "copy"
			f["action"] = action
		}
		evs = append(evs, applierEvent(id, typ, f))
	}
	return evs
}

// TestApplierRowBatchEqualsRowByRow: ApplyBatch leaves a table exactly as
// Apply one event at a time does, for a stream where keys recur (runs
// split there, so every row's history keeps its order), forms and column
// sets mix, and values are hostile or NULL.
func TestApplierRowBatchEqualsRowByRow(t *testing.T) {
	e := applierDB(t,
		"create table one (a text, b int, v text, primary key (a, b))",
		"create table many (a text, b int, v text, primary key (a, b))")
	one, many := mustRow(t, "one", []string{"a", "b"}), mustRow(t, "many", []string{"a", "b"})
	for seed := range uint64(5) {
		evs := randomHistory(t, 400, seed*7)
		for _, ev := range evs {
			require.NoError(t, e.apply(one, ev), "event %d", ev.ID)
		}
		for i := 0; i < len(evs); i += 97 { // chunks of several runs
			require.NoError(t, e.applyBatch(many, evs[i:min(i+97, len(evs))]))
		}
		want := e.rows(t, "select a, b, v from one order by a, b")
		require.Equal(t, want, e.rows(t, "select a, b, v from many order by a, b"), "seed %d", seed)
		require.NotEmpty(t, want)
	}
}

// TestApplierRowBatchFailsWhole: a failing event fails the call (the
// caller then applies one by one to name it); nothing of the call is
// kept when its transaction rolls back.
func TestApplierRowBatchFailsWhole(t *testing.T) {
	e := applierDB(t, "create table t (id int primary key, v text)")
	a := mustRow(t, "t", []string{"id"})
	ins := func(id int64) *pgq.Event {
		return applierEvent(id, "I:id", urlenc.Fields{"id": id, "v": "x"})
	}
	err := e.applyBatch(a, []*pgq.Event{ins(1), ins(2), applierEvent(3, "U:id", urlenc.Fields{"id": 99, "v": "y"})})
	require.ErrorContains(t, err, "events 3..3 (upd)")
	require.ErrorContains(t, err, "0 of 1 rows found")
	require.Empty(t, e.rows(t, "select * from t"))
	err = e.applyBatch(a, []*pgq.Event{ins(1), applierEvent(2, "I:id", urlenc.Fields{"id": 2, "nope": "x"})})
	require.ErrorIs(t, err, apply.ErrBadPayload)
	require.Empty(t, e.rows(t, "select * from t"))
	require.NoError(t, e.applyBatch(a, nil))
}

// countingTracer counts the statements a connection sends.
type countingTracer struct{ n atomic.Int64 }

func (c *countingTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}
func (c *countingTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (c *countingTracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}
func (c *countingTracer) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {
	c.n.Add(1)
}
func (c *countingTracer) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// TestApplierRowBatchFewStatements: 1,000 inserts of one shape take two
// catalog reads (columns, table kind) and a COPY in a savepoint
// (savepoint, release), not 1,000 statements.
func TestApplierRowBatchFewStatements(t *testing.T) {
	e := applierDB(t, "create table t (id int primary key, v text)")
	cfg, err := pgxpool.ParseConfig(e.pool.Config().ConnString())
	require.NoError(t, err)
	tr := &countingTracer{}
	cfg.ConnConfig.Tracer = tr
	pool, err := pgxpool.NewWithConfig(e.ctx, cfg)
	require.NoError(t, err)
	defer pool.Close()
	var evs []*pgq.Event
	for i := range int64(1000) {
		evs = append(evs, applierEvent(i+1, "copy", urlenc.Fields{"action": "ins", "id": i, "v": fmt.Sprint("row ", i)}))
	}
	a := mustRow(t, "t", []string{"id"})
	tx, err := pool.Begin(e.ctx)
	require.NoError(t, err)
	defer tx.Rollback(context.Background()) // a failed require must not leave Close waiting
	before := tr.n.Load()
	require.NoError(t, a.ApplyBatch(e.ctx, tx, evs))
	require.LessOrEqual(t, tr.n.Load()-before, int64(4))
	require.NoError(t, tx.Commit(e.ctx))
	require.Equal(t, [][]any{{int64(1000)}}, e.rows(t, "select count(*) from t"))
}

// TestApplierRowBatchCopyThenUpsert: long insert runs go as a COPY when
// their keys are new and fall back to the upsert when one exists, with the
// same result as row by row: hostile text (tabs, newlines, backslashes,
// \N) lands verbatim, NULLs stay NULL, an existing row is updated.
func TestApplierRowBatchCopyThenUpsert(t *testing.T) {
	e := applierDB(t,
		"create table one (id int primary key, v text, n int)",
		"create table many (id int primary key, v text, n int)")
	one, many := mustRow(t, "one", []string{"id"}), mustRow(t, "many", []string{"id"})
	hostile := append(pgtest.Hostile(t), `\N`, "a\tb", `\\.`, "\\.\n")
	var evs []*pgq.Event
	for i := range 300 {
		var v any = hostile[i%len(hostile)]
		if i%11 == 0 {
			v = nil
		}
		evs = append(evs, applierEvent(int64(i+1), "I:id", urlenc.Fields{"id": i, "v": v, "n": i * 2}))
	}
	// Rows 250..299 exist already (with other values) in both tables: the
	// second chunk's COPY fails and it goes as an upsert.
	for _, tbl := range []string{"one", "many"} {
		_, err := e.pool.Exec(e.ctx, "insert into "+tbl+" select g, 'old', -1 from generate_series(250, 299) g")
		require.NoError(t, err)
	}
	for _, ev := range evs {
		require.NoError(t, e.apply(one, ev))
	}
	require.NoError(t, e.applyBatch(many, evs[:200])) // new keys: COPY
	require.Zero(t, apply.CopyFails(many), "COPY succeeded")
	require.NoError(t, e.applyBatch(many, evs[200:])) // 200..299, half exist: upsert
	require.EqualValues(t, 1, apply.CopyFails(many), "COPY met an existing key and the run went as an upsert")
	want := e.rows(t, "select id, v, n from one order by id")
	require.Len(t, want, 300)
	require.Equal(t, want, e.rows(t, "select id, v, n from many order by id"))
	require.Equal(t, [][]any{{int64(0)}}, e.rows(t, "select count(*) from many where v = 'old'"))
}

// TestApplierFuncBatch: FuncApplier.ApplyBatch calls the function for each
// event in order, data verbatim, in one round trip; a failing call fails
// the whole call.
func TestApplierFuncBatch(t *testing.T) {
	e := applierDB(t,
		"create table got (seq serial, target text, data text)",
		`create function keep(target text, data text) returns void language sql as $$ insert into got (target, data) values (target, data) $$`,
		`create function picky(target text, data text) returns void language plpgsql as $$
		 begin if data = 'bad' then raise exception 'bad data'; end if; insert into got (target, data) values (target, data); end $$`)
	hostile := pgtest.Hostile(t)
	var evs []*pgq.Event
	for i, h := range hostile {
		evs = append(evs, applierEvent(int64(i+1), "copy", route.Raw(h)))
	}
	a := mustFunc(t, "keep")
	tx, err := e.pool.Begin(e.ctx)
	require.NoError(t, err)
	require.NoError(t, a.ApplyBatch(e.ctx, tx, evs))
	require.NoError(t, tx.Commit(e.ctx))
	got := e.rows(t, "select data from got order by seq")
	require.Len(t, got, len(hostile))
	for i, h := range hostile {
		require.Equal(t, []any{h}, got[i])
	}
	bad := []*pgq.Event{applierEvent(1, "copy", route.Raw("ok")), applierEvent(2, "copy", route.Raw("bad"))}
	tx, err = e.pool.Begin(e.ctx)
	require.NoError(t, err)
	err = mustFunc(t, "picky").ApplyBatch(e.ctx, tx, bad)
	require.ErrorContains(t, err, "event 2")
	require.NoError(t, tx.Rollback(e.ctx))
}

// TestApplierRowBatchRulesKept: COPY does not apply rules, so a table with
// rules never takes the COPY path: ApplyBatch does what Apply does, which
// for an insert rule is PostgreSQL refusing ON CONFLICT (nothing is
// written with the rule skipped).
func TestApplierRowBatchRulesKept(t *testing.T) {
	e := applierDB(t,
		"create table t (id int primary key, v text)",
		"create table seen (id int)",
		"create rule t_seen as on insert to t do also insert into seen values (new.id)")
	a := mustRow(t, "t", []string{"id"})
	var evs []*pgq.Event
	for i := range 200 {
		evs = append(evs, applierEvent(int64(i+1), "I:id", urlenc.Fields{"id": i, "v": "x"}))
	}
	rowErr := e.apply(a, evs[0])
	require.ErrorContains(t, rowErr, "rules")
	require.ErrorContains(t, e.applyBatch(a, evs), "rules")
	require.Equal(t, [][]any{{int64(0), int64(0)}}, e.rows(t, "select (select count(*) from t), (select count(*) from seen)"))
}

// TestApplierRowBatchStreamsRuns: in one call, long insert runs stream as
// COPYs that end at a repeated key or another action, a column added to
// the table after the applier cached the catalog is picked up mid-call,
// and a COPY that meets an existing key after streaming a hundred rows
// goes as an upsert of every row it read; the table ends as row by row.
func TestApplierRowBatchStreamsRuns(t *testing.T) {
	e := applierDB(t,
		"create table one (id int primary key, v text)",
		"create table many (id int primary key, v text)")
	one, many := mustRow(t, "one", []string{"id"}), mustRow(t, "many", []string{"id"})
	warm := applierEvent(1, "I:id", urlenc.Fields{"id": -1, "v": "warm"})
	require.NoError(t, e.apply(one, warm))
	require.NoError(t, e.applyBatch(many, []*pgq.Event{warm})) // caches the columns
	for _, tbl := range []string{"one", "many"} {
		_, err := e.pool.Exec(e.ctx, "alter table "+tbl+" add column w text")
		require.NoError(t, err)
		_, err = e.pool.Exec(e.ctx, "insert into "+tbl+" (id, v) values (500, 'old')")
		require.NoError(t, err)
	}
	var evs []*pgq.Event
	add := func(typ string, f urlenc.Fields) {
		evs = append(evs, applierEvent(int64(len(evs)+2), typ, f))
	}
	for i := range 150 { // a COPY run longer than the first 64 rows
		add("I:id", urlenc.Fields{"id": i, "v": fmt.Sprint("a", i)})
	}
	add("U:id", urlenc.Fields{"id": 10, "v": "updated"}) // another action ends it
	for i := 150; i < 250; i++ {                         // a column the cached catalog lacks
		add("I:id", urlenc.Fields{"id": i, "v": "c", "w": fmt.Sprint("w", i)})
	}
	for i := 250; i < 350; i++ { // a repeated key ends the COPY
		add("I:id", urlenc.Fields{"id": i, "v": "d"})
		if i == 339 { // within the COPY: it ends there
			add("I:id", urlenc.Fields{"id": 260, "v": "again"})
		}
	}
	for i := 400; i < 600; i++ { // 500 exists: the COPY fails after 100 rows
		add("I:id", urlenc.Fields{"id": i, "v": "e"})
	}
	for i := range 10 {
		add("D:id", urlenc.Fields{"id": i})
	}
	for _, ev := range evs {
		require.NoError(t, e.apply(one, ev), "event %d", ev.ID)
	}
	require.NoError(t, e.applyBatch(many, evs))
	require.EqualValues(t, 1, apply.CopyFails(many), "one COPY met the existing key")
	want := e.rows(t, "select id, v, w from one order by id")
	require.Len(t, want, 1+140+100+100+200)
	require.Equal(t, want, e.rows(t, "select id, v, w from many order by id"))
	require.Equal(t, [][]any{{"updated", "again", "e", "w199"}},
		e.rows(t, "select (select v from many where id = 10), (select v from many where id = 260), (select v from many where id = 500), (select w from many where id = 199)"))
}

// TestApplierRowBatchCanceled: a canceled context ends the call with its
// error and nothing applied (the decoding goroutine ends with it: the
// package's leak check fails otherwise).
func TestApplierRowBatchCanceled(t *testing.T) {
	e := applierDB(t, "create table t (id int primary key, v text)")
	a := mustRow(t, "t", []string{"id"})
	var evs []*pgq.Event
	for i := range 1000 {
		evs = append(evs, applierEvent(int64(i+1), "I:id", urlenc.Fields{"id": i, "v": "x"}))
	}
	require.NoError(t, e.applyBatch(a, evs[:1])) // caches the columns
	ctx, cancel := context.WithCancel(e.ctx)
	tx, err := e.pool.Begin(ctx)
	require.NoError(t, err)
	cancel()
	require.ErrorIs(t, a.ApplyBatch(ctx, tx, evs[1:]), context.Canceled)
	_ = tx.Rollback(context.Background())
	require.Equal(t, [][]any{{int64(1)}}, e.rows(t, "select count(*) from t"))
}
