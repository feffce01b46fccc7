package ticker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgq-go/pgq/internal/logging"

	"github.com/jackc/pgx/v5"
)

// LockKey is the key of the session-level advisory lock
// (pg_try_advisory_lock(LockKey)) that a Ticker holds on its ticking
// connection to each database. PostgreSQL scopes advisory locks to the
// database, so this one key gives one lock per database. Its value is the
// ASCII text "pgq_tick" read as a big-endian int64. pgqd does not take it:
// when switching from pgqd, stop pgqd first.
const LockKey int64 = 0x7067715f7469636b

// Ticker is a pgqd replacement: it ticks, moves retry events and runs
// maintenance on every database it serves, each on its own goroutine and
// connection. Create it with New and start it with Run.
type Ticker struct {
	cfg     atomic.Pointer[Config]
	reload  chan struct{}
	running atomic.Bool

	mu      sync.Mutex
	workers map[dbKey]*worker
}

// dbKey identifies a served database: the server's connection string and
// the database name.
type dbKey struct {
	conn string
	db   string
}

// New checks cfg and returns a Ticker ready to Run.
func New(cfg Config) (*Ticker, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	t := &Ticker{reload: make(chan struct{}, 1), workers: map[dbKey]*worker{}}
	t.cfg.Store(&cfg)
	return t, nil
}

func (t *Ticker) config() *Config { return t.cfg.Load() }

// Reload replaces the configuration of a Ticker, running or not: databases
// are added and removed, new periods apply from the next scheduled
// operation. Databases that stay keep their connection, their advisory
// lock and their stats. On a validation error nothing changes.
func (t *Ticker) Reload(cfg Config) error {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return err
	}
	t.cfg.Store(&cfg)
	select {
	case t.reload <- struct{}{}:
	default:
	}
	return nil
}

// Snapshot returns the stats of every served database, ordered by server
// and database name. Only a running Ticker serves databases: Snapshot is
// empty before Run has started serving them and again once Run has
// returned (Run stops every database's worker and drops its stats; a
// later Run starts the counters from zero). Take the Snapshot before
// cancelling Run's context to keep the final figures.
func (t *Ticker) Snapshot() []DatabaseStats {
	t.mu.Lock()
	out := make([]DatabaseStats, 0, len(t.workers))
	for _, w := range t.workers {
		out = append(out, w.st.get())
	}
	t.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Server != out[j].Server {
			return out[i].Server < out[j].Server
		}
		return out[i].Database < out[j].Database
	})
	return out
}

// Run serves the configured databases until ctx is done, then stops every
// goroutine it started (closing their connections, which releases the
// advisory locks) and returns nil. Database and connection failures are
// logged and retried, never returned. Run may be called again after it
// returned, not concurrently.
func (t *Ticker) Run(ctx context.Context) error {
	if !t.running.CompareAndSwap(false, true) {
		return errors.New("ticker: Run called while already running")
	}
	defer t.running.Store(false)
	defer t.stopAll()

	cfg := t.config()
	log := cfg.Logger
	log.Info("ticker: starting", "servers", len(cfg.Servers), "tick_period", cfg.TickPeriod)
	t.reconcile(ctx)

	check := time.NewTimer(cfg.CheckPeriod)
	defer check.Stop()
	statsT := time.NewTimer(cfg.StatsPeriod)
	defer statsT.Stop()
	for {
		select {
		case <-ctx.Done():
			t.config().Logger.Info("ticker: stopping")
			return nil
		case <-check.C:
			t.reconcile(ctx)
			check.Reset(t.config().CheckPeriod)
		case <-statsT.C:
			t.logStats()
			statsT.Reset(t.config().StatsPeriod)
		case <-t.reload:
			cfg := t.config()
			cfg.Logger.Info("ticker: configuration reloaded", "servers", len(cfg.Servers), "tick_period", cfg.TickPeriod)
			t.reconcile(ctx)
			t.mu.Lock()
			for _, w := range t.workers {
				w.poke()
			}
			t.mu.Unlock()
			check.Reset(cfg.CheckPeriod)
			statsT.Reset(cfg.StatsPeriod)
		}
	}
}

func (t *Ticker) logStats() {
	log := t.config().Logger
	for _, s := range t.Snapshot() {
		level := slog.LevelInfo
		if s.State == StateFailing {
			level = slog.LevelWarn
		}
		log.Log(context.Background(), level, "ticker: stats", s.logAttrs()...)
	}
}

func (t *Ticker) stopAll() {
	t.mu.Lock()
	ws := make([]*worker, 0, len(t.workers))
	for k, w := range t.workers {
		ws = append(ws, w)
		delete(t.workers, k)
	}
	t.mu.Unlock()
	for _, w := range ws {
		w.cancel()
	}
	for _, w := range ws {
		<-w.done
	}
}

// reconcile computes the databases to serve and starts and stops workers
// to match. A server whose discovery fails keeps its current workers.
func (t *Ticker) reconcile(ctx context.Context) {
	cfg := t.config()
	want := map[dbKey]bool{} // value: explicitly named
	keepServer := map[string]bool{}
	for _, s := range cfg.Servers {
		for _, db := range s.Databases {
			want[dbKey{s.ConnString, db}] = true
		}
		if s.Discover {
			dbs, err := discover(ctx, s, cfg.ConnectTimeout)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				cfg.Logger.Warn("ticker: database discovery failed; keeping the current list",
					"server", serverLabel(s.ConnString), "initial_database", s.InitialDatabase, logging.KeyErr, err)
				keepServer[s.ConnString] = true
				continue
			}
			for _, db := range dbs {
				k := dbKey{s.ConnString, db}
				if _, ok := want[k]; !ok {
					want[k] = false
				}
			}
		}
		if len(s.Databases) == 0 && !s.Discover {
			pc, _ := pgx.ParseConfig(s.ConnString) // validated by New/Reload
			want[dbKey{s.ConnString, pc.Database}] = true
		}
	}

	t.mu.Lock()
	var stop []*worker
	for k, w := range t.workers {
		if _, ok := want[k]; ok || keepServer[k.conn] {
			w.explicit.Store(want[k])
			continue
		}
		stop = append(stop, w)
		delete(t.workers, k)
	}
	for k, explicit := range want {
		if _, ok := t.workers[k]; ok {
			continue
		}
		w := newWorker(t, k, explicit)
		t.workers[k] = w
		wctx, cancel := context.WithCancel(ctx)
		w.cancel = cancel
		cfg.Logger.Info("ticker: serving database", "server", w.server, "db", k.db, "explicit", explicit)
		go w.run(wctx)
	}
	t.mu.Unlock()
	for _, w := range stop {
		cfg.Logger.Info("ticker: no longer serving database", "server", w.server, "db", w.key.db)
		w.cancel()
		<-w.done
	}
}

const sqlDiscover = `select datname from pg_catalog.pg_database
	where datallowconn and not datistemplate order by datname`

// discover lists the connectable non-template databases of a server.
func discover(ctx context.Context, s Server, timeout time.Duration) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pc, err := pgx.ParseConfig(s.ConnString)
	if err != nil {
		return nil, err
	}
	pc.Database = s.InitialDatabase
	conn, err := pgx.ConnectConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, sqlDiscover)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// serverLabel names a server in logs and stats without its credentials.
func serverLabel(connString string) string {
	pc, err := pgx.ParseConfig(connString)
	if err != nil {
		return "?"
	}
	if len(pc.Host) > 0 && pc.Host[0] == '/' {
		return pc.Host + ":" + strconv.Itoa(int(pc.Port))
	}
	return net.JoinHostPort(pc.Host, strconv.Itoa(int(pc.Port)))
}
