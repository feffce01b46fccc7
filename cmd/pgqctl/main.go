// Command pgqctl is the operator's tool for PgQ: the ticker daemon (a pgqd
// replacement that reads pgqd.ini) and, over time, status, queue and
// consumer administration and benchmarks.
//
// Each subcommand lives in its own file and registers itself from an init
// function:
//
//	func init() { register("name", "one-line summary", runName) }
//
// where runName(ctx, args, stdout, stderr) returns the exit code: 0 on
// success, 1 on failure, exitUsage (2) on a usage error.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// exitUsage is the exit code of a usage error (bad flag, unknown command).
const exitUsage = 2

// runFunc runs a subcommand; ctx is cancelled on SIGINT/SIGTERM.
type runFunc func(ctx context.Context, args []string, stdout, stderr io.Writer) int

type command struct {
	summary string
	run     runFunc
}

var commands = map[string]command{}

// register adds a subcommand; called from init functions.
func register(name, summary string, run runFunc) {
	if _, dup := commands[name]; dup {
		panic("pgqctl: command registered twice: " + name)
	}
	commands[name] = command{summary: summary, run: run}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run dispatches to a subcommand.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (code int) {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			if c, ok := commands[args[1]]; ok {
				return c.run(ctx, []string{"--help"}, stdout, stderr)
			}
		}
		usage(stdout)
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "pgqctl: unknown command %q\n\n", args[0])
		usage(stderr)
		return exitUsage
	}
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(stderr, "pgqctl %s: internal error: %v\n", args[0], r)
			code = 1
		}
	}()
	return c.run(ctx, args[1:], stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: pgqctl <command> [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-12s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'pgqctl <command> --help' for a command's flags.")
}
