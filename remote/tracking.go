package remote

import (
	"context"
	"embed"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/pgq"
)

//go:embed schema/*.sql
var schemaFS embed.FS

// migration is one embedded, versioned schema change.
type migration struct {
	name string // recorded in pgq_go.migration
	file string
}

// The pgq_ext migration is applied only where no pgq_ext exists; a real
// Skytools pgq_ext is verified and used as-is.
var (
	pgqExtMigration = migration{"pgq_ext/1", "schema/pgq_ext_1.sql"}
	ownMigrations   = []migration{
		{"pgq_go/1", "schema/pgq_go_1.sql"},
		{"pgq_go/2", "schema/pgq_go_2.sql"}, // tracking keyed by source, tick guard
		{"pgq_go/3", "schema/pgq_go_3.sql"}, // copier: parked events, per-key order
	}
)

// requiredPgqExt lists the pgq_ext functions this package calls.
var requiredPgqExt = []string{
	"pgq_ext.is_batch_done(text,text,bigint)",
	"pgq_ext.set_batch_done(text,text,bigint)",
	"pgq_ext.get_last_tick(text,text)",
	"pgq_ext.set_last_tick(text,text,bigint)",
}

// installLockKey serialises concurrent installs on one database.
const installLockKey = 0x70677167_6f000001 // "pgqgo" + 1

// ErrTrackingSchema means the destination's tracking schema is missing or
// incompatible.
var ErrTrackingSchema = errors.New("remote: tracking schema")

// Install creates or upgrades the destination tracking schema: pgq_ext
// (compatible with Skytools pgq_ext 3.x; an existing one is verified and
// left alone) and pgq-go's own pgq_go schema. It is idempotent and safe to
// run concurrently; the destination needs no pgq extension.
func Install(ctx context.Context, dst pgq.DB) error {
	// Fast path, no DDL and no lock: everything is there already. This lets
	// a least-privilege role run against a schema installed by its owner.
	if current, err := installed(ctx, dst); err == nil && current {
		return verify(ctx, dst)
	}
	tx, err := beginner(dst)
	if err != nil {
		return err
	}
	t, err := tx.Begin(ctx)
	if err != nil {
		return fmt.Errorf("remote: install tracking schema: %w", err)
	}
	defer func() { _ = t.Rollback(context.WithoutCancel(ctx)) }()
	if err := install(ctx, t); err != nil {
		return fmt.Errorf("remote: install tracking schema: %w", err)
	}
	if err := t.Commit(ctx); err != nil {
		return fmt.Errorf("remote: install tracking schema: %w", err)
	}
	return nil
}

// installed reports whether every migration this package ships is recorded.
func installed(ctx context.Context, db pgq.DB) (bool, error) {
	var want []string
	for _, m := range ownMigrations {
		want = append(want, m.name)
	}
	var ok bool
	err := db.QueryRow(ctx, `select to_regclass('pgq_go.migration') is not null
		and to_regnamespace('pgq_ext') is not null`).Scan(&ok)
	if err != nil || !ok {
		return false, err
	}
	err = db.QueryRow(ctx, "select count(*) = cardinality($1::text[]) from pgq_go.migration where name = any($1)", want).Scan(&ok)
	return ok, err
}

type txBeginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

func beginner(db pgq.DB) (txBeginner, error) {
	b, ok := db.(txBeginner)
	if !ok {
		return nil, errors.New("remote: install needs a pool, connection or transaction")
	}
	return b, nil
}

func install(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, "select pg_advisory_xact_lock($1)", int64(installLockKey)); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `create schema if not exists pgq_go;
		create table if not exists pgq_go.migration (
			name text primary key,
			applied_at timestamptz not null default now())`); err != nil {
		return err
	}
	applied := map[string]bool{}
	rows, err := tx.Query(ctx, "select name from pgq_go.migration")
	if err != nil {
		return err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, n := range names {
		applied[n] = true
	}
	var hasExt bool
	if err := tx.QueryRow(ctx, "select exists (select 1 from pg_namespace where nspname = 'pgq_ext')").Scan(&hasExt); err != nil {
		return err
	}
	todo := ownMigrations
	if !hasExt {
		todo = append([]migration{pgqExtMigration}, todo...)
	}
	for _, m := range todo {
		if applied[m.name] {
			continue
		}
		sql, err := schemaFS.ReadFile(m.file)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, string(sql)); err != nil {
			return fmt.Errorf("apply %s: %w", m.name, err)
		}
		if _, err := tx.Exec(ctx, "insert into pgq_go.migration (name) values ($1)", m.name); err != nil {
			return err
		}
	}
	return verify(ctx, tx)
}

// verify checks that every pgq_ext function this package calls exists.
func verify(ctx context.Context, db pgq.DB) error {
	var missing []string
	rows, err := db.Query(ctx, "select f from unnest($1::text[]) f where to_regprocedure(f) is null", requiredPgqExt)
	if err != nil {
		return err
	}
	missing, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: pgq_ext lacks %v (a pgq_ext older than 3.0?)", ErrTrackingSchema, missing)
	}
	var ok bool
	if err := db.QueryRow(ctx, `select to_regclass('pgq_go.remote_position') is not null
		and to_regclass('pgq_go.identity') is not null`).Scan(&ok); err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: pgq_go tables missing or older than pgq_go/2 (run Install, or pgqctl tracking install)", ErrTrackingSchema)
	}
	return nil
}

// Identity returns the stable identity of a database pgq-go's schema is
// installed in (pgq_go.identity, a random UUID made at install). Tracking
// keys name their source by it, so positions of flows from different
// databases never collide.
func Identity(ctx context.Context, db pgq.DB) (string, error) {
	var id string
	if err := db.QueryRow(ctx, "select id from pgq_go.identity").Scan(&id); err != nil {
		return "", fmt.Errorf("remote: database identity (is the pgq_go schema installed?): %w", err)
	}
	return id, nil
}

// TrackingStatus describes a destination's tracking schema.
type TrackingStatus struct {
	PgqExt        bool     // a pgq_ext schema exists
	PgqExtVersion string   // pgq_ext.version(); "" when absent or unknown (pgq_ext installed as plain SQL)
	PgqExtOurs    bool     // installed by this package (false: a Skytools pgq_ext)
	Migrations    []string // pgq_go migrations applied
}

// Status reports the tracking schema of a destination without changing it.
func Status(ctx context.Context, dst pgq.DB) (TrackingStatus, error) {
	var st TrackingStatus
	var hasVersion, hasOwn bool
	err := dst.QueryRow(ctx, `select exists (select 1 from pg_namespace where nspname = 'pgq_ext'),
		to_regprocedure('pgq_ext.version()') is not null,
		to_regclass('pgq_go.migration') is not null`).Scan(&st.PgqExt, &hasVersion, &hasOwn)
	if err != nil {
		return st, fmt.Errorf("remote: tracking status: %w", err)
	}
	if hasVersion {
		// Skytools' pgq_ext.version() returns pg_extension.extversion
		// (pgq/pgq-ext, functions/pgq_ext.version.sql): NULL when pgq_ext
		// was installed as plain SQL rather than with CREATE EXTENSION, as
		// Skytools' "noext" install does. The version is then unknown; that
		// is no error.
		var v *string
		if err := dst.QueryRow(ctx, "select pgq_ext.version()").Scan(&v); err != nil {
			return st, fmt.Errorf("remote: tracking status: pgq_ext.version(): %w", err)
		}
		if v != nil {
			st.PgqExtVersion = *v
		}
	}
	if hasOwn {
		rows, err := dst.Query(ctx, "select name from pgq_go.migration order by name")
		if err != nil {
			return st, fmt.Errorf("remote: tracking status: %w", err)
		}
		st.Migrations, err = pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return st, fmt.Errorf("remote: tracking status: %w", err)
		}
		for _, m := range st.Migrations {
			if m == pgqExtMigration.name {
				st.PgqExtOurs = true
			}
		}
	}
	return st, nil
}

// LastTick returns the last tick applied by a SerialConsumer on dst
// (pgq_ext.get_last_tick), or 0 when none is recorded.
func LastTick(ctx context.Context, dst pgq.DB, consumer, subconsumer string) (int64, error) {
	var t *int64
	if err := dst.QueryRow(ctx, "select pgq_ext.get_last_tick($1, $2)", consumer, subconsumer).Scan(&t); err != nil {
		return 0, fmt.Errorf("remote: get last tick %s: %w", consumer, err)
	}
	if t == nil {
		return 0, nil
	}
	return *t, nil
}

// LastBatch returns the last batch applied by a RemoteConsumer on dst, or 0.
func LastBatch(ctx context.Context, dst pgq.DB, consumer, subconsumer string) (int64, error) {
	var b *int64
	err := dst.QueryRow(ctx, `select last_batch_id from pgq_ext.completed_batch
		where consumer_id = $1 and subconsumer_id = $2`, consumer, subconsumer).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("remote: last batch %s: %w", consumer, err)
	}
	return *b, nil
}
