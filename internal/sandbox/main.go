// Command sandbox runs a command against a throwaway PostgreSQL cluster with
// pgq, for `make demo`: it starts the cluster, creates the databases named
// by -db (with the pgq extension; "name:plain" for one without), exports
// their DSNs (DATABASE_URL for the first, PGQ_DSN_<NAME> for each, and
// PGQ_BASE_DSN for the server's postgres database), runs the command, and
// removes the cluster. When DATABASE_URL is already set, it just runs the
// command.
//
//	go run ./internal/sandbox -db demo -- go run ./examples/quickstart
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/pgq-go/pgq/internal/pgcluster"
)

func main() { os.Exit(run()) }

func run() int {
	dbs := flag.String("db", "demo", "comma-separated databases to create (name or name:plain)")
	flag.Parse()
	args := flag.Args()
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: sandbox [-db a,b:plain] -- command [args...]")
		return 2
	}
	env := os.Environ()
	if os.Getenv("DATABASE_URL") == "" {
		fmt.Fprintln(os.Stderr, "sandbox: starting a throwaway PostgreSQL cluster (set DATABASE_URL to use your own)")
		c, err := pgcluster.Start()
		if err != nil {
			fmt.Fprintf(os.Stderr, "sandbox: %v\n", err)
			return 1
		}
		defer c.Close()
		env = append(env, "PGQ_BASE_DSN="+c.DSN("postgres"))
		for i, spec := range strings.Split(*dbs, ",") {
			name, kind, _ := strings.Cut(spec, ":")
			dsn, err := c.CreateDB(context.Background(), name, kind != "plain")
			if err != nil {
				fmt.Fprintf(os.Stderr, "sandbox: %v\n", err)
				return 1
			}
			if i == 0 {
				env = append(env, "DATABASE_URL="+dsn)
			}
			env = append(env, "PGQ_DSN_"+strings.ToUpper(name)+"="+dsn)
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
