package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/pgq-go/pgq/copier"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/route"
)

const captureUsage = `usage: pgqctl copy capture add --dsn NODE TABLE --origin ID (--target-column C | --target-function F) [flags]
       pgqctl copy capture remove --dsn NODE TABLE
       pgqctl copy capture list --dsn NODE [--json]

Captures a table of a targeted-copy node: a trigger sends every INSERT,
UPDATE and DELETE of its rows to the nodes the row names (a column of
text or text[], or a function of the row), through the node's push
queue, in the writing transaction; the application needs no change.

  add     capture TABLE (schema.table or a name on the search_path), or
          regenerate its capture after ALTER TABLE; --origin is this
          node's id, --queue the node's push queue (default push_queue);
          --keys default to the primary key; --exclude leaves columns out
  remove  remove TABLE's capture (its triggers and functions)
  list    the captured tables and what is wrong with any of them (a
          column added since add, a missing trigger, a dropped table)

TRUNCATE of a captured table is refused. Rows a copier applies into a
captured table are not sent on again: its pull writes with
pgq_go.capture = off (see copier.CaptureSetting), as can other sessions.

Exit status: 0 done; 1 failed (list: a capture has a problem); 2 usage error.
`

func runCopyCapture(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return subcommands(ctx, "copy capture", captureUsage, map[string]runFunc{
		"add":    runCaptureAdd,
		"remove": runCaptureRemove,
		"list":   runCaptureList,
	}, args, stdout, stderr)
}

// oneTable parses args and returns the one positional TABLE.
func oneTable(f *cmdFlags, args []string) (string, int, bool) {
	pos, err := f.parse(args)
	if err != nil {
		return "", parseFailure(err), false
	}
	switch {
	case len(pos) == 0:
		return "", f.fail(usagef("name the TABLE")), false
	case len(pos) > 1:
		return "", f.fail(usagef("unexpected argument %q", pos[1])), false
	}
	if err := f.needDSN(); err != nil {
		return "", f.fail(err), false
	}
	return pos[0], 0, true
}

func runCaptureAdd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newCmdFlags("copy capture add", "usage: pgqctl copy capture add --dsn NODE TABLE --origin ID (--target-column C | --target-function F) [flags]\n\n"+
		"Captures TABLE, or regenerates its capture (after ALTER TABLE, or with new flags).", stderr)
	f.dsnFlag()
	f.timeoutFlag(time.Minute)
	cfg := copier.CaptureConfig{}
	var exclude, keys string
	f.StringVar(&cfg.Queue, "queue", "push_queue", "the node's push `queue`")
	f.StringVar(&cfg.Origin, "origin", "", "this node's `id` (sent as the events' origin)")
	f.StringVar(&cfg.TargetColumn, "target-column", "", "the `column` holding each row's targets (text or text[])")
	f.StringVar(&cfg.TargetFunction, "target-function", "", "the `function` of the row returning its targets (text or text[])")
	f.StringVar(&exclude, "exclude", "", "`columns` not to send, comma-separated")
	f.StringVar(&keys, "keys", "", "key `columns`, comma-separated (default: the primary key)")
	table, code, ok := oneTable(f, args)
	if !ok {
		return code
	}
	cfg.Table, cfg.ExcludeColumns, cfg.KeyColumns = table, splitList(exclude), splitList(keys)
	switch {
	case cfg.Origin == "":
		return f.fail(usagef("--origin is required: this node's id"))
	case cfg.TargetColumn == "" && cfg.TargetFunction == "":
		return f.fail(usagef("give --target-column or --target-function"))
	case cfg.TargetColumn != "" && cfg.TargetFunction != "":
		return f.fail(usagef("give --target-column or --target-function, not both"))
	}
	if err := route.ValidateNode(cfg.Origin); err != nil {
		return f.fail(usagef("--origin: %v", err))
	}
	if err := pgq.ValidateName("queue", cfg.Queue); err != nil {
		return f.fail(usagef("--queue: %v", err))
	}
	ctx, cancel := f.context(ctx)
	defer cancel()
	conn, err := connect(ctx, f.dsn)
	if err != nil {
		return f.fail(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := copier.AddCapture(ctx, conn, cfg); err != nil {
		return f.fail(err)
	}
	caps, err := copier.ListCaptures(ctx, conn)
	if err != nil {
		return f.fail(err)
	}
	for _, c := range caps {
		if c.Problem == "" && (c.Schema+"."+c.Table == table || c.Table == table) {
			fmt.Fprintf(stdout, "captured %s: queue %s, origin %s, targets from %s, keys %s, %d columns sent%s\n",
				c.EventTable, c.Queue, c.Origin, captureTargets(c), strings.Join(c.KeyColumns, ","), len(c.Columns), excludedNote(c))
			return 0
		}
	}
	fmt.Fprintf(stdout, "captured %s\n", table)
	return 0
}

func captureTargets(c copier.Capture) string {
	if c.TargetColumn != "" {
		return "column " + c.TargetColumn
	}
	return "function " + c.TargetFunction
}

func excludedNote(c copier.Capture) string {
	if len(c.ExcludeColumns) == 0 {
		return ""
	}
	return " (" + strings.Join(c.ExcludeColumns, ",") + " excluded)"
}

func runCaptureRemove(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newCmdFlags("copy capture remove", "usage: pgqctl copy capture remove --dsn NODE TABLE\n\n"+
		"Removes TABLE's capture: its writes are no longer sent; rows already on the targets stay.", stderr)
	f.dsnFlag()
	f.timeoutFlag(time.Minute)
	table, code, ok := oneTable(f, args)
	if !ok {
		return code
	}
	ctx, cancel := f.context(ctx)
	defer cancel()
	conn, err := connect(ctx, f.dsn)
	if err != nil {
		return f.fail(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := copier.RemoveCapture(ctx, conn, table); err != nil {
		return f.fail(err)
	}
	fmt.Fprintf(stdout, "capture of %s removed\n", table)
	return 0
}

// captureJSON is one capture in "copy capture list --json".
type captureJSON struct {
	Schema          string    `json:"schema"`
	Table           string    `json:"table"`
	Queue           string    `json:"queue"`
	Origin          string    `json:"origin"`
	TargetColumn    string    `json:"target_column,omitempty"`
	TargetFunction  string    `json:"target_function,omitempty"`
	KeyColumns      []string  `json:"key_columns"`
	ExcludeColumns  []string  `json:"exclude_columns"`
	Columns         []string  `json:"columns"`
	PayloadFunction string    `json:"payload_function"`
	TargetsFunction string    `json:"targets_function"`
	EventTable      string    `json:"event_table"`
	Updated         time.Time `json:"updated_at"`
	Problem         string    `json:"problem,omitempty"`
}

func runCaptureList(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newCmdFlags("copy capture list", "usage: pgqctl copy capture list --dsn NODE [--json]\n\n"+
		"Lists the captured tables. Exit status 1 when one has a problem (PROBLEM says what to do).", stderr)
	f.dsnFlag()
	f.jsonFlag()
	f.timeoutFlag(time.Minute)
	if code, ok := noArgs(f, args); !ok {
		return code
	}
	ctx, cancel := f.context(ctx)
	defer cancel()
	conn, err := connect(ctx, f.dsn)
	if err != nil {
		return f.fail(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	caps, err := copier.ListCaptures(ctx, conn)
	if err != nil {
		return f.fail(err)
	}
	problems := 0
	for _, c := range caps {
		if c.Problem != "" {
			problems++
		}
	}
	exit := 0
	if problems > 0 {
		exit = 1
		defer fmt.Fprintf(stderr, "pgqctl copy capture list: %d of %d captures have a problem\n", problems, len(caps))
	}
	if f.json {
		out := make([]captureJSON, 0, len(caps))
		for _, c := range caps {
			out = append(out, captureJSON{Schema: c.Schema, Table: c.Table, Queue: c.Queue, Origin: c.Origin,
				TargetColumn: c.TargetColumn, TargetFunction: c.TargetFunction, KeyColumns: nonNil(c.KeyColumns),
				ExcludeColumns: nonNil(c.ExcludeColumns), Columns: nonNil(c.Columns), PayloadFunction: c.PayloadFunc,
				TargetsFunction: c.TargetsFunc, EventTable: c.EventTable, Updated: c.Updated, Problem: c.Problem})
		}
		if err := writeJSON(stdout, out); err != nil {
			return f.fail(err)
		}
		return exit
	}
	if len(caps) == 0 {
		fmt.Fprintln(stdout, "no captured tables")
		return 0
	}
	t := &textTable{}
	t.row("TABLE", "QUEUE", "ORIGIN", "TARGETS", "KEYS", "EXCLUDED", "COLUMNS", "PROBLEM")
	for _, c := range caps {
		problem := c.Problem
		if problem == "" {
			problem = "-"
		}
		excluded := strings.Join(c.ExcludeColumns, ",")
		if excluded == "" {
			excluded = "-"
		}
		t.row(fitWidth(c.EventTable, maxNameWidth), fitWidth(c.Queue, maxNameWidth), c.Origin, fitWidth(captureTargets(c), maxNameWidth),
			fitWidth(strings.Join(c.KeyColumns, ","), maxNameWidth), fitWidth(excluded, maxNameWidth), fmt.Sprint(len(c.Columns)), fitWidth(problem, 200))
	}
	if err := t.write(stdout); err != nil {
		return f.fail(err)
	}
	return exit
}
