package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
)

// This file holds what the admin and status commands share: flag sets
// that report usage errors (exit 2) without stack traces, --dsn with the
// DATABASE_URL fallback, --json, and output helpers.

// usageError is a bad command line; commands turn it into exitUsage.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return usageError{fmt.Sprintf(format, args...)}
}

// cmdFlags is a subcommand's flag set plus the flags most commands share.
type cmdFlags struct {
	*flag.FlagSet
	name    string // "pgqctl queue create"
	dsn     string
	json    bool
	timeout time.Duration
	stderr  io.Writer
}

// newCmdFlags returns a flag set for command name (e.g. "queue create");
// usage is printed before the flag list on --help and on errors.
func newCmdFlags(name, usage string, stderr io.Writer) *cmdFlags {
	f := &cmdFlags{FlagSet: flag.NewFlagSet("pgqctl "+name, flag.ContinueOnError), name: "pgqctl " + name, stderr: stderr}
	f.SetOutput(stderr)
	f.Usage = func() {
		fmt.Fprint(stderr, strings.TrimLeft(usage, "\n"))
		if !strings.HasSuffix(usage, "\n") {
			fmt.Fprintln(stderr)
		}
		fmt.Fprintln(stderr, "\nflags:")
		f.PrintDefaults()
	}
	return f
}

// dsnFlag adds --dsn (default: $DATABASE_URL).
func (f *cmdFlags) dsnFlag() {
	f.StringVar(&f.dsn, "dsn", "", "connection string or URL of the database (env DATABASE_URL)")
}

// jsonFlag adds --json.
func (f *cmdFlags) jsonFlag() {
	f.BoolVar(&f.json, "json", false, "print JSON instead of a table")
}

// timeoutFlag adds --timeout, a bound on the whole command.
func (f *cmdFlags) timeoutFlag(def time.Duration) {
	f.timeout = def
	f.Var(durationValue{&f.timeout}, "timeout", "give up after this long (`duration`: seconds or e.g. 30s; 0: never)")
}

// parse parses args with flags and positional arguments in any order
// ("queue create q --dsn X" works like "queue create --dsn X q") and
// returns the positional ones; "--" ends flag parsing.
func (f *cmdFlags) parse(args []string) ([]string, error) {
	pos, err := parseInterspersed(f.FlagSet, args)
	if err != nil {
		return nil, err
	}
	if f.dsn == "" {
		f.dsn = os.Getenv("DATABASE_URL")
	}
	return pos, nil
}

// parseInterspersed parses args into fs with flags and positional
// arguments in any order and returns the positional ones; "--" ends flag
// parsing. Every pgqctl command parses its command line this way.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		// flag.Parse stops at "--" (consumed) or at the first non-flag.
		if len(rest) == 0 {
			break
		}
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	return pos, nil
}

// needDSN is the usage error for a command run without a database.
func (f *cmdFlags) needDSN() error {
	if f.dsn == "" {
		return usagef("no database: give --dsn or set DATABASE_URL")
	}
	return nil
}

// context applies --timeout.
func (f *cmdFlags) context(ctx context.Context) (context.Context, context.CancelFunc) {
	if f.timeout > 0 {
		return context.WithTimeout(ctx, f.timeout)
	}
	return context.WithCancel(ctx)
}

// fail reports err and returns the exit code: 0 for --help, exitUsage
// for usage errors, 1 otherwise.
func (f *cmdFlags) fail(err error) int {
	return failure(f.stderr, f.name, err)
}

func failure(stderr io.Writer, name string, err error) int {
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "%s: %v\nRun '%s --help' for usage.\n", name, err, name)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "%s: %v\n", name, readableConnectError(err))
		return 1
	}
}

// parseFailure is for errors of flag.Parse, which has already printed the
// message and the usage: just the exit code.
func parseFailure(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return exitUsage
}

// connect opens one connection to dsn.
func connect(ctx context.Context, dsn string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx's message may quote the DSN, password included.
		return nil, usagef("invalid connection string (check --dsn / DATABASE_URL)")
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, readableConnectError(err)
	}
	return conn, nil
}

// subcommands dispatches "pgqctl <group> <sub> ...".
func subcommands(ctx context.Context, group, usage string, subs map[string]runFunc, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	run, ok := subs[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "pgqctl %s: unknown subcommand %q\n\n%s", group, args[0], usage)
		return exitUsage
	}
	return run(ctx, args[1:], stdout, stderr)
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// newTable returns a tabwriter for a human table; Flush it.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// seconds is a duration in JSON: seconds as a number.
type seconds time.Duration

func (s seconds) MarshalJSON() ([]byte, error) {
	return []byte(strconv.FormatFloat(math.Round(time.Duration(s).Seconds()*1000)/1000, 'f', -1, 64)), nil
}

func (s *seconds) UnmarshalJSON(b []byte) error {
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("seconds: %w", err)
	}
	*s = seconds(f * float64(time.Second))
	return nil
}

// fmtDur formats a duration for a table: short and roughly as precise as
// an operator needs ("850ms", "4.2s", "3m05s", "2h10m", "3d04h").
func fmtDur(d time.Duration) string {
	neg := ""
	if d < 0 {
		neg, d = "-", -d
	}
	var s string
	switch {
	case d == 0:
		s = "0s"
	case d < time.Second:
		s = fmt.Sprintf("%dms", d.Milliseconds())
	case d < 10*time.Second:
		s = fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Minute:
		s = fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		s = fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		s = fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		s = fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
	}
	return neg + s
}

// parseDuration reads seconds ("1", "0.5") or a Go duration ("500ms");
// zero is allowed, negative is not.
func parseDuration(v string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if f < 0 || f > 1e9 || math.IsNaN(f) {
			return 0, fmt.Errorf("%q: want a non-negative number of seconds (at most 1e9)", v)
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(v)
	switch {
	case err != nil:
		return 0, fmt.Errorf("%q: want seconds (e.g. 1 or 0.5) or a duration (e.g. 500ms, 2h)", v)
	case d < 0:
		return 0, fmt.Errorf("%q is negative: want a non-negative duration", v)
	}
	return d, nil
}

// durationValue is a flag.Value for parseDuration.
type durationValue struct{ d *time.Duration }

func (v durationValue) String() string {
	if v.d == nil {
		return ""
	}
	return v.d.String()
}

func (v durationValue) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		return err
	}
	*v.d = d
	return nil
}

// optDuration, optInt and optBool are flags that remember whether they
// were given (for pgq.QueueConfig's pointer fields).
type optDuration struct{ p **time.Duration }

func (v optDuration) String() string { return "" }
func (v optDuration) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		return err
	}
	*v.p = &d
	return nil
}

type optInt struct{ p **int }

func (v optInt) String() string { return "" }
func (v optInt) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("%q: want an integer", s)
	}
	*v.p = &n
	return nil
}

type optBool struct{ p **bool }

func (v optBool) String() string   { return "" }
func (v optBool) IsBoolFlag() bool { return true }
func (v optBool) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("%q: want true or false", s)
	}
	*v.p = &b
	return nil
}

// int64List is a repeatable flag of integers, also comma-separated.
type int64List struct{ p *[]int64 }

func (v int64List) String() string { return "" }
func (v int64List) Set(s string) error {
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return fmt.Errorf("%q: want integers", s)
		}
		*v.p = append(*v.p, n)
	}
	return nil
}

// stringList is a repeatable string flag.
type stringList struct{ p *[]string }

func (v stringList) String() string { return "" }
func (v stringList) Set(s string) error {
	*v.p = append(*v.p, s)
	return nil
}
