package apply

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"

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
// order), runs sent together in one round trip. Values travel as text
// arrays (unnest) and are cast to the columns' catalog types, as Apply's
// bound parameters are. An insert run of copyMinRows rows or more is first
// tried as a COPY (see copyRun). An update that finds fewer rows than it
// has events fails the whole call; Apply then names the event.
//
// The events are decoded on a second goroutine while the server applies
// the runs before them: a COPY streams each row as soon as it is decoded,
// so decoding costs the caller little more than the server's own work.
func (a *RowApplier) ApplyBatch(ctx context.Context, tx pgx.Tx, evs []*pgq.Event) error {
	if len(evs) == 0 {
		return nil
	}
	if a.table == "" {
		return fmt.Errorf("event %d: %w", evs[0].ID, errNotBuilt)
	}
	t, err := a.columns(ctx, tx, false)
	if err != nil {
		return fmt.Errorf("apply: %d events to %s: %w", len(evs), a.table, err)
	}
	s := &opStream{a: a, ctx: ctx, tx: tx, items: make(chan parsedOp, decodeAhead), done: make(chan struct{})}
	s.wg.Add(1)
	go s.decode(t, evs)
	defer s.stop()

	var pending []rowRun // runs queued for one pipelined round trip
	// The ops in order, never more than evs: runs are consecutive, so the
	// run being gathered is all[start:].
	all := make([]rowOp, 0, len(evs))
	start := 0
	seen := make(map[string]struct{}, len(evs)) // the keys of all[start:]
	copyTried := false                          // the run reached copyMinRows (COPY tried or skipped)
	newRun := func() {
		start, copyTried = len(all), false
		clear(seen)
	}
	for {
		op, ok, err := s.next()
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		key := a.keyOf(op)
		if len(all) > start && !a.extends(all[start:], seen, op, key) {
			pending = append(pending, all[start:len(all):len(all)])
			newRun()
		}
		all = append(all, op)
		seen[key] = struct{}{}
		if copyTried || len(all)-start < copyMinRows || op.action != rowIns || !op.t.copyOK {
			continue
		}
		copyTried = true
		if a.copySkip.Load() > 0 {
			a.copySkip.Add(-1)
			continue
		}
		if err := a.sendRuns(ctx, tx, pending); err != nil {
			return err
		}
		pending = nil
		done, err := a.copyRun(ctx, tx, s, &all, start, seen)
		if err != nil {
			return err
		}
		if done {
			newRun()
		}
		// Not done: an existing key; the run (every row the COPY read)
		// goes as an upsert, and may still grow.
	}
	if len(all) > start {
		pending = append(pending, all[start:])
	}
	return a.sendRuns(ctx, tx, pending)
}

// extends reports whether op (whose key is key) continues the run cur
// (whose keys are seen): same action, same columns (in the same order:
// check sorts them), a key not in the run yet.
func (a *RowApplier) extends(cur []rowOp, seen map[string]struct{}, op rowOp, key string) bool {
	first := cur[0]
	if op.action != first.action || !sameColumns(op.fields, first.fields) {
		return false
	}
	_, dup := seen[key]
	return !dup
}

// decodeAhead is how many decoded events the decoding goroutine of
// ApplyBatch may be ahead of the statements.
const decodeAhead = 256

// parsedOp is one event of an opStream: decoded and checked, or stale
// (its columns do not match the catalog the stream started with: the
// applier checks it again against a fresh read), or failed.
type parsedOp struct {
	op    rowOp
	stale bool
	err   error
}

// opStream decodes a batch's events on a goroutine of its own, in order.
type opStream struct {
	a     *RowApplier
	ctx   context.Context
	tx    pgx.Tx
	items chan parsedOp
	done  chan struct{}
	wg    sync.WaitGroup
	back  *parsedOp // an item received but not taken (unread)
}

// decode decodes evs against t into s.items, until done.
func (s *opStream) decode(t *rowTable, evs []*pgq.Event) {
	defer s.wg.Done()
	defer close(s.items)
	for _, ev := range evs {
		var it parsedOp
		op, londiste, err := s.a.parse(ev)
		switch {
		case err != nil:
			it.err = err
		case s.a.check(t, &op, londiste) != nil:
			it = parsedOp{op: rowOp{ev: ev}, stale: true}
		default:
			it.op = op
		}
		select {
		case s.items <- it:
		case <-s.done:
			return
		}
		if it.err != nil {
			return
		}
	}
}

// stop ends the decoding goroutine and waits for it.
func (s *opStream) stop() {
	close(s.done)
	s.wg.Wait()
}

// recv returns the next item; ok is false at the end.
func (s *opStream) recv() (it parsedOp, ok bool, err error) {
	if s.back != nil {
		it, s.back = *s.back, nil
		return it, true, nil
	}
	select {
	case it, ok = <-s.items:
		return it, ok, nil
	case <-s.ctx.Done():
		return it, false, s.ctx.Err()
	}
}

// unread gives it back: the next recv returns it.
func (s *opStream) unread(it parsedOp) { s.back = &it }

// next returns the next op; ok is false at the end. A stale op is checked
// again after a fresh read of the catalog on s.tx, so next must not be
// called while a statement is in progress on s.tx (a COPY reads with recv).
func (s *opStream) next() (op rowOp, ok bool, err error) {
	it, ok, err := s.recv()
	switch {
	case err != nil || !ok:
		return rowOp{}, false, err
	case it.err != nil:
		return rowOp{}, false, it.err
	case it.stale:
		op, err := s.a.prepare(s.ctx, s.tx, it.op.ev)
		return op, err == nil, err
	}
	return it.op, true, nil
}

// rowRun is a run of rowOps one statement applies.
type rowRun []rowOp

func (r rowRun) span() string { return fmt.Sprintf("%d..%d", r[0].ev.ID, r[len(r)-1].ev.ID) }

// sendRuns sends one statement per run in one round trip.
func (a *RowApplier) sendRuns(ctx context.Context, tx pgx.Tx, runs []rowRun) error {
	if len(runs) == 0 {
		return nil
	}
	pb := &pgx.Batch{}
	for _, run := range runs {
		sql, args := a.runStatement(run[len(run)-1].t, run)
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

// copyRun sends the run (*ops)[start:] as a COPY, streaming after its
// rows the next ops of s that extend it (appended to *ops, their keys to
// seen); done is false when a key already exists (nothing of the run
// applied then; *ops holds every op the COPY read).
func (a *RowApplier) copyRun(ctx context.Context, tx pgx.Tx, s *opStream, ops *[]rowOp, start int, seen map[string]struct{}) (done bool, err error) {
	cols := (*ops)[start].fields
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = pgx.Identifier{c.Key}.Sanitize()
	}
	sp, err := tx.Begin(ctx)
	if err != nil {
		return false, err
	}
	r := &copyReader{a: a, s: s, ops: ops, start: start, i: start, seen: seen}
	_, err = sp.Conn().PgConn().CopyFrom(ctx, r, "copy "+a.table+" ("+strings.Join(names, ", ")+") from stdin")
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
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if _, ok := errors.AsType[*pgconn.PgError](err); ok {
		// An existing key (unique_violation), or anything else the server
		// refused: the upsert runs instead and, if the rows are at fault,
		// fails with the error Apply would give.
		n := min(int64(1)<<min(a.copyFails.Add(1), 8), copySkipMax)
		a.copySkip.Store(n)
		return false, nil
	}
	return false, fmt.Errorf("apply: events %s (ins) to %s: %w", rowRun((*ops)[start:]).span(), a.table, err)
}

// copyReader is the COPY text of a run: its ops, then the stream's next
// ops while they extend it. Anything else (another action, a repeated key,
// a stale or failed item, the end) ends it, given back to the stream.
type copyReader struct {
	a     *RowApplier
	s     *opStream
	ops   *[]rowOp
	start int // the run is (*ops)[start:]
	seen  map[string]struct{}
	i     int // (*ops)[:i] written
	eof   bool
	buf   bytes.Buffer
}

func (r *copyReader) Read(p []byte) (int, error) {
	for r.buf.Len() < len(p) && !r.eof {
		if r.i < len(*r.ops) {
			r.write((*r.ops)[r.i])
			r.i++
			continue
		}
		it, ok, err := r.s.recv()
		if err != nil {
			return 0, err
		}
		if !ok {
			r.eof = true
			break
		}
		var key string
		if it.err == nil && !it.stale {
			key = r.a.keyOf(it.op)
		}
		if it.err != nil || it.stale || !r.a.extends((*r.ops)[r.start:], r.seen, it.op, key) {
			r.s.unread(it)
			r.eof = true
			break
		}
		*r.ops = append(*r.ops, it.op)
		r.seen[key] = struct{}{}
	}
	if r.buf.Len() == 0 && r.eof {
		return 0, io.EOF
	}
	return r.buf.Read(p)
}

// write appends op's row in COPY text format.
func (r *copyReader) write(op rowOp) {
	for i, f := range op.fields {
		if i > 0 {
			r.buf.WriteByte('\t')
		}
		if !f.Value.Valid {
			r.buf.WriteString(`\N`)
			continue
		}
		copyEscaper.WriteString(&r.buf, f.Value.String)
	}
	r.buf.WriteByte('\n')
}

// copyEscaper escapes text for COPY's text format.
var copyEscaper = strings.NewReplacer(`\`, `\\`, "\t", `\t`, "\n", `\n`, "\r", `\r`)

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
