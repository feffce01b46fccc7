package apply

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/urlenc"
)

// BatchApplier is an Applier that also applies many events in a few
// statements. ApplyBatch applies evs in their order, all or nothing as far
// as the caller is concerned: on an error the caller rolls back what it
// did (the copier's pull applies a chunk in a savepoint) and applies the
// events one by one with Apply, which finds and names the failing one.
type BatchApplier interface {
	Applier
	ApplyBatch(ctx context.Context, tx pgx.Tx, evs []*pgq.Event) error
}

var _ BatchApplier = (*RowApplier)(nil)

// ApplyBatch applies evs with one statement per run of consecutive events
// that share an action and a column set and touch distinct keys (a
// repeated key starts a new run, so every row's history is applied in
// order), all runs sent in one round trip. Values travel as text arrays
// (unnest) and are cast to the columns' catalog types, as Apply's bound
// parameters are. An insert run of copyMinRows rows or more is first tried
// as a COPY (see copyRun). An update that finds fewer rows than it has
// events fails the whole call; Apply then names the event.
func (a *RowApplier) ApplyBatch(ctx context.Context, tx pgx.Tx, evs []*pgq.Event) error {
	if len(evs) == 0 {
		return nil
	}
	ops := make([]rowOp, len(evs))
	for i, ev := range evs {
		op, err := a.prepare(ctx, tx, ev)
		if err != nil {
			return err
		}
		ops[i] = op
	}
	t, err := a.columns(ctx, tx, false)
	if err != nil {
		return fmt.Errorf("apply: %d events to %s: %w", len(evs), a.table, err)
	}
	var pending []rowRun // runs queued for one pipelined round trip
	for start := 0; start < len(ops); {
		end := a.runEnd(ops, start)
		run := rowRun(ops[start:end])
		start = end
		if run[0].action == rowIns && len(run) >= copyMinRows && t.copyOK && a.copySkip.Load() <= 0 {
			if err := a.sendRuns(ctx, tx, t, pending); err != nil {
				return err
			}
			pending = nil
			done, err := a.copyRun(ctx, tx, t, run)
			if err != nil {
				return err
			}
			if done {
				continue
			}
		} else if run[0].action == rowIns && len(run) >= copyMinRows && t.copyOK {
			a.copySkip.Add(-1)
		}
		pending = append(pending, run)
	}
	return a.sendRuns(ctx, tx, t, pending)
}

// rowRun is a run of rowOps one statement applies.
type rowRun []rowOp

func (r rowRun) span() string { return fmt.Sprintf("%d..%d", r[0].ev.ID, r[len(r)-1].ev.ID) }

// sendRuns sends one statement per run in one round trip.
func (a *RowApplier) sendRuns(ctx context.Context, tx pgx.Tx, t *rowTable, runs []rowRun) error {
	if len(runs) == 0 {
		return nil
	}
	pb := &pgx.Batch{}
	for _, run := range runs {
		sql, args := a.runStatement(t, run)
		pb.Queue(sql, args...)
	}
	res := tx.SendBatch(ctx, pb)
	defer res.Close()
	for _, run := range runs {
		tag, err := res.Exec()
		if err != nil {
			a.forgetOn(err)
			return fmt.Errorf("apply: events %s (%s) to %s: %w", run.span(), run[0].action, a.table, err)
		}
		if run[0].action == rowUpd && tag.RowsAffected() != int64(len(run)) {
			return fmt.Errorf("apply: events %s (upd) to %s: %d of %d rows found",
				run.span(), a.table, tag.RowsAffected(), len(run))
		}
	}
	return res.Close()
}

// Insert runs of at least copyMinRows rows are first tried as a plain
// COPY into the table, in a savepoint: when none of their keys exists yet
// (new rows, a backfill) that is an insert at COPY speed, and the upsert
// would have inserted them all too. When a key exists the COPY fails with
// unique_violation, the savepoint is rolled back and the run goes as an
// upsert; the next runs skip the attempt for a while (up to copySkipMax
// runs, doubling while COPY keeps failing), so a table that is mostly
// updated does not pay for a failed COPY on every run. Tables with rules
// (which COPY does not apply) and views never take the COPY path.
const (
	copyMinRows = 64
	copySkipMax = 256
)

// copyRun tries run as a COPY; done is false when a key already exists
// (nothing of the run applied then).
func (a *RowApplier) copyRun(ctx context.Context, tx pgx.Tx, t *rowTable, run rowRun) (done bool, err error) {
	cols := run[0].fields
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = pgx.Identifier{c.Key}.Sanitize()
	}
	var buf bytes.Buffer
	size := 0
	for _, op := range run {
		size += len(op.ev.Extra2.String)
	}
	buf.Grow(size + size/8)
	for _, op := range run {
		for i, f := range op.fields {
			if i > 0 {
				buf.WriteByte('\t')
			}
			if !f.Value.Valid {
				buf.WriteString(`\N`)
				continue
			}
			copyEscaper.WriteString(&buf, f.Value.String)
		}
		buf.WriteByte('\n')
	}
	sp, err := tx.Begin(ctx)
	if err != nil {
		return false, err
	}
	_, err = sp.Conn().PgConn().CopyFrom(ctx, &buf, "copy "+a.table+" ("+strings.Join(names, ", ")+") from stdin")
	if err == nil {
		if err := sp.Commit(ctx); err != nil {
			return false, err
		}
		a.copySkip.Store(0)
		a.copyFails.Store(0)
		return true, nil
	}
	if rerr := sp.Rollback(ctx); rerr != nil {
		return false, rerr
	}
	if _, ok := errors.AsType[*pgconn.PgError](err); ok {
		// An existing key (unique_violation), or anything else the server
		// refused: the upsert runs instead and, if the rows are at fault,
		// fails with the error Apply would give.
		n := min(int64(1)<<min(a.copyFails.Add(1), 8), copySkipMax)
		a.copySkip.Store(n)
		return false, nil
	}
	return false, fmt.Errorf("apply: events %s (ins) to %s: %w", run.span(), a.table, err)
}

// copyEscaper escapes text for COPY's text format.
var copyEscaper = strings.NewReplacer(`\`, `\\`, "\t", `\t`, "\n", `\n`, "\r", `\r`)

// runEnd returns the end of the run starting at ops[start]: same action,
// same columns (in the same order: prepare sorts them), distinct keys.
func (a *RowApplier) runEnd(ops []rowOp, start int) int {
	first := ops[start]
	seen := make(map[string]struct{}, len(ops)-start)
	seen[a.keyOf(first)] = struct{}{}
	end := start + 1
	for ; end < len(ops); end++ {
		op := ops[end]
		if op.action != first.action || !sameColumns(op.fields, first.fields) {
			break
		}
		k := a.keyOf(op)
		if _, dup := seen[k]; dup {
			break
		}
		seen[k] = struct{}{}
	}
	return end
}

func sameColumns(x, y []urlenc.Field) bool {
	return slices.EqualFunc(x, y, func(a, b urlenc.Field) bool { return a.Key == b.Key })
}

// keyOf is op's key values, for telling keys apart within a run.
func (a *RowApplier) keyOf(op rowOp) string {
	if len(a.keys) == 1 {
		for _, f := range op.fields {
			if f.Key == a.keys[0] {
				return f.Value.String
			}
		}
	}
	var b strings.Builder
	for _, k := range a.keys {
		for _, f := range op.fields {
			if f.Key == k {
				b.WriteString(strconv.Itoa(len(f.Value.String)))
				b.WriteByte(':')
				b.WriteString(f.Value.String)
			}
		}
	}
	return b.String()
}

// runStatement builds the one statement of a run: the run's values as one
// text array per column, unnested in order.
func (a *RowApplier) runStatement(t *rowTable, run []rowOp) (string, []any) {
	cols := run[0].fields
	ident := func(c string) string { return pgx.Identifier{c}.Sanitize() }
	isKey := func(c string) bool { return slices.Contains(a.keys, c) }
	args := make([]any, len(cols))
	var arrays, aliases []string
	for i := range cols {
		vals := make([]*string, len(run))
		for j, op := range run {
			if v := op.fields[i].Value; v.Valid {
				s := v.String
				vals[j] = &s
			}
		}
		args[i] = vals
		arrays = append(arrays, fmt.Sprintf("$%d::text[]", i+1))
		aliases = append(aliases, fmt.Sprintf("c%d", i+1))
	}
	from := "unnest(" + strings.Join(arrays, ", ") + ") as v(" + strings.Join(aliases, ", ") + ")"
	val := func(i int) string { return fmt.Sprintf("v.c%d::%s", i+1, t.cols[cols[i].Key]) }
	var keyMatch []string
	for i, c := range cols {
		if isKey(c.Key) {
			keyMatch = append(keyMatch, "t."+ident(c.Key)+" = "+val(i))
		}
	}
	var b strings.Builder
	switch run[0].action {
	case rowIns:
		var names, vals, set, keys []string
		for i, c := range cols {
			names = append(names, ident(c.Key))
			vals = append(vals, val(i))
			if !isKey(c.Key) {
				set = append(set, ident(c.Key)+" = excluded."+ident(c.Key))
			}
		}
		for _, k := range a.keys {
			keys = append(keys, ident(k))
		}
		// Keys are distinct within a run, so the rows' order inside the
		// statement does not matter.
		b.WriteString("insert into " + a.table + " (" + strings.Join(names, ", ") + ") select " +
			strings.Join(vals, ", ") + " from " + from + " on conflict (" + strings.Join(keys, ", ") + ") do ")
		if len(set) == 0 {
			b.WriteString("nothing")
		} else {
			b.WriteString("update set " + strings.Join(set, ", "))
		}
	case rowUpd:
		var set []string
		for i, c := range cols {
			if !isKey(c.Key) {
				set = append(set, ident(c.Key)+" = "+val(i))
			}
		}
		if len(set) == 0 {
			for _, k := range a.keys {
				set = append(set, ident(k)+" = t."+ident(k))
			}
		}
		b.WriteString("update " + a.table + " as t set " + strings.Join(set, ", ") + " from " + from +
			" where " + strings.Join(keyMatch, " and "))
	case rowDel:
		b.WriteString("delete from " + a.table + " as t using " + from + " where " + strings.Join(keyMatch, " and "))
	}
	return b.String(), args
}

var _ BatchApplier = (*FuncApplier)(nil)

// ApplyBatch calls the function once per event, in order, all calls sent
// in one round trip.
func (a *FuncApplier) ApplyBatch(ctx context.Context, tx pgx.Tx, evs []*pgq.Event) error {
	if len(evs) == 0 {
		return nil
	}
	if a.sql == "" {
		return fmt.Errorf("event %d: %w", evs[0].ID, errNotBuilt)
	}
	pb := &pgx.Batch{}
	for _, ev := range evs {
		if err := applierCheckSize(ev, a.maxPayload); err != nil {
			return err
		}
		pb.Queue(a.sql, ev.Extra1, ev.Extra2)
	}
	res := tx.SendBatch(ctx, pb)
	defer res.Close()
	for _, ev := range evs {
		if _, err := res.Exec(); err != nil {
			return fmt.Errorf("apply: event %d with %s: %w", ev.ID, a.fn, err)
		}
	}
	return res.Close()
}
