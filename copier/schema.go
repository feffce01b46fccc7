package copier

import (
	"context"
	"embed"
	"fmt"

	"github.com/pgq-go/pgq/internal/migrate"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/remote"
)

//go:embed schema/*.sql
var schemaFS embed.FS

// migrations are the copier's own tables in schema pgq_go: parked and
// held rows.
var migrations = []migrate.Migration{
	{Name: "copier/1", File: "schema/copier_1.sql"},
}

// Install creates or upgrades, in db (a node or a hub), what a copier
// needs: the exactly-once tracking schema (remote.Install) and the
// copier's own tables (pgq_go.parked_event, pgq_go.held_event). It is
// idempotent and safe to run concurrently. Setup runs it on the node and
// every hub.
func Install(ctx context.Context, db pgq.DB) error {
	if err := remote.Install(ctx, db); err != nil {
		return err
	}
	if ok, err := migrate.Recorded(ctx, db, migrations); err == nil && ok {
		return nil
	}
	tx, err := migrate.Begin(ctx, db)
	if err != nil {
		return fmt.Errorf("copier: install schema: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := migrate.Apply(ctx, tx, schemaFS, migrations); err != nil {
		return fmt.Errorf("copier: install schema: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("copier: install schema: %w", err)
	}
	return nil
}
