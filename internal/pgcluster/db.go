package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// CreateDB creates database name (with the pgq extension when withPgq) and
// returns its DSN. The caller drops it (DropDB), or lets the cluster go.
func (c *Cluster) CreateDB(ctx context.Context, name string, withPgq bool) (string, error) {
	admin, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		return "", fmt.Errorf("pgcluster: connect: %w", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "create database "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("pgcluster: create database %s: %w", name, err)
	}
	dsn := c.DSN(name)
	if withPgq {
		if err := createExtension(ctx, dsn); err != nil {
			return "", fmt.Errorf("pgcluster: create extension pgq in %s: %w", name, err)
		}
	}
	return dsn, nil
}

// DropDB drops database name, closing any connection still open on it.
// Dropping a database that does not exist is not an error.
func (c *Cluster) DropDB(ctx context.Context, name string) error {
	admin, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		return fmt.Errorf("pgcluster: connect: %w", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "drop database if exists "+pgx.Identifier{name}.Sanitize()+" with (force)"); err != nil {
		return fmt.Errorf("pgcluster: drop database %s: %w", name, err)
	}
	return nil
}

// extMu serialises create extension pgq: it creates cluster-wide roles
// (pgq_reader, ...), and two concurrent creations race on them.
var extMu sync.Mutex

func createExtension(ctx context.Context, dsn string) error {
	extMu.Lock()
	defer extMu.Unlock()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	for attempt := 1; ; attempt++ {
		_, err = conn.Exec(ctx, "create extension if not exists pgq")
		var pe *pgconn.PgError
		// Another process on a shared server (PGQ_TEST_DSN) may win the role race.
		if err == nil || !errors.As(err, &pe) || pe.Code != "23505" || attempt == 5 {
			return err
		}
	}
}
