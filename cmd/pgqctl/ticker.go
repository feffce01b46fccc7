package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pgq-go/pgq/internal/pidfile"
	"github.com/pgq-go/pgq/metrics"
	"github.com/pgq-go/pgq/ticker"
)

func init() {
	register("ticker", "run the PgQ ticker daemon (pgqd replacement; reads pgqd.ini)", runTicker)
}

const tickerUsage = `usage: pgqctl ticker [flags] [pgqd.ini]

Runs the PgQ ticker, retry and maintenance on every served database: a
drop-in replacement for pgqd. "pgqd pgqd.ini" becomes "pgqctl ticker
pgqd.ini" (stop pgqd first: pgqd does not take the ticker's advisory lock).

Configuration, later wins: defaults < pgqd.ini [pgqd] section < environment
(PGQCTL_TICKER_<FLAG>, e.g. PGQCTL_TICKER_TICKER_PERIOD=0.1; DATABASE_URL
for --dsn) < flags. Periods are seconds (0.5) or durations (500ms).

Signals: SIGINT/SIGTERM stop gracefully, SIGHUP re-reads the configuration
(databases, periods) and reopens the logfile.

Flags may come before or after pgqd.ini.

flags:
`

// tickerFlags are the command line of "pgqctl ticker".
type tickerFlags struct {
	fs                 *flag.FlagSet
	config             string
	dsns               []string
	databases          string
	discover           bool
	initialDatabase    string
	tickerPeriod       string
	retryPeriod        string
	maintPeriod        string
	statsPeriod        string
	checkPeriod        string
	connectionLifetime string
	lockRetryPeriod    string
	logfile            string
	pidfile            string
	noNotify           bool
	verbose            bool
	quiet              bool
	daemonize          bool
	metricsAddr        string
}

func newTickerFlags(stderr io.Writer) *tickerFlags {
	f := &tickerFlags{fs: flag.NewFlagSet("pgqctl ticker", flag.ContinueOnError)}
	fs := f.fs
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, tickerUsage)
		fs.PrintDefaults()
	}
	fs.StringVar(&f.config, "config", "", "pgqd.ini to read (also the positional argument)")
	fs.Func("dsn", "connection string or URL of a server (`dsn`; repeatable; replaces base_connstr; env DATABASE_URL)", func(s string) error {
		f.dsns = append(f.dsns, s)
		return nil
	})
	fs.StringVar(&f.databases, "databases", "", "comma-separated databases to serve (database_list)")
	fs.BoolVar(&f.discover, "discover", false, "serve every database with pgq, found via --initial-database (pgqd's default when database_list is empty)")
	fs.StringVar(&f.initialDatabase, "initial-database", "", "database queried for the database list (initial_database; default template1)")
	fs.StringVar(&f.tickerPeriod, "ticker-period", "", "how often to tick (ticker_period; default 1)")
	fs.StringVar(&f.retryPeriod, "retry-period", "", "how often to move retry events (retry_period; default 30)")
	fs.StringVar(&f.maintPeriod, "maint-period", "", "how often to run maintenance (maint_period; default 120)")
	fs.StringVar(&f.statsPeriod, "stats-period", "", "how often to log stats (stats_period; default 30)")
	fs.StringVar(&f.checkPeriod, "check-period", "", "how often to look for new databases (check_period; default 60)")
	fs.StringVar(&f.connectionLifetime, "connection-lifetime", "", "reconnect after this long (connection_lifetime; default 3600)")
	fs.StringVar(&f.lockRetryPeriod, "lock-retry-period", "", "how often a standby tries to take the lock (default 5)")
	fs.StringVar(&f.logfile, "logfile", "", "also log to this file (logfile)")
	fs.StringVar(&f.pidfile, "pidfile", "", "write the process id here (pidfile)")
	fs.BoolVar(&f.noNotify, "no-notify", false, "do not NOTIFY consumers after ticks")
	fs.BoolVar(&f.verbose, "v", false, "verbose (debug) log")
	fs.BoolVar(&f.quiet, "q", false, "do not log to stderr (pgqd -q)")
	fs.BoolVar(&f.daemonize, "d", false, "pgqd's daemonize: not supported, run under a service manager")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "serve Prometheus metrics at http://`address`/metrics (e.g. :9187)")
	return f
}

// parse reads args, then fills unset flags from PGQCTL_TICKER_* (and
// DATABASE_URL for --dsn).
func (f *tickerFlags) parse(args []string, getenv func(string) string) error {
	rest, err := parseInterspersed(f.fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(rest) > 1:
		return fmt.Errorf("too many arguments: %q", rest)
	case len(rest) == 1 && f.config != "" && f.config != rest[0]:
		return errors.New("give the config file once: --config or the argument")
	case len(rest) == 1:
		f.config = rest[0]
	}
	set := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	f.fs.VisitAll(func(fl *flag.Flag) {
		if set[fl.Name] || err != nil {
			return
		}
		env := "PGQCTL_TICKER_" + strings.ToUpper(strings.ReplaceAll(fl.Name, "-", "_"))
		v := getenv(env)
		if v == "" && fl.Name == "dsn" {
			env, v = "DATABASE_URL", getenv("DATABASE_URL")
		}
		if v != "" {
			if e := f.fs.Set(fl.Name, v); e != nil {
				err = fmt.Errorf("%s: %w", env, e)
			}
		}
	})
	if err != nil {
		return err
	}
	if f.daemonize {
		return errors.New("-d (daemonize) is not supported: run pgqctl ticker in the foreground under systemd or another service manager")
	}
	if f.config == "" && len(f.dsns) == 0 {
		return errors.New("nothing to serve: give a pgqd.ini (--config or argument) or --dsn (or DATABASE_URL)")
	}
	return nil
}

// daemonConfig is everything the daemon derives from ini + env + flags.
type daemonConfig struct {
	ticker  ticker.Config // Logger not set
	logfile string
	pidfile string
	notes   []string
}

// load builds the configuration; called at start and on every SIGHUP.
func (f *tickerFlags) load() (*daemonConfig, error) {
	ini := &pgqdINI{}
	if f.config != "" {
		var err error
		if ini, err = readPgqdINI(f.config); err != nil {
			return nil, err
		}
	}
	dc := &daemonConfig{notes: ini.Notes}
	tc := &dc.ticker

	server := ticker.Server{}
	if ini.BaseConnstr != nil {
		server.ConnString = *ini.BaseConnstr
	}
	if ini.InitialDatabase != nil {
		server.InitialDatabase = *ini.InitialDatabase
	}
	server.Databases = ini.DatabaseList
	// pgqd: an empty database_list means every database of the server.
	server.Discover = f.config != "" && len(ini.DatabaseList) == 0
	if f.databases != "" {
		server.Databases, server.Discover = splitList(f.databases), false
	}
	if f.discover {
		server.Discover = true
	}
	if f.initialDatabase != "" {
		server.InitialDatabase = f.initialDatabase
	}
	if len(f.dsns) == 0 {
		tc.Servers = []ticker.Server{server}
	}
	for _, dsn := range f.dsns {
		s := server
		s.ConnString = dsn
		tc.Servers = append(tc.Servers, s)
	}

	for _, p := range []struct {
		flag string
		ini  *time.Duration
		dst  *time.Duration
	}{
		{f.tickerPeriod, ini.TickerPeriod, &tc.TickPeriod},
		{f.retryPeriod, ini.RetryPeriod, &tc.RetryPeriod},
		{f.maintPeriod, ini.MaintPeriod, &tc.MaintPeriod},
		{f.statsPeriod, ini.StatsPeriod, &tc.StatsPeriod},
		{f.checkPeriod, ini.CheckPeriod, &tc.CheckPeriod},
		{f.connectionLifetime, ini.ConnectionLifetime, &tc.ConnectionLifetime},
		{f.lockRetryPeriod, nil, &tc.LockRetryPeriod},
	} {
		if p.ini != nil {
			*p.dst = *p.ini
		}
		if p.flag != "" {
			d, err := parseSeconds(p.flag)
			if err != nil {
				return nil, err
			}
			*p.dst = d
		}
	}
	tc.DisableNotify = f.noNotify
	if ini.Logfile != nil {
		dc.logfile = *ini.Logfile
	}
	if ini.Pidfile != nil {
		dc.pidfile = *ini.Pidfile
	}
	if f.logfile != "" {
		dc.logfile = f.logfile
	}
	if f.pidfile != "" {
		dc.pidfile = f.pidfile
	}
	return dc, nil
}

// logSink writes to stderr (unless quiet) and to a logfile that SIGHUP
// reopens (for logrotate).
type logSink struct {
	mu     sync.Mutex
	stderr io.Writer // nil when quiet
	path   string
	file   *os.File
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stderr != nil {
		_, _ = l.stderr.Write(p)
	}
	if l.file != nil {
		_, _ = l.file.Write(p)
	}
	return len(p), nil
}

func (l *logSink) open(path string) error {
	var f *os.File
	if path != "" {
		var err error
		if f, err = os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err != nil {
			return err
		}
	}
	l.mu.Lock()
	old := l.file
	l.file, l.path = f, path
	l.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

func runTicker(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newTickerFlags(stderr)
	if err := f.parse(args, os.Getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "pgqctl ticker: %v\n", err)
		return exitUsage
	}
	dc, err := f.load()
	if err != nil {
		fmt.Fprintf(stderr, "pgqctl ticker: %v\n", err)
		return 1
	}
	sink := &logSink{stderr: stderr}
	if f.quiet {
		sink.stderr = nil
	}
	if err := sink.open(dc.logfile); err != nil {
		fmt.Fprintf(stderr, "pgqctl ticker: logfile: %v\n", err)
		return 1
	}
	defer sink.open("")
	level := slog.LevelInfo
	if f.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(sink, &slog.HandlerOptions{Level: level, ReplaceAttr: replaceConnectErrors}))
	for _, n := range dc.notes {
		log.Info(n)
	}
	dc.ticker.Logger = log
	tk, err := ticker.New(dc.ticker)
	if err != nil {
		fmt.Fprintf(stderr, "pgqctl ticker: %v\n", err)
		return 1
	}
	if f.metricsAddr != "" {
		stopMetrics, err := serveMetrics(f.metricsAddr, log, metrics.NewTickerCollector(tk))
		if err != nil {
			fmt.Fprintf(stderr, "pgqctl ticker: %v\n", err)
			return 1
		}
		defer stopMetrics()
	}
	if dc.pidfile != "" {
		if err := pidfile.Claim(dc.pidfile); err != nil {
			hint := ""
			if errors.As(err, new(*pidfile.RunningError)) {
				hint = " (another ticker or pgqd?)"
			}
			fmt.Fprintf(stderr, "pgqctl ticker: %v%s\n", err, hint)
			return 1
		}
		defer pidfile.Release(dc.pidfile)
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	done := make(chan error, 1)
	go func() { done <- tk.Run(ctx) }()
	for {
		select {
		case err := <-done:
			if err != nil {
				log.Error("ticker stopped", "err", err)
				return 1
			}
			log.Info("ticker stopped")
			return 0
		case <-hup:
			reload(f, sink, log, tk)
		}
	}
}

// reload applies a re-read configuration; on error the old one stays.
func reload(f *tickerFlags, sink *logSink, log *slog.Logger, tk *ticker.Ticker) {
	dc, err := f.load()
	if err == nil {
		err = sink.open(dc.logfile)
	}
	if err == nil {
		dc.ticker.Logger = log
		err = tk.Reload(dc.ticker)
	}
	if err != nil {
		log.Error("reload failed; keeping the running configuration", "err", err)
		return
	}
	for _, n := range dc.notes {
		log.Info(n)
	}
	log.Info("reloaded configuration", "config", f.config)
}
