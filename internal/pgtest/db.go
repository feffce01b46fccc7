package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

var dbCounter atomic.Int64

// DB is a fresh database on a cluster, with a pool connected to it.
type DB struct {
	Name string
	DSN  string
	Pool *pgxpool.Pool
}

// NewDB creates a fresh database with the pgq extension, and drops it when
// the test ends.
func (c *Cluster) NewDB(t testing.TB) *DB {
	t.Helper()
	return c.newDB(t, true)
}

// NewPlainDB creates a fresh database without the pgq extension (a
// destination that only needs tracking tables).
func (c *Cluster) NewPlainDB(t testing.TB) *DB {
	t.Helper()
	return c.newDB(t, false)
}

func (c *Cluster) newDB(t testing.TB, withPgq bool) *DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	name := fmt.Sprintf("t_%d_%d", os.Getpid(), dbCounter.Add(1))
	dsn, err := c.CreateDB(ctx, name, withPgq)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	db := &DB{Name: name, DSN: dsn}
	db.Pool, err = pgxpool.New(ctx, db.DSN)
	if err != nil {
		t.Fatalf("pgtest: pool %s: %v", name, err)
	}
	t.Cleanup(func() {
		db.Pool.Close()
		c.dropDB(name)
	})
	return db
}

// CreateDB creates database name (with the pgq extension when withPgq) and
// returns its DSN. The caller drops it, or lets the cluster go.
func (c *Cluster) CreateDB(ctx context.Context, name string, withPgq bool) (string, error) {
	admin, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		return "", fmt.Errorf("connect: %w", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "create database "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	dsn := c.DSN(name)
	if withPgq {
		if err := createExtension(ctx, dsn); err != nil {
			return "", fmt.Errorf("create extension pgq in %s: %w", name, err)
		}
	}
	return dsn, nil
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
		// Another test process on a shared server (PGQ_TEST_DSN) may win the role race.
		if err == nil || !errors.As(err, &pe) || pe.Code != "23505" || attempt == 5 {
			return err
		}
	}
}

func (c *Cluster) dropDB(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		return // the server may be stopped by the test; the directory goes anyway
	}
	defer admin.Close(ctx)
	_, _ = admin.Exec(ctx, "drop database if exists "+pgx.Identifier{name}.Sanitize()+" with (force)")
}

// NewCluster starts a dedicated throwaway cluster for a test that stops or
// restarts its server; it is removed when the test ends. With PGQ_TEST_DSN
// set, the test is skipped: an external server cannot be restarted.
func NewCluster(t testing.TB) *Cluster {
	t.Helper()
	if os.Getenv(EnvDSN) != "" {
		t.Skip("pgtest: fault test needs a throwaway cluster; unset " + EnvDSN)
	}
	c, err := Start()
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}
