package apply

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
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
// parameters are. An update that finds fewer rows than it has events fails
// the whole call; Apply then names the event.
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
	pb := &pgx.Batch{}
	type check struct {
		run  []rowOp
		upd  bool
		stmt int
	}
	var checks []check
	for start := 0; start < len(ops); {
		end := a.runEnd(ops, start)
		run := ops[start:end]
		sql, args := a.runStatement(t, run)
		pb.Queue(sql, args...)
		checks = append(checks, check{run: run, upd: run[0].action == rowUpd, stmt: len(pb.QueuedQueries) - 1})
		start = end
	}
	res := tx.SendBatch(ctx, pb)
	defer res.Close()
	for _, c := range checks {
		tag, err := res.Exec()
		if err != nil {
			a.forgetOn(err)
			return fmt.Errorf("apply: events %d..%d (%s) to %s: %w", c.run[0].ev.ID, c.run[len(c.run)-1].ev.ID, c.run[0].action, a.table, err)
		}
		if c.upd && tag.RowsAffected() != int64(len(c.run)) {
			return fmt.Errorf("apply: events %d..%d (upd) to %s: %d of %d rows found",
				c.run[0].ev.ID, c.run[len(c.run)-1].ev.ID, a.table, tag.RowsAffected(), len(c.run))
		}
	}
	return res.Close()
}

// runEnd returns the end of the run starting at ops[start]: same action,
// same columns (in the same order: prepare sorts them), distinct keys.
func (a *RowApplier) runEnd(ops []rowOp, start int) int {
	first := ops[start]
	seen := map[string]struct{}{a.keyOf(first): {}}
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
