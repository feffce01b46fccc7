package harness

import (
	"context"
	"fmt"
	"iter"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/pgq"
)

// payloadPad makes ev_data about 100 bytes, a small row change.
const payloadPad = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnop"

// benchEvent is event i of every case: a londiste-style row event of
// about 130 bytes of text.
func benchEvent(i int) pgq.EventData {
	return pgq.EventData{
		Type:   pgq.T("I:public.bench"),
		Data:   pgq.T("id=" + strconv.Itoa(i) + "&v=" + payloadPad),
		Extra1: pgq.T("public.bench"),
	}
}

func benchEvents(n int) iter.Seq[pgq.EventData] {
	return func(yield func(pgq.EventData) bool) {
		for i := range n {
			if !yield(benchEvent(i)) {
				return
			}
		}
	}
}

// insertFixture is a database for the insert cases: a fresh queue per
// bulk run, a queue for pipelined inserts, and the ceiling table.
type insertFixture struct {
	db      *DB
	ceiling pgx.Identifier
	seq     int
}

const pipeQueue = "pipe_q"

func newInsertFixture(ctx context.Context, env *Env) (*insertFixture, error) {
	db, err := env.CreateDB(ctx, "insert", true, 4)
	if err != nil {
		return nil, err
	}
	f := &insertFixture{db: db, ceiling: pgx.Identifier{"public", "copy_ceiling"}}
	if _, err := pgq.CreateQueue(ctx, db.Pool, pipeQueue); err != nil {
		return nil, err
	}
	// The ceiling table has the shape of a queue's event table (columns,
	// defaults, the ev_txid index, storage options) and its own sequence.
	var tbl string
	if err := db.Pool.QueryRow(ctx, "select pgq.current_event_table($1)", pipeQueue).Scan(&tbl); err != nil {
		return nil, err
	}
	schema, name, _ := strings.Cut(tbl, ".")
	src := pgx.Identifier{schema, name}.Sanitize()
	for _, sql := range []string{
		"create sequence public.copy_ceiling_seq",
		"create table public.copy_ceiling (like " + src + " including all) " +
			"with (fillfactor = 100, autovacuum_enabled = off, toast.autovacuum_enabled = off)",
		"alter table public.copy_ceiling alter column ev_id set default nextval('public.copy_ceiling_seq')",
	} {
		if _, err := db.Pool.Exec(ctx, sql); err != nil {
			return nil, fmt.Errorf("%s: %w", sql, err)
		}
	}
	return f, nil
}

// bulkOurs inserts n events with pgq.InsertEvents (COPY into the
// current event table) into a fresh queue, in one transaction; the time
// covers begin to commit.
func (f *insertFixture) bulkOurs(ctx context.Context, n int) (time.Duration, error) {
	f.seq++
	q := "bulk_" + strconv.Itoa(f.seq)
	if _, err := pgq.CreateQueue(ctx, f.db.Pool, q); err != nil {
		return 0, err
	}
	defer func() { _ = pgq.DropQueue(context.WithoutCancel(ctx), f.db.Pool, q, true) }()
	checkpoint(ctx, f.db)
	start := time.Now()
	tx, err := f.db.Pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	got, err := pgq.InsertEvents(ctx, tx, q, benchEvents(n))
	if err != nil {
		return 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, err
	}
	d := time.Since(start)
	if got != int64(n) {
		return 0, fmt.Errorf("bulk insert: %d rows, want %d", got, n)
	}
	return d, nil
}

var ceilingColumns = []string{"ev_time", "ev_type", "ev_data", "ev_extra1", "ev_extra2", "ev_extra3", "ev_extra4"}

// bulkCeiling is plain pgx CopyFrom of the same rows into an empty table
// of the event table's shape, in one transaction.
func (f *insertFixture) bulkCeiling(ctx context.Context, n int) (time.Duration, error) {
	if _, err := f.db.Pool.Exec(ctx, "truncate "+f.ceiling.Sanitize()); err != nil {
		return 0, err
	}
	checkpoint(ctx, f.db)
	start := time.Now()
	tx, err := f.db.Pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	now := time.Now()
	i := 0
	row := make([]any, 7)
	got, err := tx.CopyFrom(ctx, f.ceiling, ceilingColumns, pgx.CopyFromFunc(func() ([]any, error) {
		if i == n {
			return nil, nil
		}
		e := benchEvent(i)
		i++
		row[0], row[1], row[2], row[3], row[4], row[5], row[6] = now, e.Type, e.Data, e.Extra1, e.Extra2, e.Extra3, e.Extra4
		return row, nil
	}))
	if err != nil {
		return 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, err
	}
	d := time.Since(start)
	if got != int64(n) {
		return 0, fmt.Errorf("ceiling copy: %d rows, want %d", got, n)
	}
	return d, nil
}

// pipelineChunk is how many insert_event calls share one round trip.
const pipelineChunk = 1000

// sqlInsertEvent is the statement pgq.InsertEvent sends. The pipelined case
// queues it on a pgx.Batch itself: the pgq package has no pipelined insert
// (COPY, pgq.InsertEvents, is its bulk form), so this measures the raw
// alternative a producer could write with pgx.
const sqlInsertEvent = "select pgq.insert_event($1, $2, $3, $4, $5, $6, $7)"

// pipelinedOurs inserts n events with pgq.insert_event, chunks of
// pipelineChunk calls per round trip (pgx.Batch), in one transaction.
func (f *insertFixture) pipelinedOurs(ctx context.Context, n int) (time.Duration, error) {
	start := time.Now()
	tx, err := f.db.Pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	for i := 0; i < n; {
		pb := &pgx.Batch{}
		for ; i < n && pb.Len() < pipelineChunk; i++ {
			e := benchEvent(i)
			pb.Queue(sqlInsertEvent, pipeQueue, e.Type, e.Data, e.Extra1, e.Extra2, e.Extra3, e.Extra4)
		}
		if err := tx.SendBatch(ctx, pb).Close(); err != nil {
			return 0, fmt.Errorf("pipelined insert_event: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// pipelinedCeiling makes the same calls one round trip each
// (pgq.InsertEvent), in one transaction.
func (f *insertFixture) pipelinedCeiling(ctx context.Context, n int) (time.Duration, error) {
	start := time.Now()
	tx, err := f.db.Pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	for i := range n {
		if _, err := pgq.InsertEvent(ctx, tx, pipeQueue, benchEvent(i)); err != nil {
			return 0, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// Sizes of the insert cases at scale 1.
const (
	bulkEvents      = 1_000_000
	pipelinedEvents = 20_000
)

func (s *suite) insertFamily(ctx context.Context) error {
	f, err := newInsertFixture(ctx, s.env)
	if err != nil {
		return err
	}
	defer s.env.DropDB(f.db)

	n := s.o.n(bulkEvents)
	// Warm up both paths (caches, the first relation extension), then
	// measure: COPY throughput on a shared 2-core machine is the noisiest
	// figure, so it gets two more runs than the others.
	if _, err := f.bulkOurs(ctx, max(1, n/10)); err != nil {
		return fmt.Errorf("bulk insert: %w", err)
	}
	if _, err := f.bulkCeiling(ctx, max(1, n/10)); err != nil {
		return fmt.Errorf("bulk insert ceiling: %w", err)
	}
	runs := s.o.Runs
	if runs >= 3 {
		runs += 2
	}
	ours, ceil, err := s.alternate(ctx, "bulk insert", runs, n, f.bulkOurs, f.bulkCeiling)
	if err != nil {
		return err
	}
	r := rateResult(fmt.Sprintf("bulk insert %s events (COPY into the queue)", count(n)), ours, ceil,
		"plain COPY, same rows, same table shape", "≥ 0.90", 0.90)
	r.Events = n
	r.Note = fmt.Sprintf("%d runs, sides alternating, after a warm-up; ratio = median of per-run ratios", runs)
	s.add(r)

	n = s.o.n(pipelinedEvents)
	if ours, ceil, err = s.alternate(ctx, "pipelined insert", s.o.Runs, n, f.pipelinedOurs, f.pipelinedCeiling); err != nil {
		return err
	}
	r = rateResult(fmt.Sprintf("insert_event one by one, pipelined (%s events, %d per round trip)", count(n), pipelineChunk),
		ours, ceil, "same calls, one round trip each", "report", 0)
	r.Events = n
	s.add(r)
	return s.captureCase(ctx)
}

// alternate measures ours and its ceiling runs times each on n events,
// alternating which goes first so a drifting machine favours neither, and
// returns their rates.
func (s *suite) alternate(ctx context.Context, what string, runs, n int,
	ours, ceiling func(context.Context, int) (time.Duration, error)) (o, c []float64, err error) {
	for run := range runs {
		for k := range 2 {
			side, f, out := "", ours, &o
			if (run+k)%2 != 0 {
				side, f, out = " ceiling", ceiling, &c
			}
			d, err := f(ctx, n)
			if err != nil {
				return nil, nil, fmt.Errorf("%s%s: %w", what, side, err)
			}
			*out = append(*out, rate(n, d))
		}
		s.logf("%s run %d: ours %s, ceiling %s", what, run+1, formatRate(o[run]), formatRate(c[run]))
	}
	return o, c, nil
}

// count formats an event count: 1M, 20k, 500.
func count(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return strconv.Itoa(n/1_000_000) + "M"
	case n >= 1000 && n%1000 == 0:
		return strconv.Itoa(n/1000) + "k"
	}
	return strconv.Itoa(n)
}

// checkpoint flushes dirty buffers before a timed write, so one side does
// not pay for the other's (best effort: it needs pg_checkpoint or superuser).
func checkpoint(ctx context.Context, db *DB) { _, _ = db.Pool.Exec(ctx, "checkpoint") }
