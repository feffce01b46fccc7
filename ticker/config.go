package ticker

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/pgq-go/pgq/internal/logging"

	"github.com/jackc/pgx/v5"
)

// Server is one PostgreSQL server whose databases the ticker serves.
//
// Which databases: Databases when set; every database found through
// InitialDatabase when Discover is set (both may be combined); otherwise the
// one database named in ConnString.
type Server struct {
	// ConnString is a libpq keyword/value string or URL (pgqd
	// base_connstr). Its database name, if any, is replaced by each served
	// database's name. Default "": libpq defaults and PG* environment.
	ConnString string

	// Databases is an explicit list of databases (pgqd database_list).
	// A listed database without pgq is reported and rechecked. Default: none.
	Databases []string

	// Discover serves every connectable, non-template database of the
	// server that has the pgq schema, rechecked every CheckPeriod (pgqd's
	// behaviour when database_list is empty). Default false.
	Discover bool

	// InitialDatabase is the database queried for the database list when
	// Discover is set (pgqd initial_database). Default "template1".
	InitialDatabase string
}

// Config configures a Ticker. Zero fields take their defaults.
type Config struct {
	// Servers lists the servers to serve (pgqd: one, from base_connstr).
	// Required: at least one.
	Servers []Server

	// TickPeriod is how often pgq.ticker runs per database (pgqd
	// ticker_period). Sub-second periods are fine. Default 1s.
	TickPeriod time.Duration

	// RetryPeriod is the longest time between two runs of retry
	// maintenance, which moves due retry events back into their queues
	// (pgqd retry_period). Unlike pgqd, the Ticker also runs it when the
	// next retry event is due (every tick round reads that time, one
	// index lookup) and then ticks the queues that got events back, so a
	// retried event returns within about a TickPeriod of its retry time
	// whatever RetryPeriod and the queue's thresholds say. Default 30s.
	RetryPeriod time.Duration

	// MaintPeriod is how often pgq.maint_operations() runs: table rotation,
	// extra maintenance functions, vacuum (pgqd maint_period). Default 120s.
	MaintPeriod time.Duration

	// CheckPeriod is how often discovery looks for new and dropped databases
	// and how often a database without pgq is checked again (pgqd
	// check_period). Default 60s.
	CheckPeriod time.Duration

	// StatsPeriod is how often per-database stats are logged at Info level
	// (pgqd stats_period). Default 30s.
	StatsPeriod time.Duration

	// ConnectionLifetime is how long a ticking connection is used before it
	// is closed and reopened (pgqd connection_lifetime). Default 3600s.
	ConnectionLifetime time.Duration

	// LockRetryPeriod is how often a standby (another ticker holds the
	// database's advisory lock) tries to take over. pgqd has no equivalent:
	// it takes no lock. Default 5s.
	LockRetryPeriod time.Duration

	// MinBackoff and MaxBackoff bound the pause after a failure (connection
	// refused, server restart, SQL error) before reconnecting; it doubles
	// from MinBackoff up to MaxBackoff while failures continue. Defaults
	// 1s and 30s (pgqd: a fixed pause).
	MinBackoff time.Duration
	MaxBackoff time.Duration

	// ConnectTimeout bounds one connection attempt or discovery query.
	// Default 10s.
	ConnectTimeout time.Duration

	// DisableNotify turns off the NOTIFY sent on pgq.NotifyChannel(queue)
	// after each tick (payload: the tick id), which wakes consumers. pgqd
	// sends none. Default false (notify).
	DisableNotify bool

	// Logger receives errors (Warn/Error), state changes and stats (Info)
	// and per-operation detail (Debug). Default: slog.Default(), with
	// records below Warn discarded (as every pgq-go component).
	Logger *slog.Logger
}

// Defaults, as documented on Config.
const (
	DefaultTickPeriod         = time.Second
	DefaultRetryPeriod        = 30 * time.Second
	DefaultMaintPeriod        = 120 * time.Second
	DefaultCheckPeriod        = 60 * time.Second
	DefaultStatsPeriod        = 30 * time.Second
	DefaultConnectionLifetime = 3600 * time.Second
	DefaultLockRetryPeriod    = 5 * time.Second
	DefaultMinBackoff         = time.Second
	DefaultMaxBackoff         = 30 * time.Second
	DefaultConnectTimeout     = 10 * time.Second
	DefaultInitialDatabase    = "template1"
)

func (c Config) withDefaults() Config {
	set := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	set(&c.TickPeriod, DefaultTickPeriod)
	set(&c.RetryPeriod, DefaultRetryPeriod)
	set(&c.MaintPeriod, DefaultMaintPeriod)
	set(&c.CheckPeriod, DefaultCheckPeriod)
	set(&c.StatsPeriod, DefaultStatsPeriod)
	set(&c.ConnectionLifetime, DefaultConnectionLifetime)
	set(&c.LockRetryPeriod, DefaultLockRetryPeriod)
	set(&c.MinBackoff, DefaultMinBackoff)
	set(&c.MaxBackoff, DefaultMaxBackoff)
	set(&c.ConnectTimeout, DefaultConnectTimeout)
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = c.MinBackoff
	}
	servers := make([]Server, len(c.Servers))
	for i, s := range c.Servers {
		if s.Discover && s.InitialDatabase == "" {
			s.InitialDatabase = DefaultInitialDatabase
		}
		s.Databases = append([]string(nil), s.Databases...)
		servers[i] = s
	}
	c.Servers = servers
	c.Logger = logging.Default(c.Logger)
	return c
}

func (c Config) validate() error {
	var errs []error
	if len(c.Servers) == 0 {
		errs = append(errs, errors.New("ticker: Config.Servers is empty: name at least one server"))
	}
	for name, d := range map[string]time.Duration{
		"TickPeriod": c.TickPeriod, "RetryPeriod": c.RetryPeriod, "MaintPeriod": c.MaintPeriod,
		"CheckPeriod": c.CheckPeriod, "StatsPeriod": c.StatsPeriod, "ConnectionLifetime": c.ConnectionLifetime,
		"LockRetryPeriod": c.LockRetryPeriod, "MinBackoff": c.MinBackoff, "MaxBackoff": c.MaxBackoff,
		"ConnectTimeout": c.ConnectTimeout,
	} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("ticker: Config.%s is negative (%v)", name, d))
		}
	}
	if c.TickPeriod > 0 && c.TickPeriod < time.Millisecond {
		errs = append(errs, fmt.Errorf("ticker: Config.TickPeriod %v is below 1ms", c.TickPeriod))
	}
	for i, s := range c.Servers {
		if _, err := pgx.ParseConfig(s.ConnString); err != nil {
			errs = append(errs, fmt.Errorf("ticker: Config.Servers[%d].ConnString: %w", i, err))
		}
		for j, db := range s.Databases {
			if db == "" {
				errs = append(errs, fmt.Errorf("ticker: Config.Servers[%d].Databases[%d] is empty", i, j))
			}
		}
	}
	return errors.Join(errs...)
}
