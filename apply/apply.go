// Package apply writes targeted rows into tables: the Applier a
// TargetedCopier's pull calls for each row addressed to its node, and two
// ready ones, RowApplier (urlencoded rows, the seed's ins/upd/del or
// londiste's I:/U:/D:, into one table, with parameterised SQL checked
// against the catalog) and FuncApplier (a user SQL function, like the
// seed's __data_copier, with the row bound as a parameter).
//
// Both also implement BatchApplier: the copier's pull hands them its rows
// in chunks, which RowApplier writes with one statement per run of
// same-shaped rows (a COPY for runs of new rows) and FuncApplier with all
// calls in one round trip; a chunk that fails is redone row by row.
//
// Appliers are built once, by their constructor, which validates their
// configuration; they are safe for concurrent use, so one applier may
// serve several copiers.
package apply

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/urlenc"
)

// ErrBadPayload is wrapped by every error caused by the content of an
// event rather than by the database: undecodable encoding, unknown or
// missing columns, an unknown action, an oversized row. Such an event can
// never succeed as it is, so the copier parks it at once instead of
// retrying it. Test with errors.Is.
var ErrBadPayload = errors.New("apply: bad payload")

// Option adjusts an applier built by NewRowApplier or NewFuncApplier.
type Option func(*options)

type options struct {
	maxPayload int
}

// MaxPayload sets the largest ev_extra2 accepted, in bytes; larger events
// fail with ErrBadPayload. Default urlenc.MaxRowSize (1 MiB).
func MaxPayload(n int) Option { return func(o *options) { o.maxPayload = n } }

func buildOptions(opts []Option) (options, error) {
	o := options{maxPayload: urlenc.MaxRowSize}
	for _, f := range opts {
		f(&o)
	}
	if o.maxPayload <= 0 {
		return o, fmt.Errorf("apply: MaxPayload must be positive, got %d", o.maxPayload)
	}
	return o, nil
}

// errNotBuilt is the error of an applier used without its constructor.
var errNotBuilt = errors.New("apply: applier not built by its constructor (NewRowApplier, NewFuncApplier)")

// Applier applies one targeted event on the node it was addressed to. It
// is called inside the pull's destination transaction, once per event
// whose target (ev.Extra1) is this node; ev.Extra2 is the row payload and
// ev.Type is "copy" or a londiste-style "I:…", "U:…", "D:…". Whatever it
// writes through tx commits together with the record that the event was
// applied, or not at all. An error wrapping ErrBadPayload means the event
// can never be applied and is parked at once; any other error is retried.
type Applier interface {
	Apply(ctx context.Context, tx pgx.Tx, ev *pgq.Event) error
}

// OrderKeyer is implemented by an Applier that knows which events must be
// applied in the order they were sent: events with equal order keys (for
// RowApplier, the same table and key column values) keep their relative
// order across failures, retries, parking and replay; events with
// different keys do not wait for each other. See the copier package's
// Config.OrderKey.
type OrderKeyer interface {
	// OrderKey returns ev's order key. An error (for example a payload
	// that cannot be read) parks the event at once, without a key.
	OrderKey(ev *pgq.Event) (string, error)
}

// ApplierFunc adapts a function to Applier.
type ApplierFunc func(ctx context.Context, tx pgx.Tx, ev *pgq.Event) error

// Apply calls f.
func (f ApplierFunc) Apply(ctx context.Context, tx pgx.Tx, ev *pgq.Event) error {
	return f(ctx, tx, ev)
}

// FuncApplier calls a user SQL function for every event, like the seed's
// __data_copier(target, data), as
//
//	select <Func>($1::text, $2::text)
//
// with the event's target node (ev_extra1) and payload (ev_extra2) bound as
// parameters: the data reaches the function verbatim, whatever quotes or
// SQL it holds. The function must accept (text, text); its result is
// discarded, and an exception it raises fails the event (retried, then
// parked).
type FuncApplier struct {
	fn         string // as given
	sql        string
	maxPayload int
}

// NewFuncApplier returns a FuncApplier calling fn: a function name,
// optionally schema-qualified ("copy.__data_copier"; split at the first
// '.'), quoted as it is, not case-folded.
func NewFuncApplier(fn string, opts ...Option) (*FuncApplier, error) {
	id, err := applierIdent("function", fn)
	if err != nil {
		return nil, err
	}
	o, err := buildOptions(opts)
	if err != nil {
		return nil, err
	}
	return &FuncApplier{fn: fn, sql: "select " + id + "($1::text, $2::text)", maxPayload: o.maxPayload}, nil
}

// Apply calls the function with ev's target and payload.
func (a *FuncApplier) Apply(ctx context.Context, tx pgx.Tx, ev *pgq.Event) error {
	if a.sql == "" {
		return fmt.Errorf("event %d: %w", ev.ID, errNotBuilt)
	}
	if err := applierCheckSize(ev, a.maxPayload); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, a.sql, ev.Extra1, ev.Extra2); err != nil {
		return fmt.Errorf("apply: event %d with %s: %w", ev.ID, a.fn, err)
	}
	return nil
}

// applierIdent splits a possibly schema-qualified name at its first '.'
// and quotes it.
func applierIdent(field, name string) (string, error) {
	parts := strings.SplitN(name, ".", 2)
	for _, p := range parts {
		if p == "" || strings.IndexByte(p, 0) >= 0 {
			return "", fmt.Errorf("apply: %s: invalid name %q", field, name)
		}
	}
	return pgx.Identifier(parts).Sanitize(), nil
}

func applierCheckSize(ev *pgq.Event, limit int) error {
	if n := len(ev.Extra2.String); n > limit {
		return fmt.Errorf("%w: event %d: payload is %d bytes, more than %d", ErrBadPayload, ev.ID, n, limit)
	}
	return nil
}

// RowApplier writes urlencoded rows (Fields, or Skytools' db_urlencode)
// into one table with parameterised SQL:
//
//	ins  insert … on conflict (Keys) do update set <other columns> = excluded.…
//	     (do nothing when the row has only key columns)
//	upd  update … set <other columns> where <Keys>; no such row is an error
//	     that is retried (the insert may not have arrived yet)
//	del  delete … where <Keys>; no such row is fine
//
// The action is the event type's londiste-style prefix "I:", "U:" or "D:"
// when it has one; then the payload is pure row data (a field named
// "action" is a column if the table has one, else ignored). Otherwise the
// action is the payload's "action" field (ins, upd or del, as in the
// seed), which is not a column.
//
// Column names come from the payload, so they are checked against the
// table's catalog (read once and cached; re-read when the table changes)
// and quoted; every value is bound as text and cast to the column's
// catalog type, NULL as NULL. Unknown columns, missing or NULL key values,
// a missing or unknown action, malformed encoding and oversized payloads
// fail with errors wrapping ErrBadPayload; a missing table or key column
// (configuration, fixable by DDL) and database errors do not. Every error
// names the event id.
//
// ON CONFLICT needs a unique index or constraint on exactly Keys.
type RowApplier struct {
	table      string // quoted
	keys       []string
	maxPayload int

	mu     sync.Mutex
	cached *rowTable // the table's columns, nil until read

	copySkip  atomic.Int64 // insert runs left to send as upserts without trying COPY
	copyFails atomic.Int64 // COPY attempts failed in a row (on an existing key)
}

// rowTable is a table's writable columns: name → type to cast text to.
type rowTable struct {
	cols map[string]string
	// copyOK: a COPY into the table does what an INSERT does (a plain or
	// partitioned table without rules: COPY does not apply rules).
	copyOK bool
}

// sqlCopyOK tells whether COPY into a table behaves as INSERT.
const sqlCopyOK = `select c.relkind in ('r', 'p') and not c.relhasrules from pg_catalog.pg_class c where c.oid = to_regclass($1)`

// NewRowApplier returns a RowApplier writing into table (optionally
// schema-qualified, "app.items", split at the first '.', quoted as it is,
// not case-folded) whose rows are identified by the key columns keys (at
// least one).
func NewRowApplier(table string, keys []string, opts ...Option) (*RowApplier, error) {
	quoted, err := applierIdent("table", table)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("apply: table %s: at least one key column is required", quoted)
	}
	for i, k := range keys {
		if k == "" || strings.IndexByte(k, 0) >= 0 {
			return nil, fmt.Errorf("apply: table %s: invalid key column name %q", quoted, k)
		}
		if slices.Contains(keys[:i], k) {
			return nil, fmt.Errorf("apply: table %s: key column %q listed twice", quoted, k)
		}
	}
	o, err := buildOptions(opts)
	if err != nil {
		return nil, err
	}
	return &RowApplier{table: quoted, keys: slices.Clone(keys), maxPayload: o.maxPayload}, nil
}

// OrderKey returns the table and the values of the Keys columns in ev's
// payload: the rows of one table row keep their order. A payload that
// cannot be decoded, or lacks a key column or has it NULL, is an error
// wrapping ErrBadPayload. It reads neither the database nor the action,
// so an "ins", "upd" and "del" of the same row share a key.
func (a *RowApplier) OrderKey(ev *pgq.Event) (string, error) {
	if a.table == "" {
		return "", fmt.Errorf("event %d: %w", ev.ID, errNotBuilt)
	}
	fields, err := decode(ev)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString(a.table)
	for _, k := range a.keys {
		i := slices.IndexFunc(fields, func(f urlenc.Field) bool { return f.Key == k })
		if i < 0 {
			return "", fmt.Errorf("%w: event %d: key column %q missing", ErrBadPayload, ev.ID, k)
		}
		if !fields[i].Value.Valid {
			return "", fmt.Errorf("%w: event %d: key column %q is NULL", ErrBadPayload, ev.ID, k)
		}
		fmt.Fprintf(&b, " %s=%q", pgx.Identifier{k}.Sanitize(), fields[i].Value.String)
	}
	return b.String(), nil
}

// decode reads ev's urlencoded row; every failure wraps ErrBadPayload.
func decode(ev *pgq.Event) ([]urlenc.Field, error) {
	if !ev.Extra2.Valid {
		return nil, fmt.Errorf("%w: event %d: no payload (ev_extra2 is NULL)", ErrBadPayload, ev.ID)
	}
	fields, err := urlenc.ParseOrdered(ev.Extra2.String)
	if err != nil {
		return nil, fmt.Errorf("%w: event %d: %w", ErrBadPayload, ev.ID, err)
	}
	return fields, nil
}

// Row actions.
const (
	rowIns = "ins"
	rowUpd = "upd"
	rowDel = "del"
)

// Apply writes ev's row into the table.
func (a *RowApplier) Apply(ctx context.Context, tx pgx.Tx, ev *pgq.Event) error {
	r, err := a.prepare(ctx, tx, ev)
	if err != nil {
		return err
	}
	sql, args, keyDesc := a.statement(r.action, a.table, r.t, r.fields)
	tag, err := tx.Exec(ctx, sql, args...)
	if err != nil {
		a.forgetOn(err)
		return fmt.Errorf("apply: event %d (%s) to %s: %w", ev.ID, r.action, a.table, err)
	}
	if r.action == rowUpd && tag.RowsAffected() == 0 {
		return fmt.Errorf("apply: event %d (upd) to %s: no row with key %s", ev.ID, a.table, keyDesc)
	}
	return nil
}

// forgetOn drops the cached columns after a database error: the table may
// have changed under them (undefined_column, undefined_table,
// datatype_mismatch, a cached plan gone stale...). A failed event is rare
// enough for re-reading the catalog to cost nothing.
func (a *RowApplier) forgetOn(err error) {
	if _, ok := errors.AsType[*pgconn.PgError](err); ok {
		a.forget()
	}
}

// rowOp is one event decoded and checked against the table.
type rowOp struct {
	ev     *pgq.Event
	action string
	fields []urlenc.Field // columns of the table only
	t      *rowTable
}

// prepare decodes ev and checks it against the table's catalog.
func (a *RowApplier) prepare(ctx context.Context, tx pgx.Tx, ev *pgq.Event) (rowOp, error) {
	op, londiste, err := a.parse(ev)
	if err != nil {
		return rowOp{}, err
	}
	t, err := a.columns(ctx, tx, false)
	if err != nil {
		return rowOp{}, fmt.Errorf("apply: event %d to %s: %w", ev.ID, a.table, err)
	}
	if cerr := a.check(t, &op, londiste); cerr != nil {
		// A column added since we read the catalog is not an error: read
		// it again before blaming the payload.
		if t, err = a.columns(ctx, tx, true); err != nil {
			return rowOp{}, fmt.Errorf("apply: event %d to %s: %w", ev.ID, a.table, err)
		}
		if cerr = a.check(t, &op, londiste); cerr != nil {
			return rowOp{}, cerr
		}
	}
	return op, nil
}

// parse decodes ev into its action and fields (not yet checked against
// the table). It uses no connection.
func (a *RowApplier) parse(ev *pgq.Event) (op rowOp, londiste bool, err error) {
	if a.table == "" {
		return rowOp{}, false, fmt.Errorf("event %d: %w", ev.ID, errNotBuilt)
	}
	if err := applierCheckSize(ev, a.maxPayload); err != nil {
		return rowOp{}, false, err
	}
	fields, err := decode(ev)
	if err != nil {
		return rowOp{}, false, err
	}
	action := ""
	if ev.Type.Valid && len(ev.Type.String) >= 2 && ev.Type.String[1] == ':' {
		switch ev.Type.String[0] {
		case 'I':
			action, londiste = rowIns, true
		case 'U':
			action, londiste = rowUpd, true
		case 'D':
			action, londiste = rowDel, true
		}
	}
	if !londiste {
		i := slices.IndexFunc(fields, func(f urlenc.Field) bool { return f.Key == "action" })
		if i < 0 {
			return rowOp{}, false, fmt.Errorf("%w: event %d: no action (neither an I:/U:/D: event type nor an action field; type %q)",
				ErrBadPayload, ev.ID, ev.Type.String)
		}
		action = fields[i].Value.String
		if !fields[i].Value.Valid || (action != rowIns && action != rowUpd && action != rowDel) {
			return rowOp{}, false, fmt.Errorf("%w: event %d: unknown action %q (want ins, upd or del)", ErrBadPayload, ev.ID, action)
		}
		fields = slices.Delete(fields, i, i+1)
	}
	return rowOp{ev: ev, action: action, fields: fields}, londiste, nil
}

// check checks op's fields against the table t and, when they fit, drops
// a londiste row's fields the table has no column for, sorts the fields
// by column and sets op.t. On an error op is unchanged. It uses no
// connection.
func (a *RowApplier) check(t *rowTable, op *rowOp, londiste bool) error {
	if err := a.checkColumns(t, op.fields, londiste, op.ev.ID, a.table); err != nil {
		return err
	}
	fields := op.fields
	if londiste {
		// "action" in a londiste row the table has no column for.
		fields = slices.DeleteFunc(fields, func(f urlenc.Field) bool { _, ok := t.cols[f.Key]; return !ok })
	}
	slices.SortFunc(fields, func(x, y urlenc.Field) int { return strings.Compare(x.Key, y.Key) })
	op.fields, op.t = fields, t
	return nil
}

// checkColumns checks fields against the table: known columns, every key
// present and not NULL.
func (a *RowApplier) checkColumns(t *rowTable, fields []urlenc.Field, londiste bool, id int64, table string) error {
	for _, f := range fields {
		if _, ok := t.cols[f.Key]; !ok && !(londiste && f.Key == "action") {
			return fmt.Errorf("%w: event %d: unknown column %q (not a writable column of %s)", ErrBadPayload, id, f.Key, table)
		}
	}
	for _, k := range a.keys {
		i := slices.IndexFunc(fields, func(f urlenc.Field) bool { return f.Key == k })
		if i < 0 {
			return fmt.Errorf("%w: event %d: key column %q missing", ErrBadPayload, id, k)
		}
		if !fields[i].Value.Valid {
			return fmt.Errorf("%w: event %d: key column %q is NULL", ErrBadPayload, id, k)
		}
	}
	return nil
}

// statement builds the SQL for action. Columns are in sorted order so
// equal column sets share one prepared statement.
func (a *RowApplier) statement(action, table string, t *rowTable, fields []urlenc.Field) (sql string, args []any, keyDesc string) {
	slices.SortFunc(fields, func(x, y urlenc.Field) int { return strings.Compare(x.Key, y.Key) })
	isKey := func(c string) bool { return slices.Contains(a.keys, c) }
	param := func(f urlenc.Field) string {
		if f.Value.Valid {
			args = append(args, f.Value.String)
		} else {
			args = append(args, nil)
		}
		return fmt.Sprintf("$%d::text::%s", len(args), t.cols[f.Key])
	}
	ident := func(c string) string { return pgx.Identifier{c}.Sanitize() }

	var b strings.Builder
	var keys, kd []string
	for _, k := range a.keys {
		keys = append(keys, ident(k))
	}
	where := func() {
		b.WriteString(" where ")
		n := 0
		for _, f := range fields {
			if !isKey(f.Key) {
				continue
			}
			if n > 0 {
				b.WriteString(" and ")
			}
			n++
			b.WriteString(ident(f.Key) + " = " + param(f))
			kd = append(kd, fmt.Sprintf("%s=%q", f.Key, f.Value.String))
		}
	}

	switch action {
	case rowIns:
		var cols, vals, set []string
		for _, f := range fields {
			cols = append(cols, ident(f.Key))
			vals = append(vals, param(f))
			if !isKey(f.Key) {
				set = append(set, ident(f.Key)+" = excluded."+ident(f.Key))
			}
		}
		b.WriteString("insert into " + table + " (" + strings.Join(cols, ", ") + ") values (" +
			strings.Join(vals, ", ") + ") on conflict (" + strings.Join(keys, ", ") + ") do ")
		if len(set) == 0 {
			b.WriteString("nothing")
		} else {
			b.WriteString("update set " + strings.Join(set, ", "))
		}
		for _, f := range fields {
			if isKey(f.Key) {
				kd = append(kd, fmt.Sprintf("%s=%q", f.Key, f.Value.String))
			}
		}
	case rowUpd:
		var set []string
		for _, f := range fields {
			if !isKey(f.Key) {
				set = append(set, ident(f.Key)+" = "+param(f))
			}
		}
		if len(set) == 0 {
			// Only keys: touch the row (and so still check it exists).
			for _, k := range keys {
				set = append(set, k+" = "+k)
			}
		}
		b.WriteString("update " + table + " set " + strings.Join(set, ", "))
		where()
	case rowDel:
		b.WriteString("delete from " + table)
		where()
	}
	keyDesc = strings.Join(kd, ", ")
	if len(keyDesc) > 500 {
		keyDesc = keyDesc[:500] + "…"
	}
	return b.String(), args, keyDesc
}

// sqlRowColumns lists a table's writable columns and the types to cast
// text to: the type without its modifier, so that a length is checked by
// the assignment (an error) rather than by the explicit cast (which would
// silently truncate varchar(n), char(n), bit(n)). The modifier is -1, not
// NULL: format_type(t, NULL) names char and bit as "character" and "bit",
// which in a cast mean char(1) and bit(1); with -1 it gives "bpchar" and
// "bit" quoted, the unconstrained types.
const sqlRowColumns = `select a.attname, format_type(a.atttypid, -1)
	from pg_catalog.pg_attribute a
	where a.attrelid = to_regclass($1) and a.attnum > 0 and not a.attisdropped and a.attgenerated = ''`

// columns returns the table's columns, from the cache unless reload.
func (a *RowApplier) columns(ctx context.Context, tx pgx.Tx, reload bool) (*rowTable, error) {
	a.mu.Lock()
	t := a.cached
	a.mu.Unlock()
	if t != nil && !reload {
		return t, nil
	}
	rows, err := tx.Query(ctx, sqlRowColumns, a.table)
	if err != nil {
		return nil, fmt.Errorf("read columns: %w", err)
	}
	cols := map[string]string{}
	var name, typ string
	_, err = pgx.ForEachRow(rows, []any{&name, &typ}, func() error {
		cols[name] = typ
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read columns: %w", err)
	}
	if len(cols) == 0 {
		a.forget()
		return nil, fmt.Errorf("table %s does not exist (or has no columns)", a.table)
	}
	for _, k := range a.keys {
		if _, ok := cols[k]; !ok {
			a.forget()
			return nil, fmt.Errorf("key column %q is not a writable column of %s", k, a.table)
		}
	}
	t = &rowTable{cols: cols}
	if err := tx.QueryRow(ctx, sqlCopyOK, a.table).Scan(&t.copyOK); err != nil {
		return nil, fmt.Errorf("read table kind: %w", err)
	}
	a.mu.Lock()
	a.cached = t
	a.mu.Unlock()
	return t, nil
}

// forget drops the cached columns: the next event reads the catalog.
func (a *RowApplier) forget() {
	a.mu.Lock()
	a.cached = nil
	a.mu.Unlock()
}
