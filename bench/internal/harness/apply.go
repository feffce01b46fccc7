package harness

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/apply"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/urlenc"
)

// applyRows is the row count of the apply case at scale 1.
const applyRows = 200_000

// The copier's pull hands ApplyBatch chunks of at most pullChunkBytes,
// counting each event's text and pullRowOverhead bytes (copier/pull.go's
// applyChunkBytes and applyRowOverhead); applyChunk gives the rows of one
// such chunk for the case's events.
const (
	pullChunkBytes  = 16 << 20
	pullRowOverhead = 512
)

func applyChunk(evs []*pgq.Event) int {
	n, size := 0, 0
	for _, ev := range evs {
		if size >= pullChunkBytes {
			break
		}
		size += len(ev.Type.String) + len(ev.Extra1.String) + len(ev.Extra2.String) + pullRowOverhead
		n++
	}
	return max(n, 1)
}

const applyTableDDL = `create table if not exists apply_items (id bigint primary key, name text, qty int, note text)`

// applyRow is row i of the apply case, as values and as a targeted event.
func applyRow(i int) []any {
	return []any{int64(i), fmt.Sprintf("item %d", i), int32(i % 1000), "a note; it's 'quoted' & = %"}
}

func applyEvent(i int) *pgq.Event {
	r := applyRow(i)
	data, err := urlenc.Fields{"action": "ins", "id": r[0], "name": r[1], "qty": r[2], "note": r[3]}.Encode()
	if err != nil {
		panic(err)
	}
	return &pgq.Event{ID: int64(i + 1), EventData: pgq.EventData{Type: pgq.T("copy"), Extra1: pgq.T("n1"), Extra2: pgq.T(data)}}
}

type applyFixture struct {
	db  *DB
	evs []*pgq.Event
	a   *apply.RowApplier
}

// timed truncates the table, then times f in one transaction, begin to
// commit, and checks the table holds n rows.
func (f *applyFixture) timed(ctx context.Context, n int, fn func(tx pgx.Tx) error) (time.Duration, error) {
	if _, err := f.db.Pool.Exec(ctx, "truncate apply_items"); err != nil {
		return 0, err
	}
	checkpoint(ctx, f.db)
	start := time.Now()
	tx, err := f.db.Pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := fn(tx); err != nil {
		return 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, err
	}
	d := time.Since(start)
	var got int
	if err := f.db.Pool.QueryRow(ctx, "select count(*) from apply_items").Scan(&got); err != nil {
		return 0, err
	}
	if got != n {
		return 0, fmt.Errorf("apply: %d rows in the table, want %d", got, n)
	}
	return d, nil
}

// bulk applies the first n events with ApplyBatch in the pull's chunks.
func (f *applyFixture) bulk(ctx context.Context, n int) (time.Duration, error) {
	chunk := applyChunk(f.evs)
	return f.timed(ctx, n, func(tx pgx.Tx) error {
		for i := 0; i < n; i += chunk {
			if err := f.a.ApplyBatch(ctx, tx, f.evs[i:min(i+chunk, n)]); err != nil {
				return err
			}
		}
		return nil
	})
}

// rowByRow applies the first n events with Apply, one statement each.
func (f *applyFixture) rowByRow(ctx context.Context, n int) (time.Duration, error) {
	return f.timed(ctx, n, func(tx pgx.Tx) error {
		for _, ev := range f.evs[:n] {
			if err := f.a.Apply(ctx, tx, ev); err != nil {
				return err
			}
		}
		return nil
	})
}

// sqlApplyUpsert is the statement ApplyBatch sends for a run of inserts
// into apply_items (columns sorted, as RowApplier sorts them).
const sqlApplyUpsert = `insert into apply_items (id, name, note, qty)
	select v.c1::bigint, v.c2::text, v.c3::text, v.c4::integer from unnest($1::text[], $2::text[], $3::text[], $4::text[]) as v(c1, c2, c3, c4)
	on conflict (id) do update set name = excluded.name, note = excluded.note, qty = excluded.qty`

// upsertOnly sends ApplyBatch's upsert statement with text arrays built
// before the clock starts: the server's share of the bulk path, no
// decoding. It shows how close to COPY an upsert can get.
func (f *applyFixture) upsertOnly(ctx context.Context, n int) (time.Duration, error) {
	cols := make([][]string, 4)
	for i := range n {
		r := applyRow(i)
		for c, v := range []any{r[0], r[1], r[3], r[2]} {
			cols[c] = append(cols[c], fmt.Sprint(v))
		}
	}
	chunk := applyChunk(f.evs)
	return f.timed(ctx, n, func(tx pgx.Tx) error {
		for i := 0; i < n; i += chunk {
			e := min(i+chunk, n)
			if _, err := tx.Exec(ctx, sqlApplyUpsert, cols[0][i:e], cols[1][i:e], cols[2][i:e], cols[3][i:e]); err != nil {
				return err
			}
		}
		return nil
	})
}

// ceiling is a raw COPY of the same rows into the same table.
func (f *applyFixture) ceiling(ctx context.Context, n int) (time.Duration, error) {
	return f.timed(ctx, n, func(tx pgx.Tx) error {
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"apply_items"}, []string{"id", "name", "qty", "note"},
			pgx.CopyFromSlice(n, func(i int) ([]any, error) { return applyRow(i), nil }))
		return err
	})
}

// applyFamily measures the RowApplier in bulk (the copier's pull) and row
// by row against a raw COPY of the same rows into the same table.
func (s *suite) applyFamily(ctx context.Context) error {
	db, err := s.env.CreateDB(ctx, "apply", false, 2)
	if err != nil {
		return err
	}
	defer s.env.DropDB(db)
	if _, err := db.Pool.Exec(ctx, applyTableDDL); err != nil {
		return err
	}
	n := s.o.n(applyRows)
	a, err := apply.NewRowApplier("apply_items", []string{"id"})
	if err != nil {
		return err
	}
	f := &applyFixture{db: db, a: a}
	for i := range n {
		f.evs = append(f.evs, applyEvent(i))
	}
	// Warm-up: the catalog cache, the first relation extension.
	if _, err := f.bulk(ctx, max(1, n/10)); err != nil {
		return fmt.Errorf("apply bulk: %w", err)
	}
	measure := func(name string, n int, ours func(context.Context, int) (time.Duration, error), target string, minRatio float64) error {
		o, c, err := s.alternate(ctx, name, s.o.Runs, n, ours, f.ceiling)
		if err != nil {
			return err
		}
		r := rateResult(fmt.Sprintf("%s, %s rows", name, count(n)), o, c, "raw COPY, same rows, same table", target, minRatio)
		r.Events = n
		s.add(r)
		return nil
	}
	if err := measure(fmt.Sprintf("RowApplier in bulk (ApplyBatch, %d per call, the pull's chunk)", applyChunk(f.evs)), n, f.bulk, "≥ 0.50", 0.5); err != nil {
		return err
	}
	if err := measure("the same upsert, arrays prebuilt (server's share: an upsert's limit)", n, f.upsertOnly, "report", 0); err != nil {
		return err
	}
	return measure("RowApplier row by row (Apply)", max(1, n/10), f.rowByRow, "report", 0)
}
