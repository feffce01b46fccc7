package copier

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/internal/migrate"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/route"
	"github.com/pgq-go/pgq/urlenc"
)

// Capture: targeted replication without application changes. A user
// declares once, per table, which rows go to which nodes (a column of the
// row or a function of it); AddCapture generates a PL/pgSQL trigger that
// turns every INSERT, UPDATE and DELETE into the targeted events a
// producer would send with route.Sender, in the writing transaction:
//
//	INSERT  I:<keys> to each target of the new row
//	DELETE  D:<keys> to each target of the old row
//	UPDATE  D:<keys> to the targets the row left, I:<keys> (the whole new
//	        row) to the targets it joined and those it stayed on; a
//	        changed key is D: of the old key to the old targets and I: of
//	        the new row to the new targets
//
// Each event is ev_type "I:k1,k2" or "D:k1,k2" (londiste's, read by
// apply.RowApplier), ev_data "", ev_extra1 the target node, ev_extra2 the
// row urlencoded (urlenc.Parse reads it; a D: carries the whole old row,
// as pgq.logutriga does), ev_extra3 the origin node and ev_extra4 the
// table, schema-qualified and quoted where needed, so that one pull can
// tell several captured tables apart.
//
// Updates send I:, an upsert, to the targets the row stays on, not U:: a
// target that missed the row (it joined the capture later, an operator
// removed it, its insert was parked) converges on the next update
// instead of failing it for ever. An UPDATE that changes no captured
// column and no target sends nothing, so updates of excluded columns
// cost no events.

// CaptureSetting is the setting that turns capture off for a session or
// a transaction: with pgq_go.capture = 'off' the capture triggers send
// nothing and TRUNCATE is allowed. A copier's pull sets it in the node
// transaction that applies rows, and ReplayParked in its own, so a node
// that both captures a table and receives rows into it does not send the
// rows it applies on again; set it yourself on other connections that
// must write without capture. Writes made under session_replication_role
// = replica are not captured either (the triggers are ordinary ENABLE
// triggers).
const CaptureSetting = "pgq_go.capture"

// ErrCaptureNotFound is returned by RemoveCapture for a table that is not
// captured.
var ErrCaptureNotFound = errors.New("copier: table is not captured")

// captureMigrations install the capture's shared objects (the capture
// table and helper functions). AddCapture applies them, not Install:
// only a node that captures a table needs them, and only a role that may
// create triggers on it can use them.
var captureMigrations = []migrate.Migration{
	{Name: "copier/2", File: "schema/copier_2.sql"},
}

// Names of the triggers AddCapture creates on a captured table.
const (
	captureTrigger         = "pgq_go_capture"
	captureTruncateTrigger = "pgq_go_capture_truncate"
)

// CaptureConfig declares the capture of one table. Names are quoted as
// given, not case-folded, like apply.NewRowApplier's.
type CaptureConfig struct {
	// Table is the captured table, "schema.table" (split at the first
	// '.') or a bare name found through the search_path. An ordinary
	// table; partitioned tables are not supported (capture each
	// partition). Required.
	Table string
	// Queue is the node's push queue (Config.PushQueue; pgq.insert_event
	// writes into it). It must exist. Required.
	Queue string
	// Origin is this node's id, stored in ev_extra3 (route.Sender.Origin).
	// Required.
	Origin string
	// TargetColumn names the column holding a row's targets: text (one
	// target; NULL or empty: none) or text[] (NULL and empty elements
	// ignored, duplicates sent once). Exactly one of TargetColumn and
	// TargetFunction is required.
	TargetColumn string
	// TargetFunction names a SQL function ("schema.fn", split at the first
	// '.', or a bare name found through the search_path) taking the
	// table's row type and returning text or text[], read as for
	// TargetColumn. It runs in the writing transaction, as its user, for
	// every captured write (twice for an UPDATE: old and new row).
	TargetFunction string
	// KeyColumns identify a row on the targets (the RowApplier's keys):
	// NOT NULL columns. Default: the table's primary key; a table without
	// one needs them.
	KeyColumns []string
	// ExcludeColumns are left out of the rows sent (the target column may
	// be one of them; key columns may not). Generated columns are always
	// left out: appliers do not write them.
	ExcludeColumns []string
}

func (c CaptureConfig) validate() error {
	if c.Table == "" {
		return errors.New("copier: capture: Table is required")
	}
	if _, err := splitName("table", c.Table); err != nil {
		return fmt.Errorf("copier: capture: %w", err)
	}
	if err := pgq.ValidateName("queue", c.Queue); err != nil {
		return fmt.Errorf("copier: capture %s: Queue: %w", c.Table, err)
	}
	if err := route.ValidateNode(c.Origin); err != nil {
		return fmt.Errorf("copier: capture %s: Origin: %w", c.Table, err)
	}
	switch {
	case c.TargetColumn == "" && c.TargetFunction == "":
		return fmt.Errorf("copier: capture %s: give TargetColumn or TargetFunction", c.Table)
	case c.TargetColumn != "" && c.TargetFunction != "":
		return fmt.Errorf("copier: capture %s: give TargetColumn or TargetFunction, not both", c.Table)
	case c.TargetFunction != "":
		if _, err := splitName("target function", c.TargetFunction); err != nil {
			return fmt.Errorf("copier: capture %s: %w", c.Table, err)
		}
	}
	for _, l := range []struct {
		field string
		names []string
	}{{"KeyColumns", c.KeyColumns}, {"ExcludeColumns", c.ExcludeColumns}, {"TargetColumn", []string{c.TargetColumn}}} {
		for i, n := range l.names {
			if strings.IndexByte(n, 0) >= 0 || !utf8.ValidString(n) || (n == "" && l.field != "TargetColumn") {
				return fmt.Errorf("copier: capture %s: %s: invalid column name %q", c.Table, l.field, n)
			}
			if slices.Contains(l.names[:i], n) {
				return fmt.Errorf("copier: capture %s: %s: column %q listed twice", c.Table, l.field, n)
			}
		}
	}
	for _, k := range c.KeyColumns {
		if slices.Contains(c.ExcludeColumns, k) {
			return fmt.Errorf("copier: capture %s: key column %q cannot be excluded", c.Table, k)
		}
	}
	return nil
}

// splitName splits a possibly schema-qualified name at its first '.'.
func splitName(what, name string) ([]string, error) {
	parts := strings.SplitN(name, ".", 2)
	for _, p := range parts {
		if p == "" || strings.IndexByte(p, 0) >= 0 || !utf8.ValidString(p) {
			return nil, fmt.Errorf("invalid %s name %q", what, name)
		}
	}
	return parts, nil
}

// Capture is one captured table as ListCaptures reports it.
type Capture struct {
	Schema string // the table's schema
	Table  string // the table's name
	Queue  string
	Origin string
	// TargetColumn or TargetFunction (a regprocedure: "fn(tbl)") says where
	// the targets come from.
	TargetColumn   string
	TargetFunction string
	KeyColumns     []string
	ExcludeColumns []string
	// Columns are the columns sent, in the rows' order.
	Columns []string
	// PayloadFunc and TargetsFunc are the generated functions, quoted and
	// schema-qualified for SQL text: PayloadFunc(row) returns the row
	// urlencoded as the trigger sends it (text), TargetsFunc(row) its
	// targets (text[], cleaned and checked). A backfill sends a table's
	// rows with them, for example
	//
	//	select <TargetsFunc>(t), <PayloadFunc>(t) from <table> t
	//
	// in a session with DateStyle ISO, IntervalStyle postgres and
	// extra_float_digits > 0 (the trigger's canonical settings).
	PayloadFunc string
	TargetsFunc string
	// EventTable is ev_extra4 of the events: the table, quoted where needed.
	EventTable string
	// Updated is when AddCapture last ran for the table.
	Updated time.Time
	// Problem is empty when the capture is in place and matches the table;
	// else it says what is wrong (the table was dropped, a column was
	// added since AddCapture, the trigger is missing) and what to do.
	Problem string
}

// AddCapture captures cfg.Table: it creates (or, run again, regenerates
// from the table as it is now) the table's payload and targets functions
// and its capture trigger, records cfg in pgq_go.capture, and installs
// the capture's shared objects on first use (migration copier/2). All in
// one transaction (a savepoint when db is a transaction), so it is safe
// to run while the table is written. Run it again after ALTER TABLE: the
// functions list the table's columns statically, so a column added since
// is not sent until then (ListCaptures reports it); a captured column
// cannot be dropped or change type while captured (PostgreSQL refuses,
// naming the generated function): RemoveCapture, ALTER and AddCapture in
// one transaction.
//
// Rows are encoded as every node reads them back whatever the writing
// session's DateStyle, IntervalStyle and extra_float_digits (a session
// with other settings pays a slower path); lc_monetary is not pinned, so
// money columns need the same lc_monetary on every node.
//
// Under REPEATABLE READ and SERIALIZABLE the trigger locks the queue's
// row (FOR SHARE) before its first event: a write whose snapshot predates
// a rotation of the queue's event tables then fails with a serialization
// failure (SQLSTATE 40001; retry the transaction, as for any) instead of
// losing its events, and rotation waits for such transactions.
//
// The role needs to own the table (CREATE TRIGGER), create functions in
// schema pgq_go, and, the first time, run the migration. Roles that write
// the table need what pgq.logutriga's writers need: membership of
// pgq_writer (pgq.insert_event), to which the migration grants USAGE on
// schema pgq_go. Needs PostgreSQL 14 or later.
func AddCapture(ctx context.Context, db pgq.DB, cfg CaptureConfig) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	tx, err := migrate.Begin(ctx, db)
	if err != nil {
		return fmt.Errorf("copier: capture %s: %w", cfg.Table, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := installCapture(ctx, tx); err != nil {
		return fmt.Errorf("copier: capture %s: install schema: %w", cfg.Table, err)
	}
	t, err := lockCaptureTable(ctx, tx, cfg.Table)
	if err != nil {
		return err
	}
	if err := pgq.CheckExtension(ctx, tx); err != nil {
		return fmt.Errorf("copier: capture %s: %w", t.quoted, err)
	}
	var queueOK bool
	if err := tx.QueryRow(ctx, sqlQueueExists, cfg.Queue).Scan(&queueOK); err != nil {
		return fmt.Errorf("copier: capture %s: queue %s: %w", t.quoted, cfg.Queue, err)
	}
	if !queueOK {
		return fmt.Errorf("copier: capture %s: queue %s: %w (create the node's push queue first: copier Setup, or pgqctl queue create)",
			t.quoted, cfg.Queue, pgq.ErrQueueNotFound)
	}
	p, err := planCapture(ctx, tx, t, cfg)
	if err != nil {
		return err
	}
	var old []uint32
	if err := tx.QueryRow(ctx, `select coalesce((select array[payload_function::oid, targets_function::oid, trigger_function::oid]
		from pgq_go.capture where table_oid = $1), '{}')`, t.oid).Scan(&old); err != nil {
		return fmt.Errorf("copier: capture %s: %w", t.quoted, err)
	}
	for _, stmt := range p.ddl() {
		if _, err := tx.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("copier: capture %s: %w", t.quoted, err)
		}
	}
	var fns []uint32
	if err := tx.QueryRow(ctx, `select array[pg_catalog.to_regprocedure($1)::oid, pg_catalog.to_regprocedure($2)::oid, pg_catalog.to_regprocedure($3)::oid]`,
		p.payloadFn+"("+t.quoted+")", p.targetsFn+"("+t.quoted+")", p.triggerFn+"()").Scan(&fns); err != nil {
		return fmt.Errorf("copier: capture %s: %w", t.quoted, err)
	}
	var targetCol, targetFn any
	if cfg.TargetColumn != "" {
		targetCol = cfg.TargetColumn
	} else {
		targetFn = p.targetFnOID
	}
	if _, err := tx.Exec(ctx, sqlSaveCapture, t.oid, t.schema, t.name, cfg.Queue, cfg.Origin, targetCol, targetFn,
		p.keys, p.exclude, p.columnNames(), fns[0], fns[1], fns[2]); err != nil {
		return fmt.Errorf("copier: capture %s: save: %w", t.quoted, err)
	}
	// A renamed table gets functions of a new name: drop the old ones.
	if err := dropFunctions(ctx, tx, slices.DeleteFunc(old, func(o uint32) bool { return slices.Contains(fns, o) })); err != nil {
		return fmt.Errorf("copier: capture %s: %w", t.quoted, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("copier: capture %s: %w", t.quoted, err)
	}
	return nil
}

const sqlQueueExists = `select exists (select 1 from pgq.queue where queue_name = $1)`

const sqlSaveCapture = `insert into pgq_go.capture (table_oid, table_schema, table_name, queue_name, origin,
	target_column, target_function, key_columns, exclude_columns, columns,
	payload_function, targets_function, trigger_function, updated_at)
values ($1, $2, $3, $4, $5, $6, $7::oid::regprocedure, $8, $9, $10,
	$11::oid::regprocedure, $12::oid::regprocedure, $13::oid::regprocedure, now())
on conflict (table_oid) do update set table_schema = excluded.table_schema, table_name = excluded.table_name,
	queue_name = excluded.queue_name, origin = excluded.origin, target_column = excluded.target_column,
	target_function = excluded.target_function, key_columns = excluded.key_columns,
	exclude_columns = excluded.exclude_columns, columns = excluded.columns,
	payload_function = excluded.payload_function, targets_function = excluded.targets_function,
	trigger_function = excluded.trigger_function, updated_at = excluded.updated_at`

// installCapture applies the capture migrations unless recorded.
func installCapture(ctx context.Context, tx pgx.Tx) error {
	if ok, err := migrate.Recorded(ctx, tx, captureMigrations); err != nil || ok {
		return err
	}
	return migrate.Apply(ctx, tx, schemaFS, captureMigrations)
}

// dropFunctions drops the functions of oids that still exist.
func dropFunctions(ctx context.Context, tx pgx.Tx, oids []uint32) error {
	if len(oids) == 0 {
		return nil
	}
	rows, err := tx.Query(ctx, `select pg_catalog.format('drop function %s', p.oid::regprocedure)
		from pg_catalog.pg_proc p where p.oid = any ($1::oid[])`, oids)
	if err != nil {
		return err
	}
	stmts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, s := range stmts {
		if _, err := tx.Exec(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

// captureTable is a table being captured, as the catalog describes it.
type captureTable struct {
	oid          uint32
	schema, name string
	quoted       string // schema.name, quoted where needed (format %I.%I)
	cols         []captureColumn
}

// captureColumn is one live column of a captured table.
type captureColumn struct {
	name      string
	notNull   bool
	generated bool
	typOID    uint32
	category  string // pg_type.typcategory
	elemOID   uint32 // arrays: the element type
	elemCat   string
	typ       string // format_type, for messages
}

const sqlCaptureTable = `select c.oid, n.nspname, c.relname, pg_catalog.format('%I.%I', n.nspname, c.relname), c.relkind::text
	from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
	where c.oid = pg_catalog.to_regclass($1)`

const sqlCaptureColumns = `select a.attname, a.attnotnull, a.attgenerated <> '', a.atttypid, t.typcategory::text,
		coalesce(e.oid, 0), coalesce(e.typcategory::text, ''), pg_catalog.format_type(a.atttypid, a.atttypmod)
	from pg_catalog.pg_attribute a
	join pg_catalog.pg_type t on t.oid = a.atttypid
	left join pg_catalog.pg_type e on e.oid = t.typelem and t.typcategory = 'A'
	where a.attrelid = $1 and a.attnum > 0 and not a.attisdropped
	order by a.attnum`

// lockCaptureTable resolves name, locks the table against concurrent DDL
// and writes' interleaving with the trigger's replacement (SHARE ROW
// EXCLUSIVE, what CREATE TRIGGER takes) and reads its columns.
func lockCaptureTable(ctx context.Context, tx pgx.Tx, name string) (*captureTable, error) {
	parts, err := splitName("table", name)
	if err != nil {
		return nil, fmt.Errorf("copier: capture: %w", err)
	}
	given := pgx.Identifier(parts).Sanitize()
	t := &captureTable{}
	var kind string
	err = tx.QueryRow(ctx, sqlCaptureTable, given).Scan(&t.oid, &t.schema, &t.name, &t.quoted, &kind)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("copier: capture %s: table not found", given)
	}
	if err != nil {
		return nil, fmt.Errorf("copier: capture %s: %w", given, err)
	}
	switch kind {
	case "r":
	case "p":
		return nil, fmt.Errorf("copier: capture %s: a partitioned table cannot be captured; capture each partition", t.quoted)
	default:
		return nil, fmt.Errorf("copier: capture %s: not an ordinary table (relkind %q)", t.quoted, kind)
	}
	if _, err := tx.Exec(ctx, "lock table "+t.quoted+" in share row exclusive mode"); err != nil {
		return nil, fmt.Errorf("copier: capture %s: %w", t.quoted, err)
	}
	rows, err := tx.Query(ctx, sqlCaptureColumns, t.oid)
	if err != nil {
		return nil, fmt.Errorf("copier: capture %s: read columns: %w", t.quoted, err)
	}
	var c captureColumn
	_, err = pgx.ForEachRow(rows, []any{&c.name, &c.notNull, &c.generated, &c.typOID, &c.category, &c.elemOID, &c.elemCat, &c.typ}, func() error {
		t.cols = append(t.cols, c)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("copier: capture %s: read columns: %w", t.quoted, err)
	}
	return t, nil
}

func (t *captureTable) column(name string) (captureColumn, bool) {
	i := slices.IndexFunc(t.cols, func(c captureColumn) bool { return c.name == name })
	if i < 0 {
		return captureColumn{}, false
	}
	return t.cols[i], true
}

// capturePlan is what AddCapture generates for one table.
type capturePlan struct {
	t       *captureTable
	cfg     CaptureConfig
	keys    []string
	exclude []string
	columns []captureColumn // sent, in attnum order
	// targetsExpr is the targets function's body expression over r.
	targetsExpr string
	// targetVolatility is the targets function's volatility and
	// parallel safety clause.
	targetVolatility string
	targetFnOID      uint32 // TargetFunction, resolved
	// sensitive: the session settings some column's text depends on.
	sensitive settingSet
	// Quoted, schema-qualified names of the generated functions.
	payloadFn, targetsFn, triggerFn string
}

func (p *capturePlan) columnNames() []string {
	out := make([]string, len(p.columns))
	for i, c := range p.columns {
		out[i] = c.name
	}
	return out
}

const sqlPrimaryKey = `select a.attname from pg_catalog.pg_index i
	cross join lateral unnest(i.indkey::int2[]) with ordinality as k(attnum, ord)
	join pg_catalog.pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
	where i.indrelid = $1 and i.indisprimary
	order by k.ord`

const sqlTargetFunction = `select p.oid, p.prokind::text, p.proretset, t.typcategory::text, coalesce(e.typcategory::text, ''),
		pg_catalog.format('%I.%I', n.nspname, p.proname), p.provolatile::text, p.proparallel::text,
		pg_catalog.format_type(p.prorettype, null)
	from pg_catalog.pg_proc p
	join pg_catalog.pg_namespace n on n.oid = p.pronamespace
	join pg_catalog.pg_type t on t.oid = p.prorettype
	left join pg_catalog.pg_type e on e.oid = t.typelem and t.typcategory = 'A'
	where p.oid = pg_catalog.to_regprocedure($1)`

// planCapture checks cfg against the table and decides what to generate.
func planCapture(ctx context.Context, tx pgx.Tx, t *captureTable, cfg CaptureConfig) (*capturePlan, error) {
	p := &capturePlan{t: t, cfg: cfg, exclude: slices.Clone(cfg.ExcludeColumns)}
	if p.exclude == nil {
		p.exclude = []string{}
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("copier: capture %s: %s", t.quoted, fmt.Sprintf(format, args...))
	}
	for _, x := range cfg.ExcludeColumns {
		if _, ok := t.column(x); !ok {
			return nil, fail("excluded column %q does not exist", x)
		}
	}
	p.keys = slices.Clone(cfg.KeyColumns)
	if len(p.keys) == 0 {
		rows, err := tx.Query(ctx, sqlPrimaryKey, t.oid)
		if err != nil {
			return nil, fail("read primary key: %v", err)
		}
		if p.keys, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return nil, fail("read primary key: %v", err)
		}
		if len(p.keys) == 0 {
			return nil, fail("the table has no primary key: give its key columns (KeyColumns, --keys)")
		}
	}
	for _, k := range p.keys {
		c, ok := t.column(k)
		switch {
		case !ok:
			return nil, fail("key column %q does not exist", k)
		case c.generated:
			return nil, fail("key column %q is a generated column (appliers do not write those)", k)
		case !c.notNull:
			return nil, fail("key column %q may be NULL: key columns must be NOT NULL (a row with a NULL key cannot be applied)", k)
		case slices.Contains(p.exclude, k):
			return nil, fail("key column %q cannot be excluded", k)
		}
	}
	for _, c := range t.cols {
		if c.generated || slices.Contains(p.exclude, c.name) {
			continue
		}
		if strings.ContainsFunc(c.name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return nil, fail("column name %q holds a control character; exclude it", c.name)
		}
		p.columns = append(p.columns, c)
		p.sensitive |= c.sensitive()
	}
	tableLit := quoteLiteral(t.quoted)
	if cfg.TargetColumn != "" {
		c, ok := t.column(cfg.TargetColumn)
		if !ok {
			return nil, fail("target column %q does not exist", cfg.TargetColumn)
		}
		v := "(r." + ident(c.name) + ")::text"
		switch {
		case c.category == "S":
			p.targetsExpr = fmt.Sprintf(`case when %[1]s is null or %[1]s = '' then '{}'::text[]
		when %[1]s ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$' then array[%[1]s]
		else pgq_go.capture_targets(%[2]s, array[%[1]s]) end`, v, tableLit)
		case c.category == "A" && c.elemCat == "S":
			// One valid target, the common case, without the call.
			p.targetsExpr = fmt.Sprintf(`case when %[1]s is null then '{}'::text[]
		when pg_catalog.cardinality(%[1]s) = 1 and (%[1]s)[1] ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$' then %[1]s
		else pgq_go.capture_targets(%[2]s, %[1]s) end`, "(r."+ident(c.name)+")::text[]", tableLit)
		default:
			return nil, fail("target column %q is %s: want text or text[]", c.name, c.typ)
		}
		p.targetVolatility = "stable parallel safe"
	} else {
		parts, _ := splitName("target function", cfg.TargetFunction)
		sig := pgx.Identifier(parts).Sanitize() + "(" + t.quoted + ")"
		var kind, cat, elemCat, name, vol, par, ret string
		var set bool
		err := tx.QueryRow(ctx, sqlTargetFunction, sig).Scan(&p.targetFnOID, &kind, &set, &cat, &elemCat, &name, &vol, &par, &ret)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, fail("target function %s not found (it must take the table's row type)", sig)
		}
		if err != nil {
			return nil, fail("target function %s: %v", sig, err)
		}
		call := name + "(r)"
		switch {
		case kind != "f":
			return nil, fail("target function %s is not a function", sig)
		case set:
			return nil, fail("target function %s returns a set: want text or text[]", sig)
		case cat == "S":
			p.targetsExpr = fmt.Sprintf("pgq_go.capture_targets(%s, array[(%s)::text])", tableLit, call)
		case cat == "A" && elemCat == "S":
			p.targetsExpr = fmt.Sprintf("pgq_go.capture_targets(%s, (%s)::text[])", tableLit, call)
		default:
			return nil, fail("target function %s returns %s: want text or text[]", sig, ret)
		}
		p.targetVolatility = map[string]string{"i": "stable", "s": "stable", "v": "volatile"}[vol]
		if par == "s" {
			p.targetVolatility += " parallel safe"
		}
	}
	base := captureBaseName(t.schema, t.name)
	p.payloadFn = "pgq_go." + ident(base+"_payload")
	p.targetsFn = "pgq_go." + ident(base+"_targets")
	p.triggerFn = "pgq_go." + ident(base+"_trigger")
	return p, nil
}

// captureBaseName derives the generated functions' names from the table:
// readable (the table's name, cut to 40 bytes) and unique (a hash of
// schema and name), within PostgreSQL's 63-byte limit with a suffix.
func captureBaseName(schema, table string) string {
	sum := sha256.Sum256([]byte(schema + "\x00" + table))
	prefix := table
	for len(prefix) > 40 {
		_, size := utf8.DecodeLastRuneInString(prefix)
		prefix = prefix[:len(prefix)-size]
	}
	return prefix + "_" + hex.EncodeToString(sum[:4])
}

// Types whose text never needs escaping: digits, letters, '-', '.'.
var captureNoQuote = map[uint32]bool{
	16:   true, // bool
	20:   true, // int8
	21:   true, // int2
	23:   true, // int4
	26:   true, // oid
	1700: true, // numeric
	2950: true, // uuid
}

// settingSet is a set of the output settings the trigger pins.
type settingSet uint8

const (
	dateStyle        settingSet = 1 << iota // DateStyle
	intervalStyle                           // IntervalStyle
	extraFloatDigits                        // extra_float_digits
	allSettings      = dateStyle | intervalStyle | extraFloatDigits
)

// canonCheck is the condition that the session's settings of set are the
// canonical ones (those of pgq_go.capture_payload_canonical).
func (set settingSet) canonCheck() string {
	var conds []string
	if set&dateStyle != 0 {
		conds = append(conds, "pg_catalog.current_setting('DateStyle') like 'ISO%'")
	}
	if set&intervalStyle != 0 {
		conds = append(conds, "pg_catalog.current_setting('IntervalStyle') = 'postgres'")
	}
	if set&extraFloatDigits != 0 {
		conds = append(conds, "pg_catalog.current_setting('extra_float_digits')::int > 0")
	}
	return strings.Join(conds, "\n        and ")
}

// sensitive returns the session settings the column's text can depend
// on: DateStyle (date/time types), IntervalStyle (interval),
// extra_float_digits (float4, float8, geometric types), and all of them
// for composites, ranges and unknown kinds. lc_monetary (money) is not
// pinned: nodes must share it.
func (c captureColumn) sensitive() settingSet {
	cat, oid := c.category, c.typOID
	if cat == "A" {
		cat, oid = c.elemCat, c.elemOID
	}
	switch cat {
	case "D":
		return dateStyle
	case "T":
		return intervalStyle
	case "G":
		return extraFloatDigits
	case "C", "R", "X", "P", "Z", "A", "":
		return allSettings
	}
	if oid == 700 || oid == 701 {
		return extraFloatDigits
	}
	return 0
}

// ident quotes one identifier.
func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

// quoteLiteral quotes s as an SQL string literal that reads the same
// whatever standard_conforming_strings is (E'...' when s has a
// backslash). s holds no NUL (it comes from the catalog or is validated).
func quoteLiteral(s string) string {
	q := "'" + strings.ReplaceAll(s, "'", "''") + "'"
	if strings.Contains(s, `\`) {
		q = "E" + strings.ReplaceAll(q, `\`, `\\`)
	}
	return q
}

// maxConcatArgs bounds the arguments of one concat_ws call (PostgreSQL
// allows 100 per function call).
const maxConcatArgs = 90

// controlsRE matches the control characters capture_quote keeps; rare,
// so a row is tested once and escaped by pgq_go.capture_controls only
// when it holds one.
const controlsRE = `[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]`

// rowExpr is the row rec (a record name: r in the payload function, new
// or old in the trigger) urlencoded with static keys, values escaped by
// capture_quote (types in captureNoQuote need none), NULL as the bare
// key; the control characters of controlsRE are left to
// pgq_go.capture_controls.
func (p *capturePlan) rowExpr(rec string) string {
	parts := make([]string, len(p.columns))
	for i, c := range p.columns {
		key, _ := urlenc.Fields{c.name: nil}.Encode() // the escaped key
		v := "(" + rec + "." + ident(c.name) + ")::text"
		if !captureNoQuote[c.typOID] {
			v = "pgq_go.capture_quote(" + v + ")"
		}
		if c.notNull {
			parts[i] = quoteLiteral(key+"=") + " || " + v
		} else {
			parts[i] = quoteLiteral(key) + " || coalesce('=' || " + v + ", '')"
		}
	}
	return concatWS(parts)
}

// concatWS joins SQL text expressions with '&', nesting concat_ws calls
// to stay under the argument limit.
func concatWS(parts []string) string {
	for len(parts) > maxConcatArgs {
		var groups []string
		for chunk := range slices.Chunk(parts, maxConcatArgs) {
			groups = append(groups, "pg_catalog.concat_ws('&', "+strings.Join(chunk, ",\n\t\t")+")")
		}
		parts = groups
	}
	return "pg_catalog.concat_ws('&', " + strings.Join(parts, ",\n\t\t") + ")"
}

// rowOf is ROW(<prefix>."c1", ...)::record over columns: a record, so
// that *= compares the two rows' images (between two ROW constructors it
// would compare column by column, with a *= per column type, which
// scalar types do not have).
func rowOf(prefix string, cols []string) string {
	q := make([]string, len(cols))
	for i, c := range cols {
		q[i] = prefix + "." + ident(c)
	}
	return "row(" + strings.Join(q, ", ") + ")::record"
}

// ddl returns the statements that (re)create the functions and triggers.
func (p *capturePlan) ddl() []string {
	t := p.t
	printable := strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, t.quoted)
	header := fmt.Sprintf("-- Generated by pgq-go copier.AddCapture for table %s; run AddCapture again after ALTER TABLE.", printable)
	payload := fmt.Sprintf(`create or replace function %s(r %s) returns text
    language sql stable parallel safe
begin atomic
    %s
    select %s;
end`, p.payloadFn, t.quoted, header, "pgq_go.capture_controls("+p.rowExpr("r")+")")
	targets := fmt.Sprintf(`create or replace function %s(r %s) returns text[]
    language sql %s
begin atomic
    %s
    select %s;
end`, p.targetsFn, t.quoted, p.targetVolatility, header, p.targetsExpr)
	return []string{
		payload,
		targets,
		p.triggerFunction(header),
		fmt.Sprintf("drop trigger if exists %s on %s", ident(captureTrigger), t.quoted),
		fmt.Sprintf("drop trigger if exists %s on %s", ident(captureTruncateTrigger), t.quoted),
		fmt.Sprintf("create trigger %s after insert or update or delete on %s for each row execute function %s()",
			ident(captureTrigger), t.quoted, p.triggerFn),
		fmt.Sprintf("create trigger %s before truncate on %s for each statement execute function pgq_go.capture_refuse_truncate()",
			ident(captureTruncateTrigger), t.quoted),
	}
}

// triggerFunction is the capture trigger's PL/pgSQL function: everything
// table-specific is static (names, literals, column lists), so each row
// costs the targets function (inlined SQL), the row's encoding (the
// payload function's expression, inline) and one pgq.insert_event per
// event.
func (p *capturePlan) triggerFunction(header string) string {
	t := p.t
	keys := strings.Join(p.keys, ",")
	insert := func(typ, payload string) string {
		return fmt.Sprintf("perform pgq.insert_event(%s, %s, '', _t, %s, %s, %s);",
			quoteLiteral(p.cfg.Queue), quoteLiteral(typ+":"+keys), payload, quoteLiteral(p.cfg.Origin), quoteLiteral(t.quoted))
	}
	// setPayload assigns rec's encoding to v: the row expression inline
	// (the payload function's body, without a function call), or, in a
	// session with other output settings, the payload function under
	// the canonical ones.
	setPayload := func(v, rec string) string {
		inline := fmt.Sprintf("%[1]s := %[2]s;\n    if %[1]s ~ '%[3]s' then %[1]s := pgq_go.capture_controls(%[1]s); end if;",
			v, p.rowExpr(rec), controlsRE)
		if p.sensitive == 0 {
			return inline
		}
		return fmt.Sprintf("if _canon then\n    %s\n    else %s := pgq_go.capture_payload_canonical(%s, %s); end if;",
			inline, v, quoteLiteral(p.payloadFn), rec)
	}
	canon := ""
	if p.sensitive != 0 {
		canon = "_canon := " + p.sensitive.canonCheck() + ";"
	}
	// Not READ COMMITTED: lock the queue's row, once per transaction (a
	// lock taken in a subtransaction that rolls back goes with the
	// setting that remembers it).
	lock := fmt.Sprintf(`if not _rc
        and pg_catalog.current_setting('pgq_go.capture_locked', true) is distinct from %[1]s then
        perform pgq_go.capture_lock_queue(%[1]s);
        perform pg_catalog.set_config('pgq_go.capture_locked', %[1]s, true);
    end if;`, quoteLiteral(p.cfg.Queue))
	changed := "not (old *= new)"
	if len(p.exclude) > 0 {
		changed = fmt.Sprintf("not (%s *= %s)", rowOf("old", p.columnNames()), rowOf("new", p.columnNames()))
	}
	body := fmt.Sprintf(`
%[1]s
-- INSERT: I: to the new row's targets. DELETE: D: to the old row's.
-- UPDATE: D: to the targets the row left, I: (an upsert of the whole row)
-- to those it joined and, when a captured column changed, to those it
-- stayed on; a changed key: D: of the old row to its targets, I: of the
-- new row to its targets.
declare
    _new_t text[] := '{}';
    _old_t text[] := '{}';
    _new_p text;
    _old_p text;
    _t text;
    _canon boolean;
    _same_key boolean;
    _changed boolean;
    _rc boolean;
begin
    -- One expression for both settings read on every row (each
    -- PL/pgSQL statement costs): capture off ends here; _rc: READ
    -- COMMITTED, else the queue's row is locked below.
    _rc := case when pg_catalog.current_setting('pgq_go.capture', true) = 'off' then null
                else pg_catalog.current_setting('transaction_isolation') = 'read committed' end;
    if _rc is null then
        return null;
    end if;
    -- INSERT, the common case, on its own path: the fewest statements.
    if tg_op = 'INSERT' then
        _new_t := %[2]s(new);
        if pg_catalog.cardinality(_new_t) = 0 then
            return null;
        end if;
        %[12]s
        %[4]s
        %[5]s
        foreach _t in array _new_t loop
            %[7]s
        end loop;
        return null;
    end if;
    _old_t := %[2]s(old);
    if tg_op = 'UPDATE' then
        _new_t := %[2]s(new);
    end if;
    if pg_catalog.cardinality(_new_t) = 0 and pg_catalog.cardinality(_old_t) = 0 then
        return null;
    end if;
    %[12]s
    %[4]s
    if tg_op = 'DELETE' then
        %[6]s
        foreach _t in array _old_t loop
            %[8]s
        end loop;
    else
        _same_key := %[9]s *= %[10]s;
        _changed := %[11]s;
        foreach _t in array _old_t loop
            if not _same_key or not _t = any (_new_t) then
                if _old_p is null then
                %[6]s
                end if;
                %[8]s
            end if;
        end loop;
        foreach _t in array _new_t loop
            if not _same_key or _changed or not _t = any (_old_t) then
                if _new_p is null then
                %[5]s
                end if;
                %[7]s
            end if;
        end loop;
    end if;
    return null;
end
`, header, p.targetsFn, quoteLiteral(p.cfg.Queue), canon, setPayload("_new_p", "new"), setPayload("_old_p", "old"),
		insert("I", "_new_p"), insert("D", "_old_p"), rowOf("old", p.keys), rowOf("new", p.keys), changed, lock)
	tag := "$pgq_go_capture$"
	for i := 0; strings.Contains(body, tag); i++ {
		tag = fmt.Sprintf("$pgq_go_capture%d$", i)
	}
	return fmt.Sprintf("create or replace function %s() returns trigger\n    language plpgsql\nas %s%s%s", p.triggerFn, tag, body, tag)
}

// RemoveCapture removes the capture of table: its triggers, its generated
// functions and its row in pgq_go.capture, in one transaction. Writes to
// the table are no longer sent; rows already on the targets stay. A table
// that was dropped (DROP TABLE ... CASCADE takes the triggers and
// functions with it) is named as it was. It returns ErrCaptureNotFound
// when the table is not captured.
func RemoveCapture(ctx context.Context, db pgq.DB, table string) error {
	parts, err := splitName("table", table)
	if err != nil {
		return fmt.Errorf("copier: remove capture: %w", err)
	}
	given := pgx.Identifier(parts).Sanitize()
	tx, err := migrate.Begin(ctx, db)
	if err != nil {
		return fmt.Errorf("copier: remove capture %s: %w", given, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var has bool
	if err := tx.QueryRow(ctx, sqlHasCaptureTable).Scan(&has); err != nil {
		return fmt.Errorf("copier: remove capture %s: %w", given, err)
	}
	if !has {
		return fmt.Errorf("%w: %s", ErrCaptureNotFound, given)
	}
	var oid uint32
	err = tx.QueryRow(ctx, "select c.oid from pg_catalog.pg_class c where c.oid = pg_catalog.to_regclass($1)", given).Scan(&oid)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		// Dropped: find it by the names recorded.
		schema := ""
		if len(parts) == 2 {
			schema = parts[0]
		}
		rows, err := tx.Query(ctx, `select table_oid from pgq_go.capture c
			where c.table_name = $1 and ($2 = '' or c.table_schema = $2)
			and not exists (select 1 from pg_catalog.pg_class r where r.oid = c.table_oid)`, parts[len(parts)-1], schema)
		if err != nil {
			return fmt.Errorf("copier: remove capture %s: %w", given, err)
		}
		oids, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
		if err != nil {
			return fmt.Errorf("copier: remove capture %s: %w", given, err)
		}
		switch len(oids) {
		case 0:
			return fmt.Errorf("%w: %s (no such table)", ErrCaptureNotFound, given)
		case 1:
			oid = oids[0]
		default:
			return fmt.Errorf("copier: remove capture %s: several dropped captured tables have this name: qualify it with its schema", given)
		}
	case err != nil:
		return fmt.Errorf("copier: remove capture %s: %w", given, err)
	default:
		var quoted string
		if err := tx.QueryRow(ctx, "select pg_catalog.format('%I.%I', n.nspname, c.relname) from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace where c.oid = $1", oid).Scan(&quoted); err != nil {
			return fmt.Errorf("copier: remove capture %s: %w", given, err)
		}
		given = quoted
		var triggers int
		if err := tx.QueryRow(ctx, "select count(*) from pg_catalog.pg_trigger where tgrelid = $1 and tgname in ($2, $3)",
			oid, captureTrigger, captureTruncateTrigger).Scan(&triggers); err != nil {
			return fmt.Errorf("copier: remove capture %s: %w", given, err)
		}
		if triggers > 0 {
			for _, trg := range []string{captureTrigger, captureTruncateTrigger} {
				if _, err := tx.Exec(ctx, fmt.Sprintf("drop trigger if exists %s on %s", ident(trg), quoted)); err != nil {
					return fmt.Errorf("copier: remove capture %s: %w", given, err)
				}
			}
		}
	}
	var fns []uint32
	err = tx.QueryRow(ctx, `delete from pgq_go.capture where table_oid = $1
		returning array[payload_function::oid, targets_function::oid, trigger_function::oid]`, oid).Scan(&fns)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w: %s", ErrCaptureNotFound, given)
	}
	if err != nil {
		return fmt.Errorf("copier: remove capture %s: %w", given, err)
	}
	if err := dropFunctions(ctx, tx, fns); err != nil {
		return fmt.Errorf("copier: remove capture %s: %w", given, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("copier: remove capture %s: %w", given, err)
	}
	return nil
}

// sqlHasCaptureTable tells whether the capture table exists (the catalog,
// not to_regclass: that one fails without USAGE on the schema).
const sqlHasCaptureTable = `select exists (select 1 from pg_catalog.pg_class c
	join pg_catalog.pg_namespace n on n.oid = c.relnamespace
	where n.nspname = 'pgq_go' and c.relname = 'capture')`

const sqlListCaptures = `select coalesce(n.nspname, c.table_schema), coalesce(r.relname, c.table_name),
		pg_catalog.format('%I.%I', coalesce(n.nspname, c.table_schema), coalesce(r.relname, c.table_name)), r.oid is not null,
		c.queue_name, c.origin, coalesce(c.target_column::text, ''), coalesce(c.target_function::text, ''),
		c.key_columns, c.exclude_columns, c.columns,
		coalesce((select pg_catalog.format('%I.%I', pn.nspname, p.proname) from pg_catalog.pg_proc p
			join pg_catalog.pg_namespace pn on pn.oid = p.pronamespace where p.oid = c.payload_function), ''),
		coalesce((select pg_catalog.format('%I.%I', pn.nspname, p.proname) from pg_catalog.pg_proc p
			join pg_catalog.pg_namespace pn on pn.oid = p.pronamespace where p.oid = c.targets_function), ''),
		exists (select 1 from pg_catalog.pg_proc p where p.oid = c.trigger_function),
		exists (select 1 from pg_catalog.pg_trigger g where g.tgrelid = c.table_oid and g.tgname = $1
			and g.tgfoid = c.trigger_function and g.tgenabled <> 'D'),
		exists (select 1 from pg_catalog.pg_trigger g where g.tgrelid = c.table_oid and g.tgname = $2 and g.tgenabled <> 'D'),
		coalesce((select array_agg(a.attname::text order by a.attnum) from pg_catalog.pg_attribute a
			where a.attrelid = c.table_oid and a.attnum > 0 and not a.attisdropped and a.attgenerated = ''
			and not a.attname = any (c.exclude_columns)), '{}'),
		c.updated_at
	from pgq_go.capture c
	left join pg_catalog.pg_class r on r.oid = c.table_oid
	left join pg_catalog.pg_namespace n on n.oid = r.relnamespace
	order by 1, 2`

// ListCaptures returns the captured tables of db, by schema and name,
// each with what is wrong with it, if anything (Capture.Problem). A
// database where nothing was ever captured has none.
func ListCaptures(ctx context.Context, db pgq.DB) ([]Capture, error) {
	var has bool
	if err := db.QueryRow(ctx, sqlHasCaptureTable).Scan(&has); err != nil {
		return nil, fmt.Errorf("copier: list captures: %w", err)
	}
	if !has {
		return nil, nil
	}
	rows, err := db.Query(ctx, sqlListCaptures, captureTrigger, captureTruncateTrigger)
	if err != nil {
		return nil, fmt.Errorf("copier: list captures: %w", err)
	}
	var out []Capture
	var c Capture
	var exists, triggerFn, trigger, truncTrigger bool
	var current []string
	_, err = pgx.ForEachRow(rows, []any{&c.Schema, &c.Table, &c.EventTable, &exists, &c.Queue, &c.Origin, &c.TargetColumn, &c.TargetFunction,
		&c.KeyColumns, &c.ExcludeColumns, &c.Columns, &c.PayloadFunc, &c.TargetsFunc, &triggerFn, &trigger, &truncTrigger,
		&current, &c.Updated}, func() error {
		c.Problem = ""
		switch {
		case !exists:
			c.Problem = "the table was dropped: remove the capture (RemoveCapture, pgqctl copy capture remove)"
		case c.PayloadFunc == "" || c.TargetsFunc == "" || !triggerFn || !trigger || !truncTrigger:
			c.Problem = "the capture trigger or a generated function is missing or disabled: run AddCapture again"
		case !slices.Equal(current, c.Columns):
			c.Problem = columnDrift(c.Columns, current)
		}
		out = append(out, c)
		c = Capture{}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("copier: list captures: %w", err)
	}
	return out, nil
}

// columnDrift describes how the table's columns moved away from the
// captured ones.
func columnDrift(captured, current []string) string {
	var added, gone []string
	for _, c := range current {
		if !slices.Contains(captured, c) {
			added = append(added, c)
		}
	}
	for _, c := range captured {
		if !slices.Contains(current, c) {
			gone = append(gone, c)
		}
	}
	var what []string
	if len(added) > 0 {
		what = append(what, fmt.Sprintf("columns %q added", added))
	}
	if len(gone) > 0 {
		what = append(what, fmt.Sprintf("columns %q gone", gone))
	}
	if len(what) == 0 {
		what = append(what, "columns reordered")
	}
	return "the table changed since AddCapture (" + strings.Join(what, ", ") + "): run AddCapture again"
}
