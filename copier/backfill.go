package copier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/internal/logging"
	"github.com/pgq-go/pgq/internal/migrate"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/route"
)

// BackfillOptions configures Backfill.
type BackfillOptions struct {
	// ChunkRows is the most rows one transaction reads, locks and sends.
	// Default 500.
	ChunkRows int
	// ChunkBytes bounds the payload bytes a chunk holds in memory; a chunk
	// stops at the row that reaches it. Default 4 MiB.
	ChunkBytes int
	// Restart starts again from the first row even when an earlier
	// backfill of the table to the target stopped half way. Default
	// false: it continues after the last row that one sent. (A finished
	// backfill always starts from the first row.)
	Restart bool
	// Logger receives a line per chunk at debug level and one at the end
	// at info. Default: slog.Default(), records below Warn discarded.
	Logger *slog.Logger
}

// BackfillResult is what a Backfill did.
type BackfillResult struct {
	Rows    int64 // rows sent by this call
	Chunks  int   // transactions that sent them
	Resumed bool  // it continued an earlier backfill that had stopped
}

// Backfill sends the rows of a captured table (AddCapture) that are
// addressed to target now, for a target that joined after the rows were
// written, or a table captured after it had rows. Each row goes to target
// only, as the capture trigger sends an insert ("I:" with the key
// columns: RowApplier upserts it), through the capture's push queue, in
// chunks of ChunkRows rows in key order, one transaction each.
//
// It is consistent with the trigger's stream, under concurrent writes, on
// one condition: the capture must already address the rows to target
// (its target column or function names target), so that the trigger sends
// every change made from now on. Then:
//
//   - a row changed or deleted while a chunk reads it: the chunk locks its
//     rows (FOR SHARE), so the writer's transaction and the chunk's are
//     ordered; the later one queues its event later, and that event wins
//     on the target (a delete after the chunk deletes the row the chunk
//     sent; a chunk after a change sends the changed row);
//   - a row inserted but not committed when a chunk passes its key: the
//     chunk does not see it, and the trigger sends it on commit;
//   - a row that stopped being addressed to target before a chunk reads
//     it is not sent (the trigger sent its delete).
//
// Each chunk records the last key it sent in pgq_go.capture_backfill in
// the same transaction, so a backfill stopped by a crash or ctx goes on
// from there when called again (Restart starts over); resending a row is
// harmless anyway (an upsert of its current value). Two backfills of the
// same table and target take turns. The transaction must be able to write
// the push queue: run it as a producer of the node.
func Backfill(ctx context.Context, pool *pgxpool.Pool, table, target string, opts BackfillOptions) (BackfillResult, error) {
	var res BackfillResult
	if err := route.ValidateNode(target); err != nil {
		return res, fmt.Errorf("copier: backfill %s: %w", table, err)
	}
	if opts.ChunkRows <= 0 {
		opts.ChunkRows = 500
	}
	if opts.ChunkBytes <= 0 {
		opts.ChunkBytes = 4 << 20
	}
	log := logging.Default(opts.Logger).With("table", table, "target", target)
	if err := installBackfill(ctx, pool); err != nil {
		return res, err
	}
	c, err := loadBackfillCapture(ctx, pool, table)
	if err != nil {
		return res, err
	}
	log = log.With("queue", c.queue)

	// Where to start.
	var last []string
	var done, found bool
	err = pool.QueryRow(ctx, `select last_key, done from pgq_go.capture_backfill where table_oid = $1 and target = $2`,
		c.oid, target).Scan(&last, &done)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return res, fmt.Errorf("copier: backfill %s to %s: %w", c.name, target, err)
	default:
		found = true
	}
	if !found || done || opts.Restart {
		if _, err := pool.Exec(ctx, `insert into pgq_go.capture_backfill (table_oid, target) values ($1, $2)
			on conflict (table_oid, target) do update set last_key = null, rows_sent = 0, done = false,
			started_at = now(), updated_at = now()`, c.oid, target); err != nil {
			return res, fmt.Errorf("copier: backfill %s to %s: %w", c.name, target, err)
		}
	} else {
		res.Resumed = last != nil
	}

	for {
		n, more, err := c.chunk(ctx, pool, target, opts)
		if err != nil {
			return res, fmt.Errorf("copier: backfill %s to %s: %w", c.name, target, err)
		}
		res.Rows += n
		res.Chunks++
		log.Debug("backfill chunk sent", "rows", n)
		if testHookAfterBackfillChunk != nil {
			testHookAfterBackfillChunk(res.Chunks)
		}
		if !more {
			break
		}
	}
	log.Info("backfill done", "rows", res.Rows, "chunks", res.Chunks, "resumed", res.Resumed)
	return res, nil
}

// backfillMigrations are the backfill's table (pgq_go.capture_backfill).
var backfillMigrations = []migrate.Migration{
	{Name: "copier/backfill/1", File: "schema/backfill_1.sql"},
}

// installBackfill creates the backfill's progress table if needed.
func installBackfill(ctx context.Context, db pgq.DB) error {
	if ok, err := migrate.Recorded(ctx, db, backfillMigrations); err == nil && ok {
		return nil
	}
	tx, err := migrate.Begin(ctx, db)
	if err != nil {
		return fmt.Errorf("copier: backfill: install: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := migrate.Apply(ctx, tx, schemaFS, backfillMigrations); err != nil {
		return fmt.Errorf("copier: backfill: install: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("copier: backfill: install: %w", err)
	}
	return nil
}

// testHookAfterBackfillChunk, set by tests only, runs after each chunk's
// commit with the chunks committed so far.
var testHookAfterBackfillChunk func(chunks int)

// backfillCapture is what a backfill needs of a capture.
type backfillCapture struct {
	oid      uint32
	name     string // quoted, schema-qualified
	queue    string
	origin   string
	keys     []string // column names
	keyTypes []string // their types, for the resume comparison
	payload  string   // the payload function, as regprocedure text (quoted)
	targets  string   // the targets function
}

const sqlBackfillCapture = `
select c.table_oid::int8, format('%I.%I', n.nspname, cl.relname), c.queue_name, c.origin, c.key_columns,
       array(select format_type(a.atttypid, a.atttypmod) from unnest(c.key_columns) with ordinality k(col, i)
             join pg_attribute a on a.attrelid = c.table_oid and a.attname = k.col order by k.i),
       c.payload_function::oid::int8, c.targets_function::oid::int8
  from pgq_go.capture c
  join pg_class cl on cl.oid = c.table_oid
  join pg_namespace n on n.oid = cl.relnamespace
 where c.table_oid = $1::regclass`

func loadBackfillCapture(ctx context.Context, pool *pgxpool.Pool, table string) (*backfillCapture, error) {
	var captures bool
	if err := pool.QueryRow(ctx, "select to_regclass('pgq_go.capture') is not null").Scan(&captures); err != nil {
		return nil, fmt.Errorf("copier: backfill %s: %w", table, err)
	}
	if !captures {
		return nil, fmt.Errorf("%w: %s (no capture on this database: copier.AddCapture, pgqctl copy capture add)", ErrCaptureNotFound, table)
	}
	c := &backfillCapture{}
	var oid, payloadOid, targetsOid int64
	err := pool.QueryRow(ctx, sqlBackfillCapture, table).Scan(&oid, &c.name, &c.queue, &c.origin, &c.keys, &c.keyTypes, &payloadOid, &targetsOid)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s (add a capture first: copier.AddCapture, pgqctl copy capture add)", ErrCaptureNotFound, table)
	}
	if err != nil {
		return nil, fmt.Errorf("copier: backfill %s: %w", table, err)
	}
	if len(c.keyTypes) != len(c.keys) {
		return nil, fmt.Errorf("copier: backfill %s: key columns %v are not all in the table any more: run AddCapture again", c.name, c.keys)
	}
	c.oid = uint32(oid)
	// The functions by oid: their names need no quoting of ours.
	if err := pool.QueryRow(ctx, "select $1::int8::oid::regproc::text, $2::int8::oid::regproc::text", payloadOid, targetsOid).
		Scan(&c.payload, &c.targets); err != nil {
		return nil, fmt.Errorf("copier: backfill %s: %w", c.name, err)
	}
	return c, nil
}

// chunk sends the next rows in one transaction and reports how many and
// whether there may be more.
func (c *backfillCapture) chunk(ctx context.Context, pool *pgxpool.Pool, target string, opts BackfillOptions) (int64, bool, error) {
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return 0, false, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit, a no-op
	// Encode as the trigger does in any session (see
	// pgq_go.capture_payload_canonical): every node reads the text back.
	if _, err := tx.Exec(ctx, "set local datestyle = 'ISO'; set local intervalstyle = 'postgres'; set local extra_float_digits = 1"); err != nil {
		return 0, false, err
	}
	// Take the progress row: a second backfill of the same table and
	// target waits here and then reads where this one stopped.
	var last []string
	if err := tx.QueryRow(ctx, `select last_key from pgq_go.capture_backfill where table_oid = $1 and target = $2 for update`,
		c.oid, target).Scan(&last); err != nil {
		return 0, false, fmt.Errorf("progress: %w", err)
	}
	q, args := c.chunkQuery(target, last, opts.ChunkRows)
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return 0, false, err
	}
	typ := "I:" + strings.Join(c.keys, ",")
	var (
		evs   []pgq.EventData
		bytes int
		key   []string
	)
	for rows.Next() {
		vals := make([]any, len(c.keys)+1)
		keyVals := make([]*string, len(c.keys))
		for i := range keyVals {
			vals[i] = &keyVals[i]
		}
		var payload *string
		vals[len(c.keys)] = &payload
		if err := rows.Scan(vals...); err != nil {
			rows.Close()
			return 0, false, err
		}
		if payload == nil {
			rows.Close()
			return 0, false, fmt.Errorf("the payload function gave NULL for a row")
		}
		key = key[:0]
		for _, k := range keyVals {
			if k == nil {
				rows.Close()
				return 0, false, fmt.Errorf("a row has a NULL key column")
			}
			key = append(key, *k)
		}
		ev := pgq.EventData{Type: pgq.T(typ), Data: pgq.T(""), Extra1: pgq.T(target), Extra2: pgq.T(*payload)}
		if c.origin != "" {
			ev.Extra3 = pgq.T(c.origin)
		}
		evs = append(evs, ev)
		if bytes += len(*payload); bytes >= opts.ChunkBytes {
			break
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, false, err
	}
	more := len(evs) == opts.ChunkRows || bytes >= opts.ChunkBytes
	if len(evs) > 0 {
		if _, err := pgq.InsertEvents(ctx, tx, c.queue, func(yield func(pgq.EventData) bool) {
			for _, ev := range evs {
				if !yield(ev) {
					return
				}
			}
		}); err != nil {
			return 0, false, err
		}
	}
	var keyArg any
	if len(evs) > 0 {
		keyArg = key
	} else {
		keyArg = last
	}
	if _, err := tx.Exec(ctx, `update pgq_go.capture_backfill set last_key = $3, rows_sent = rows_sent + $4, done = $5,
		updated_at = now() where table_oid = $1 and target = $2`, c.oid, target, keyArg, len(evs), !more); err != nil {
		return 0, false, fmt.Errorf("progress: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, false, err
	}
	return int64(len(evs)), more, nil
}

// chunkQuery reads, locks and encodes the next rows addressed to target
// after the key last (nil: from the first), in key order.
func (c *backfillCapture) chunkQuery(target string, last []string, limit int) (string, []any) {
	var sel, keys []string
	for _, k := range c.keys {
		col := "r." + pgx.Identifier{k}.Sanitize()
		sel = append(sel, col+"::text")
		keys = append(keys, col)
	}
	args := []any{target, limit}
	where := "$1 = any(" + c.targets + "(r))"
	if last != nil {
		var ps []string
		for i, v := range last {
			args = append(args, v)
			ps = append(ps, fmt.Sprintf("$%d::%s", len(args), c.keyTypes[i]))
		}
		where += " and (" + strings.Join(keys, ", ") + ") > (" + strings.Join(ps, ", ") + ")"
	}
	return "select " + strings.Join(sel, ", ") + ", " + c.payload + "(r) from " + c.name + " r where " + where +
		" order by " + strings.Join(keys, ", ") + " limit $2 for share of r", args
}
