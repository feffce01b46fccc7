package pgtest

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

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
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// The server may be stopped by the test; its directory goes anyway.
		_ = c.DropDB(ctx, name)
	})
	return db
}
