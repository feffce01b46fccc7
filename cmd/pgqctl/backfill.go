package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/copier"
	"github.com/pgq-go/pgq/route"
)

const backfillUsage = `usage: pgqctl copy backfill --dsn NODE --table TABLE --target ID [flags]

Sends the rows of a captured TABLE that are addressed to node ID now, for
a target that joined after the rows were written or a table captured
after it had rows: each as the capture trigger sends an insert, through
the node's push queue, in key-ordered chunks. Run it after the capture
addresses the rows to ID (its column or function names ID), so that the
trigger sends every later change: a row written while a chunk reads it is
ordered with the chunk (FOR SHARE), and the later event wins on ID.

Each chunk commits its progress with its rows: a backfill that stops (a
crash, Ctrl-C) continues after the last chunk when run again; --restart
starts from the first row.
`

func runCopyBackfill(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newCmdFlags("copy backfill", backfillUsage, stderr)
	f.dsnFlag()
	var table, target string
	var opts copier.BackfillOptions
	f.StringVar(&table, "table", "", "the captured `table` (schema.table or a name on the search_path)")
	f.StringVar(&target, "target", "", "the node `id` to send the rows to")
	f.IntVar(&opts.ChunkRows, "chunk-rows", 500, "rows per transaction")
	f.BoolVar(&opts.Restart, "restart", false, "start from the first row even if an earlier backfill stopped half way")
	verbose := f.Bool("v", false, "log each chunk")
	pos, err := f.parse(args)
	if err != nil {
		return parseFailure(err)
	}
	switch {
	case len(pos) > 0:
		return f.fail(usagef("unexpected argument %q", pos[0]))
	case table == "":
		return f.fail(usagef("--table is required"))
	case target == "":
		return f.fail(usagef("--target is required"))
	case opts.ChunkRows <= 0:
		return f.fail(usagef("--chunk-rows must be positive"))
	}
	if err := route.ValidateNode(target); err != nil {
		return f.fail(usagef("--target: %v", err))
	}
	if err := f.needDSN(); err != nil {
		return f.fail(err)
	}
	pc, err := pgxpool.ParseConfig(f.dsn)
	if err != nil {
		return f.fail(usagef("invalid connection string (check --dsn / DATABASE_URL)"))
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return f.fail(err)
	}
	defer pool.Close()
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	opts.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level, ReplaceAttr: replaceConnectErrors}))
	t0 := time.Now()
	res, err := copier.Backfill(ctx, pool, table, target, opts)
	if err != nil {
		return f.fail(err)
	}
	resumed := ""
	if res.Resumed {
		resumed = ", continuing an earlier backfill"
	}
	fmt.Fprintf(stdout, "%s: %d rows sent to %s in %d chunks (%v%s)\n", table, res.Rows, target, res.Chunks,
		time.Since(t0).Round(time.Millisecond), resumed)
	return 0
}
