package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// pgqdINI is the [pgqd] section of a pgqd.ini, as pgqd reads it. Unset
// keys are nil/zero so that defaults and flags can fill them.
type pgqdINI struct {
	BaseConnstr        *string
	InitialDatabase    *string
	DatabaseList       []string // nil: not set or empty (pgqd: every database)
	TickerPeriod       *time.Duration
	RetryPeriod        *time.Duration
	MaintPeriod        *time.Duration
	StatsPeriod        *time.Duration
	CheckPeriod        *time.Duration
	ConnectionLifetime *time.Duration
	Logfile            *string
	Pidfile            *string

	// Notes are remarks for the log: ignored keys (syslog), unknown keys.
	Notes []string
}

// readPgqdINI reads a pgqd.ini file.
func readPgqdINI(path string) (*pgqdINI, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cfg, err := parsePgqdINI(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// parsePgqdINI parses pgqd's ini format: "[section]" headers, "key = value"
// lines, '#' and ';' comment lines, optional quotes around a value. Only
// the [pgqd] section is read, as pgqd does; it must be present.
func parsePgqdINI(r io.Reader) (*pgqdINI, error) {
	cfg := &pgqdINI{}
	sc := bufio.NewScanner(r)
	section, seen := "", false
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' {
			end := strings.IndexByte(line, ']')
			if end < 0 {
				return nil, fmt.Errorf("line %d: section header without ']': %q", n, line)
			}
			section = strings.TrimSpace(line[1:end])
			if section == "pgqd" {
				seen = true
			}
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("line %d: expected key = value, got %q", n, line)
		}
		if section == "" {
			return nil, fmt.Errorf("line %d: %q before any [section]", n, line)
		}
		if section != "pgqd" {
			continue
		}
		key = strings.ToLower(strings.TrimSpace(key))
		val = unquote(strings.TrimSpace(val))
		if err := cfg.set(key, val); err != nil {
			return nil, fmt.Errorf("line %d: %s: %w", n, key, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !seen {
		return nil, fmt.Errorf("no [pgqd] section")
	}
	return cfg, nil
}

func unquote(v string) string {
	if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
		return v[1 : len(v)-1]
	}
	return v
}

func (c *pgqdINI) set(key, val string) error {
	str := func(p **string) { *p = &val }
	dur := func(p **time.Duration) error {
		d, err := parseSeconds(val)
		if err != nil {
			return err
		}
		*p = &d
		return nil
	}
	switch key {
	case "base_connstr":
		str(&c.BaseConnstr)
	case "initial_database":
		str(&c.InitialDatabase)
	case "database_list":
		c.DatabaseList = splitList(val)
	case "logfile":
		val = expandHome(val)
		str(&c.Logfile)
	case "pidfile":
		val = expandHome(val)
		str(&c.Pidfile)
	case "ticker_period":
		return dur(&c.TickerPeriod)
	case "retry_period":
		return dur(&c.RetryPeriod)
	case "maint_period":
		return dur(&c.MaintPeriod)
	case "stats_period":
		return dur(&c.StatsPeriod)
	case "check_period":
		return dur(&c.CheckPeriod)
	case "connection_lifetime":
		return dur(&c.ConnectionLifetime)
	case "syslog", "syslog_ident", "syslog_facility":
		c.Notes = append(c.Notes, fmt.Sprintf("pgqd.ini: %s is ignored: pgqctl logs to stderr and logfile (use the service manager's journal for syslog)", key))
	default:
		c.Notes = append(c.Notes, fmt.Sprintf("pgqd.ini: unknown key %q ignored", key))
	}
	return nil
}

// parseSeconds reads a period as pgqd does, in seconds ("1", "0.25"); Go
// durations ("250ms") are accepted too.
func parseSeconds(v string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if f <= 0 || f > 1e9 {
			return 0, fmt.Errorf("%q: must be a positive number of seconds", v)
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q: want seconds (e.g. 1 or 0.5) or a duration (e.g. 500ms)", v)
	}
	return d, nil
}

// splitList splits pgqd's comma- (or space-) separated database_list.
func splitList(v string) []string {
	var out []string // nil when empty
	return append(out, strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })...)
}

func expandHome(p string) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, p[1:])
		}
	}
	return p
}
