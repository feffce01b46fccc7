package harness

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/internal/pgcluster"
)

// Env is the server the benchmarks run on: a throwaway cluster started by
// pgcluster, or a user's server named by a DSN. Every database a case needs is
// created by Env.CreateDB with a name starting with Env.Prefix and dropped
// by Close.
type Env struct {
	// Prefix starts the name of every scratch database ("pgq_bench_<pid>_").
	Prefix string
	// Throwaway reports that the server is a cluster started for this run.
	Throwaway bool

	base    string // DSN of the maintenance database
	cluster *pgcluster.Cluster

	mu  sync.Mutex
	dbs []*DB
}

// DB is a scratch database with a pool.
type DB struct {
	Name string
	DSN  string
	Pool *pgxpool.Pool
}

// Open starts a throwaway cluster when dsn is "" (PGQ_TEST_DSN, if set,
// is used instead, as in the tests), or uses the server dsn points at.
func Open(ctx context.Context, dsn string) (*Env, error) {
	e := &Env{Prefix: fmt.Sprintf("pgq_bench_%d_", os.Getpid())}
	if dsn == "" {
		c, err := pgcluster.Start()
		if err != nil {
			return nil, err
		}
		e.cluster, e.Throwaway = c, !c.External()
		dsn = c.DSN("postgres")
	}
	e.base = dsn
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("bench: connect: %w", err)
	}
	defer conn.Close(ctx)
	return e, nil
}

// dsnFor returns the base DSN with its database replaced by name.
func dsnFor(base, name string) (string, error) {
	if strings.HasPrefix(base, "postgres://") || strings.HasPrefix(base, "postgresql://") {
		u, err := url.Parse(base)
		if err != nil {
			return "", err
		}
		u.Path = "/" + name
		return u.String(), nil
	}
	// keyword/value: a later keyword wins.
	return base + " dbname='" + name + "'", nil
}

// BaseDSN is the DSN of the server's maintenance database (the one given
// with --dsn, or "postgres" on a throwaway cluster).
func (e *Env) BaseDSN() string { return e.base }

// CreateDB creates a scratch database (name: Prefix + suffix), with the
// pgq extension when withPgq, and opens a pool on it with up to maxConns
// connections (0: pgxpool's default).
func (e *Env) CreateDB(ctx context.Context, suffix string, withPgq bool, maxConns int32) (*DB, error) {
	name := e.Prefix + suffix
	admin, err := pgx.Connect(ctx, e.base)
	if err != nil {
		return nil, fmt.Errorf("bench: connect: %w", err)
	}
	defer admin.Close(ctx)
	_, _ = admin.Exec(ctx, "drop database if exists "+pgx.Identifier{name}.Sanitize()+" with (force)")
	if _, err := admin.Exec(ctx, "create database "+pgx.Identifier{name}.Sanitize()); err != nil {
		return nil, fmt.Errorf("bench: create database %s: %w", name, err)
	}
	dsn, err := dsnFor(e.base, name)
	if err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	db := &DB{Name: name, DSN: dsn, Pool: pool}
	e.mu.Lock()
	e.dbs = append(e.dbs, db)
	e.mu.Unlock()
	if withPgq {
		if err := createExtension(ctx, pool); err != nil {
			return nil, fmt.Errorf("bench: create extension pgq in %s: %w", name, err)
		}
	}
	return db, nil
}

var extMu sync.Mutex

// createExtension serialises create extension pgq (it creates
// cluster-wide roles; concurrent creations race on them).
func createExtension(ctx context.Context, pool *pgxpool.Pool) error {
	extMu.Lock()
	defer extMu.Unlock()
	for attempt := 1; ; attempt++ {
		_, err := pool.Exec(ctx, "create extension if not exists pgq")
		var pe *pgconn.PgError
		if err == nil || !errors.As(err, &pe) || pe.Code != "23505" || attempt == 5 {
			return err
		}
	}
}

// DropDB closes the pool and drops the database.
func (e *Env) DropDB(db *DB) {
	e.mu.Lock()
	for i, d := range e.dbs {
		if d == db {
			e.dbs = append(e.dbs[:i], e.dbs[i+1:]...)
			break
		}
	}
	e.mu.Unlock()
	e.drop(db)
}

func (e *Env) drop(db *DB) {
	db.Pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, e.base)
	if err != nil {
		return
	}
	defer admin.Close(ctx)
	_, _ = admin.Exec(ctx, "drop database if exists "+pgx.Identifier{db.Name}.Sanitize()+" with (force)")
}

// Close drops every scratch database and stops a throwaway cluster.
func (e *Env) Close() {
	e.mu.Lock()
	dbs := e.dbs
	e.dbs = nil
	e.mu.Unlock()
	for _, db := range dbs {
		e.drop(db)
	}
	if e.cluster != nil {
		e.cluster.Close()
	}
}

// ServerInfo describes the server for the report.
type ServerInfo struct {
	Version  string `json:"version"`
	PgqVer   string `json:"pgq_version,omitempty"`
	Settings string `json:"settings"`
}

func (e *Env) serverInfo(ctx context.Context, db *DB) ServerInfo {
	var si ServerInfo
	_ = db.Pool.QueryRow(ctx, "select current_setting('server_version')").Scan(&si.Version)
	_ = db.Pool.QueryRow(ctx, "select pgq.version()").Scan(&si.PgqVer)
	var fsync, sc, sb string
	_ = db.Pool.QueryRow(ctx, "select current_setting('fsync'), current_setting('synchronous_commit'), current_setting('shared_buffers')").Scan(&fsync, &sc, &sb)
	si.Settings = fmt.Sprintf("fsync=%s synchronous_commit=%s shared_buffers=%s", fsync, sc, sb)
	return si
}

// setMaxConnections raises max_connections of a throwaway cluster and
// restarts it (open pools reconnect).
func (e *Env) setMaxConnections(ctx context.Context, n int) error {
	if !e.Throwaway || e.cluster == nil {
		return errors.New("bench: only a throwaway cluster can be reconfigured")
	}
	admin, err := pgx.Connect(ctx, e.base)
	if err != nil {
		return err
	}
	_, err = admin.Exec(ctx, fmt.Sprintf("alter system set max_connections = %d", n))
	admin.Close(ctx)
	if err != nil {
		return err
	}
	return e.cluster.Restart()
}
