package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/stretchr/testify/require"
)

func TestParsePgqdINI(t *testing.T) {
	cfg, err := readPgqdINI(pgtest.FixturePath(t, "skytools/pgqd.ini"))
	require.NoError(t, err)
	home, err := os.UserHomeDir()
	require.NoError(t, err)
	require.Equal(t, filepath.Join(home, "log/pgqd.log"), *cfg.Logfile)
	require.Equal(t, "/var/run/postgresql/pgqd.pid", *cfg.Pidfile, "quotes are stripped")
	require.Equal(t, "host=127.0.0.1 port=5432 user=postgres", *cfg.BaseConnstr, "the value keeps its inner '='")
	require.Equal(t, "postgres", *cfg.InitialDatabase)
	require.Equal(t, []string{"db1", "db2", "db3"}, cfg.DatabaseList)
	require.Equal(t, 60*time.Second, *cfg.CheckPeriod)
	require.Equal(t, 30*time.Second, *cfg.RetryPeriod)
	require.Equal(t, 120*time.Second, *cfg.MaintPeriod)
	require.Equal(t, 500*time.Millisecond, *cfg.TickerPeriod)
	require.Equal(t, 30*time.Second, *cfg.StatsPeriod)
	require.Equal(t, time.Hour, *cfg.ConnectionLifetime)
	require.Len(t, cfg.Notes, 2)
	require.Contains(t, cfg.Notes[0], "syslog is ignored")
}

func TestParsePgqdINIErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"[other]\nx = 1\n", "no [pgqd] section"},
		{"base_connstr = x\n", "line 1"},
		{"[pgqd]\nticker_period = fast\n", "line 2: ticker_period"},
		{"[pgqd]\nretry_period = -1\n", "retry_period"},
		{"[pgqd]\njust words\n", "line 2: expected key = value"},
		{"[pgqd\n", "line 1: section header"},
	} {
		_, err := parsePgqdINI(strings.NewReader(tc.in))
		require.ErrorContains(t, err, tc.want, "input %q", tc.in)
	}
}

func TestParsePgqdINIMinimal(t *testing.T) {
	// The sample shipped with pgqd, comments and all: only logfile/pidfile set.
	cfg, err := parsePgqdINI(strings.NewReader("[pgqd]\n\n# where to log\nlogfile = /tmp/x.log\n\n#base_connstr =\n#ticker_period = 1\n pidfile = /tmp/x.pid \nunknown_key = 3\nticker_period = 250ms\n"))
	require.NoError(t, err)
	require.Nil(t, cfg.BaseConnstr)
	require.Nil(t, cfg.DatabaseList)
	require.Equal(t, "/tmp/x.pid", *cfg.Pidfile)
	require.Equal(t, 250*time.Millisecond, *cfg.TickerPeriod)
	require.Len(t, cfg.Notes, 1)
	require.Contains(t, cfg.Notes[0], `unknown key "unknown_key"`)
}

func TestTickerFlagsPrecedence(t *testing.T) {
	env := map[string]string{"PGQCTL_TICKER_RETRY_PERIOD": "7", "DATABASE_URL": "postgres://u@h/envdb"}
	getenv := func(k string) string { return env[k] }

	f := newTickerFlags(&strings.Builder{})
	require.NoError(t, f.parse([]string{"--ticker-period", "100ms", pgtest.FixturePath(t, "skytools/pgqd.ini")}, getenv))
	dc, err := f.load()
	require.NoError(t, err)
	require.Equal(t, 100*time.Millisecond, dc.ticker.TickPeriod, "flag beats ini")
	require.Equal(t, 7*time.Second, dc.ticker.RetryPeriod, "env beats ini")
	require.Equal(t, 120*time.Second, dc.ticker.MaintPeriod, "ini")
	require.Len(t, dc.ticker.Servers, 1)
	s := dc.ticker.Servers[0]
	require.Equal(t, "postgres://u@h/envdb", s.ConnString, "DATABASE_URL is --dsn, which replaces base_connstr")
	require.Equal(t, []string{"db1", "db2", "db3"}, s.Databases)
	require.False(t, s.Discover)
	require.Equal(t, "/var/run/postgresql/pgqd.pid", dc.pidfile)

	// No database_list in the ini: every database, as pgqd does.
	dir := t.TempDir()
	ini := filepath.Join(dir, "p.ini")
	require.NoError(t, os.WriteFile(ini, []byte("[pgqd]\nbase_connstr = host=h1\n"), 0o644))
	f = newTickerFlags(&strings.Builder{})
	require.NoError(t, f.parse([]string{"--config", ini}, func(string) string { return "" }))
	dc, err = f.load()
	require.NoError(t, err)
	require.Equal(t, "host=h1", dc.ticker.Servers[0].ConnString)
	require.True(t, dc.ticker.Servers[0].Discover)

	// Only --dsn: that one database.
	f = newTickerFlags(&strings.Builder{})
	require.NoError(t, f.parse([]string{"--dsn", "dbname=a", "--dsn", "dbname=b host=h2"}, func(string) string { return "" }))
	dc, err = f.load()
	require.NoError(t, err)
	require.Len(t, dc.ticker.Servers, 2)
	require.False(t, dc.ticker.Servers[1].Discover)
	require.Empty(t, dc.ticker.Servers[1].Databases)

	for _, bad := range [][]string{{}, {"-d", "x.ini"}, {"a.ini", "b.ini"}, {"--nope"}} {
		f = newTickerFlags(&strings.Builder{})
		require.Error(t, f.parse(bad, func(string) string { return "" }), "%q", bad)
	}
}
