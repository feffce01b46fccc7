// Command sandbox runs a command against a throwaway PostgreSQL cluster with
// pgq, for `make demo`: it starts the cluster, creates the databases named
// by -db (with the pgq extension; "name:plain" for one without), exports
// their DSNs (DATABASE_URL for the first, PGQ_DSN_<NAME> for each, and
// PGQ_BASE_DSN for the server's postgres database), runs the command, and
// removes the cluster. When DATABASE_URL is already set, it just runs the
// command.
//
//	go run ./internal/sandbox -db demo -- go run ./examples/quickstart
//
// A -db item may be a range of numbered names: "n1..n16" (or "n1..16")
// stands for n1,n2,...,n16, at most 256 names per range; "x1..x3:plain"
// makes them all without pgq.
//
//	go run ./internal/sandbox -db hub,n1..n16 -- go run ./examples/targetedcopy/demo --nodes 16
//
// -max-connections sets the cluster's max_connections; by default it is
// 300, or 20 per database when that is more (many databases usually mean a
// process or more per database, each with a few connections).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/pgq-go/pgq/internal/pgcluster"
)

// maxRange bounds the names of one -db range, so that a typo such as
// n1..n10000 fails at once instead of creating databases for minutes.
const maxRange = 256

// connsPerDB is the default max_connections share of each database.
const connsPerDB = 20

func main() { os.Exit(run()) }

type database struct {
	name    string
	withPgq bool
}

func run() int {
	dbs := flag.String("db", "demo", "comma-separated databases to create (name, name:plain, or a range such as n1..n16)")
	maxConns := flag.Int("max-connections", 0, fmt.Sprintf("the cluster's max_connections (default: 300, or %d per database when more)", connsPerDB))
	flag.Parse()
	args := flag.Args()
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: sandbox [-db a,b:plain,n1..n4] [-max-connections N] -- command [args...]")
		return 2
	}
	list, err := parseDBs(*dbs)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sandbox: -db: %v\n", err)
		return 2
	}
	if *maxConns < 0 {
		fmt.Fprintf(os.Stderr, "sandbox: -max-connections %d: want 0 (automatic) or more\n", *maxConns)
		return 2
	}
	if *maxConns == 0 {
		*maxConns = max(300, connsPerDB*len(list))
	}
	env := os.Environ()
	if os.Getenv("DATABASE_URL") == "" {
		fmt.Fprintln(os.Stderr, "sandbox: starting a throwaway PostgreSQL cluster (set DATABASE_URL to use your own)")
		c, err := pgcluster.StartWith(pgcluster.Options{MaxConnections: *maxConns})
		if err != nil {
			fmt.Fprintf(os.Stderr, "sandbox: %v\n", err)
			return 1
		}
		defer c.Close()
		if len(list) > 8 {
			fmt.Fprintf(os.Stderr, "sandbox: creating %d databases\n", len(list))
		}
		env = append(env, "PGQ_BASE_DSN="+c.DSN("postgres"))
		for i, db := range list {
			dsn, err := c.CreateDB(context.Background(), db.name, db.withPgq)
			if err != nil {
				fmt.Fprintf(os.Stderr, "sandbox: %v\n", err)
				return 1
			}
			if i == 0 {
				env = append(env, "DATABASE_URL="+dsn)
			}
			env = append(env, "PGQ_DSN_"+strings.ToUpper(db.name)+"="+dsn)
		}
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// Signals reach the child through the terminal's process group; just outlive it.
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM)
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		fmt.Fprintf(os.Stderr, "sandbox: %v\n", err)
		return 1
	}
	return 0
}

// parseDBs expands a -db value: comma-separated items, each a name or a
// range (n1..n16), optionally followed by ":plain".
func parseDBs(spec string) ([]database, error) {
	var out []database
	seen := map[string]bool{}
	for item := range strings.SplitSeq(spec, ",") {
		names, kind, _ := strings.Cut(strings.TrimSpace(item), ":")
		if kind != "" && kind != "plain" {
			return nil, fmt.Errorf("%q: unknown kind %q (want name or name:plain)", item, kind)
		}
		expanded, err := expandRange(names)
		if err != nil {
			return nil, err
		}
		for _, n := range expanded {
			if seen[n] {
				return nil, fmt.Errorf("database %q named twice", n)
			}
			seen[n] = true
			out = append(out, database{name: n, withPgq: kind != "plain"})
		}
	}
	return out, nil
}

// expandRange turns "n1..n16" (or "n1..16") into n1..n16; a plain name
// stands for itself.
func expandRange(s string) ([]string, error) {
	lo, hi, ok := strings.Cut(s, "..")
	if !ok {
		if s == "" {
			return nil, errors.New("empty database name")
		}
		return []string{s}, nil
	}
	prefix, from, err := splitNumber(lo)
	if err != nil {
		return nil, fmt.Errorf("range %q: %w", s, err)
	}
	hiPrefix, to, err := splitNumber(hi)
	if err != nil {
		return nil, fmt.Errorf("range %q: %w", s, err)
	}
	if hiPrefix != "" && hiPrefix != prefix {
		return nil, fmt.Errorf("range %q: both ends must share the prefix %q", s, prefix)
	}
	if prefix == "" {
		return nil, fmt.Errorf("range %q: names need a prefix before the number (n1..n4)", s)
	}
	switch {
	case to < from:
		return nil, fmt.Errorf("range %q: ends before it starts", s)
	case to-from+1 > maxRange:
		return nil, fmt.Errorf("range %q: %d names, at most %d in a range", s, to-from+1, maxRange)
	}
	out := make([]string, 0, to-from+1)
	for i := from; i <= to; i++ {
		out = append(out, prefix+strconv.Itoa(i))
	}
	return out, nil
}

// splitNumber splits "n16" into "n" and 16.
func splitNumber(s string) (string, int, error) {
	i := len(s)
	for i > 0 && s[i-1] >= '0' && s[i-1] <= '9' {
		i--
	}
	if i == len(s) {
		return "", 0, fmt.Errorf("%q does not end in a number", s)
	}
	n, err := strconv.Atoi(s[i:])
	if err != nil {
		return "", 0, fmt.Errorf("%q: %w", s, err)
	}
	return s[:i], n, nil
}
