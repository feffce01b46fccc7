package apply_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/pgq-go/pgq/apply"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/urlenc"
)

// BenchmarkApplyBatch applies chunks of 2000 new rows (the copier pull's
// chunk) with ApplyBatch, one transaction per chunk, the table emptied
// between chunks; it reports rows/s. Compare with BenchmarkRawCopy.
func BenchmarkApplyBatch(b *testing.B) {
	ctx := context.Background()
	pool := cluster.NewPlainDB(b).Pool
	if _, err := pool.Exec(ctx, `create table items (id bigint primary key, name text, qty int, note text)`); err != nil {
		b.Fatal(err)
	}
	a, err := apply.NewRowApplier("items", []string{"id"})
	if err != nil {
		b.Fatal(err)
	}
	const chunk = 20000
	evs := make([]*pgq.Event, chunk)
	for i := range evs {
		data, err := urlenc.Fields{"action": "ins", "id": i, "name": fmt.Sprintf("item %d", i), "qty": i % 1000,
			"note": "a note; it's 'quoted' & = %"}.Encode()
		if err != nil {
			b.Fatal(err)
		}
		evs[i] = &pgq.Event{ID: int64(i + 1), EventData: pgq.EventData{Type: pgq.T("copy"), Extra1: pgq.T("n1"), Extra2: pgq.T(data)}}
	}
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		if _, err := pool.Exec(ctx, "truncate items"); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		tx, err := pool.Begin(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := a.ApplyBatch(ctx, tx, evs); err != nil {
			b.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*chunk)/b.Elapsed().Seconds(), "rows/s")
}
