// Package migrate applies pgq-go's versioned schema migrations: embedded
// SQL files, each recorded by name in pgq_go.migration once applied, all
// of one install in one transaction under an advisory lock, so concurrent
// installs on one database serialise and a failed one leaves nothing.
// Each package that owns tables (remote: tracking; copier: parked and
// held rows) ships its own list and applies it with Apply.
package migrate

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/pgq"
)

// Migration is one schema change: Name is what pgq_go.migration records
// ("remote" migrations keep their historic "pgq_go/N" names), File the
// embedded SQL file.
type Migration struct {
	Name string
	File string
}

// lockKey serialises installs on one database.
const lockKey = 0x70677167_6f000001 // "pgqgo" + 1

// Recorded reports whether every migration named in ms is recorded in db,
// without DDL or locks (a least-privilege role can run it).
func Recorded(ctx context.Context, db pgq.DB, ms []Migration) (bool, error) {
	names := make([]string, len(ms))
	for i, m := range ms {
		names[i] = m.Name
	}
	var ok bool
	if err := db.QueryRow(ctx, "select to_regclass('pgq_go.migration') is not null").Scan(&ok); err != nil || !ok {
		return false, err
	}
	err := db.QueryRow(ctx, "select count(*) = cardinality($1::text[]) from pgq_go.migration where name = any($1)", names).Scan(&ok)
	return ok, err
}

// Lock takes the install lock in tx and makes sure pgq_go.migration
// exists. Apply calls it; a caller that must look at the database before
// choosing migrations calls it first.
func Lock(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, "select pg_advisory_xact_lock($1)", int64(lockKey)); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `create schema if not exists pgq_go;
		create table if not exists pgq_go.migration (
			name text primary key,
			applied_at timestamptz not null default now())`)
	return err
}

// Apply runs, in tx and in order, the migrations of ms not yet recorded,
// reading their SQL from files, and records them. It takes the lock.
func Apply(ctx context.Context, tx pgx.Tx, files fs.FS, ms []Migration) error {
	if err := Lock(ctx, tx); err != nil {
		return err
	}
	rows, err := tx.Query(ctx, "select name from pgq_go.migration")
	if err != nil {
		return err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	applied := make(map[string]bool, len(names))
	for _, n := range names {
		applied[n] = true
	}
	for _, m := range ms {
		if applied[m.Name] {
			continue
		}
		sql, err := fs.ReadFile(files, m.File)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, string(sql)); err != nil {
			return fmt.Errorf("apply %s: %w", m.Name, err)
		}
		if _, err := tx.Exec(ctx, "insert into pgq_go.migration (name) values ($1)", m.Name); err != nil {
			return err
		}
	}
	return nil
}

// Begin starts a transaction on db, which must be a pool, a connection or
// a transaction (a savepoint then).
func Begin(ctx context.Context, db pgq.DB) (pgx.Tx, error) {
	b, ok := db.(interface {
		Begin(ctx context.Context) (pgx.Tx, error)
	})
	if !ok {
		return nil, errors.New("install needs a pool, connection or transaction")
	}
	return b.Begin(ctx)
}
