package harness

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/pgq-go/pgq/copier"
	"github.com/pgq-go/pgq/pgq"
)

// Capture case (issue 16 goal 3): the capture trigger's cost per row
// beside Skytools' pgq.logutriga on the same table in the same run. Each
// side inserts captureRows rows into a fresh table of the same shape with
// one INSERT ... SELECT; its overhead is its time less a plain table's,
// per row. The capture sends one event per target; logutriga one per row.
const captureRows = 20_000

// captureTableDDL is the captured table: a key, the targets, a short text
// and a number, about the row of a small business table.
const captureTableDDL = `create table %s (id int primary key, targets text[], name text, amount numeric, at timestamptz default now())`

func (s *suite) captureCase(ctx context.Context) error {
	db, err := s.env.CreateDB(ctx, "capture", true, 4)
	if err != nil {
		return err
	}
	defer s.env.DropDB(db)
	p := db.Pool
	for _, q := range []string{"logu_q", "capture_q"} {
		if _, err := pgq.CreateQueue(ctx, p, q); err != nil {
			return err
		}
	}
	n := s.o.n(captureRows)
	seq := 0
	// insert times one INSERT of n rows into a new table set up by arm.
	insert := func(targets []string, arm func(table string) error) (time.Duration, error) {
		seq++
		table := fmt.Sprintf("cap_%d", seq)
		if _, err := p.Exec(ctx, fmt.Sprintf(captureTableDDL, table)); err != nil {
			return 0, err
		}
		defer func() { _, _ = p.Exec(context.WithoutCancel(ctx), "drop table "+table) }()
		if err := arm(table); err != nil {
			return 0, err
		}
		checkpoint(ctx, db)
		t0 := time.Now()
		_, err := p.Exec(ctx, "insert into "+table+" (id, targets, name, amount) "+
			"select i, $1::text[], 'customer ' || i, i * 1.25 from generate_series(1, $2) i", targets, n)
		return time.Since(t0), err
	}
	plain := func(string) error { return nil }
	logu := func(table string) error {
		_, err := p.Exec(ctx, "create trigger logu after insert or update or delete on "+table+
			" for each row execute function pgq.logutriga('logu_q')")
		return err
	}
	capture := func(table string) error {
		return copier.AddCapture(ctx, p, copier.CaptureConfig{Table: table, Queue: "capture_q", Origin: "n1", TargetColumn: "targets"})
	}
	targetSets := [][]string{{"n2"}, {"n2", "n3"}, {"n2", "n3", "n4", "n5"}}
	// Warm-up: the first table of a kind pays for catalog caches.
	for _, arm := range []func(string) error{plain, logu, capture} {
		if _, err := insert(targetSets[0], arm); err != nil {
			return fmt.Errorf("capture warm-up: %w", err)
		}
	}
	perRow := func(d, base time.Duration) float64 {
		return float64(d-base) / float64(n) / float64(time.Microsecond)
	}
	var loguRuns []float64
	capRuns := make([][]float64, len(targetSets))
	var ratios []float64
	for run := range s.o.Runs {
		base, err := insert(targetSets[0], plain)
		if err != nil {
			return fmt.Errorf("capture plain: %w", err)
		}
		dl, err := insert(targetSets[0], logu)
		if err != nil {
			return fmt.Errorf("capture logutriga: %w", err)
		}
		var line []string
		for i, ts := range targetSets {
			dc, err := insert(ts, capture)
			if err != nil {
				return fmt.Errorf("capture %d targets: %w", len(ts), err)
			}
			capRuns[i] = append(capRuns[i], perRow(dc, base))
			line = append(line, fmt.Sprintf("%d targets %.1f µs", len(ts), capRuns[i][run]))
		}
		loguRuns = append(loguRuns, perRow(dl, base))
		if loguRuns[run] > 0 {
			ratios = append(ratios, capRuns[0][run]/loguRuns[run])
		}
		s.logf("capture run %d: plain %.1f µs/row; overhead logutriga %.1f µs, capture %s", run+1,
			float64(base)/float64(n)/float64(time.Microsecond), loguRuns[run], strings.Join(line, ", "))
	}

	ratio := median(ratios)
	met := ratio <= 1.5
	r := Result{Case: fmt.Sprintf("capture trigger, 1 target: overhead per row inserted (%s rows, one INSERT)", count(n)),
		Unit: "µs", Ours: median(capRuns[0]), OursRuns: capRuns[0], Ceiling: median(loguRuns), CeilingRuns: loguRuns,
		CeilingWhat: "pgq.logutriga (Skytools' C trigger) on the same table", Target: "≤ 1.5× logutriga", Met: &met}
	r.Ratio = ratio
	r.oursText = fmt.Sprintf("%.1f µs/row", r.Ours)
	r.ceilText = fmt.Sprintf("%.1f µs/row", r.Ceiling)
	r.Note = "overhead = (time with the trigger − time into a plain table) / rows; ratio = median of per-run capture/logutriga (lower is better)"
	s.add(r)

	c1, c2, c4 := median(capRuns[0]), median(capRuns[1]), median(capRuns[2])
	// Linear: each target added costs about the same; the growth from 2
	// to 4 targets, per target, is at most 1.5× that from 1 to 2.
	inc12, inc24 := c2-c1, (c4-c2)/2
	lin := inc24 <= 1.5*max(inc12, 0.1)
	r = Result{Case: "capture trigger, 1 / 2 / 4 targets: overhead per row", Unit: "µs", Ours: c4, OursRuns: capRuns[2],
		Target: "linear in targets", Met: &lin,
		Values: map[string]float64{"targets_1_us": c1, "targets_2_us": c2, "targets_4_us": c4, "per_target_1to2_us": inc12, "per_target_2to4_us": inc24}}
	r.oursText = fmt.Sprintf("%.1f / %.1f / %.1f µs/row (+%.1f, then +%.1f per target)", c1, c2, c4, inc12, inc24)
	r.ceilText = "—"
	r.Note = "one event per target per row; linear = the cost per added target from 2 to 4 targets at most 1.5× that from 1 to 2"
	s.add(r)
	return nil
}
