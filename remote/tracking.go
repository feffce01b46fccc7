package remote

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"time"

	"github.com/pgq-go/pgq/internal/migrate"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/pgq"
)

//go:embed schema/*.sql
var schemaFS embed.FS

// The pgq_ext migration is applied only where no pgq_ext exists; a real
// Skytools pgq_ext is verified and used as-is.
var (
	pgqExtMigration = migrate.Migration{Name: "pgq_ext/1", File: "schema/pgq_ext_1.sql"}
	ownMigrations   = []migrate.Migration{
		{Name: "pgq_go/1", File: "schema/pgq_go_1.sql"},
		{Name: "pgq_go/2", File: "schema/pgq_go_2.sql"}, // tracking keyed by source, tick guard
	}
)

// requiredPgqExt lists the pgq_ext functions this package calls.
var requiredPgqExt = []string{
	"pgq_ext.is_batch_done(text,text,bigint)",
	"pgq_ext.set_batch_done(text,text,bigint)",
	"pgq_ext.get_last_tick(text,text)",
	"pgq_ext.set_last_tick(text,text,bigint)",
}

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
	t, err := migrate.Begin(ctx, dst)
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
	var ok bool
	if err := db.QueryRow(ctx, "select to_regnamespace('pgq_ext') is not null").Scan(&ok); err != nil || !ok {
		return false, err
	}
	return migrate.Recorded(ctx, db, ownMigrations)
}

func install(ctx context.Context, tx pgx.Tx) error {
	if err := migrate.Lock(ctx, tx); err != nil {
		return err
	}
	var hasExt bool
	if err := tx.QueryRow(ctx, "select exists (select 1 from pg_namespace where nspname = 'pgq_ext')").Scan(&hasExt); err != nil {
		return err
	}
	todo := ownMigrations
	if !hasExt {
		todo = append([]migrate.Migration{pgqExtMigration}, todo...)
	}
	if err := migrate.Apply(ctx, tx, schemaFS, todo); err != nil {
		return err
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
			if m == pgqExtMigration.Name {
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

// Position is where a RemoteConsumer's flow stands on its destination
// (pgq_go.remote_position): the batch it applied last and the tick that
// batch ended at.
type Position struct {
	BatchID  int64
	TickID   int64
	TickTime time.Time
}

// LastPosition returns the position recorded on dst for the flow tracked
// under (consumer, subconsumer); found is false when none is.
func LastPosition(ctx context.Context, dst pgq.DB, consumer, subconsumer string) (p Position, found bool, err error) {
	err = dst.QueryRow(ctx, sqlPosition, consumer, subconsumer).Scan(&p.BatchID, &p.TickID, &p.TickTime)
	if errors.Is(err, pgx.ErrNoRows) {
		return p, false, nil
	}
	if err != nil {
		return p, false, fmt.Errorf("remote: position of %s: %w", consumer, err)
	}
	return p, true, nil
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

// AdoptPosition moves a RemoteConsumer's position recorded on dst under
// (consumer, subconsumer "") to (consumer, key), with its retry tags,
// unless key already has a position. Use it once when giving an existing
// flow a Config.SubConsumer: without it the consumer would find no
// position under the new key and apply its open batch again. It runs
// under the destination lock of both keys, so a running instance using
// the old key cannot interleave. The TargetedCopier calls it for rows an
// older version keyed by consumer name only.
func AdoptPosition(ctx context.Context, dst *pgxpool.Pool, consumer, key string) error {
	return pgx.BeginFunc(ctx, dst, func(tx pgx.Tx) error {
		for _, k := range []string{"", key} {
			if _, err := tx.Exec(ctx, lockKeySQL, consumer, k); err != nil {
				return err
			}
		}
		tag, err := tx.Exec(ctx, `update pgq_ext.completed_batch set subconsumer_id = $2
			where consumer_id = $1 and subconsumer_id = ''
			  and not exists (select 1 from pgq_ext.completed_batch where consumer_id = $1 and subconsumer_id = $2)`,
			consumer, key)
		if err != nil {
			return fmt.Errorf("remote: adopt tracking row of %s: %w", consumer, err)
		}
		if tag.RowsAffected() == 0 {
			return nil
		}
		if _, err := tx.Exec(ctx, `update pgq_go.remote_retry set subconsumer_id = $2
			where consumer_id = $1 and subconsumer_id = ''`, consumer, key); err != nil {
			return fmt.Errorf("remote: adopt retry tags of %s: %w", consumer, err)
		}
		return nil
	})
}
