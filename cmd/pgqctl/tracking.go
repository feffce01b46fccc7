package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/copier"
	"github.com/pgq-go/pgq/remote"
)

func init() {
	register("tracking", "install or show the destination tracking schema (pgq_ext-compatible)", runTracking)
}

const trackingUsage = `usage: pgqctl tracking <install|status> --dsn DESTINATION [flags]

  install   create the pgq_ext-compatible tracking schema (and pgq_go's own
            tables) in a destination database; idempotent. Remote and serial
            consumers and the targeted copier install it themselves when
            their role may; run this as the owner when it may not.
  status    show what is installed and each consumer's recorded position
            (pgq_ext.completed_batch / completed_tick); exit 1 when the
            schema is missing.
`

func runTracking(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return subcommands(ctx, "tracking", trackingUsage, map[string]runFunc{
		"install": runTrackingInstall,
		"status":  runTrackingStatus,
	}, args, stdout, stderr)
}

// noArgs parses args for a command without positional arguments that
// needs a DSN.
func noArgs(f *cmdFlags, args []string) (int, bool) {
	pos, err := f.parse(args)
	if err != nil {
		return parseFailure(err), false
	}
	if len(pos) > 0 {
		return f.fail(usagef("unexpected argument %q", pos[0])), false
	}
	if err := f.needDSN(); err != nil {
		return f.fail(err), false
	}
	return 0, true
}

func runTrackingInstall(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newCmdFlags("tracking install", "usage: pgqctl tracking install --dsn DESTINATION [--copier]\n\nInstalls the tracking schema; running it again changes nothing.\nWith --copier also the targeted copier's tables (parked and held rows),\nfor a copier node or hub whose runtime role may not run DDL.", stderr)
	f.dsnFlag()
	withCopier := f.Bool("copier", false, "also install the targeted copier's tables")
	if code, ok := noArgs(f, args); !ok {
		return code
	}
	conn, err := connect(ctx, f.dsn)
	if err != nil {
		return f.fail(err)
	}
	defer conn.Close(context.Background())
	install := remote.Install
	if *withCopier {
		install = copier.Install
	}
	if err := install(ctx, conn); err != nil {
		return f.fail(err)
	}
	st, err := remote.Status(ctx, conn)
	if err != nil {
		return f.fail(err)
	}
	fmt.Fprintf(stdout, "tracking schema installed: %s, pgq_go migrations %s\n", pgqExtLabel(st.PgqExtVersion, st.PgqExtOurs), strings.Join(st.Migrations, ", "))
	return 0
}

// pgqExtLabel names a present pgq_ext for people: "pgq_ext 3.1 (installed
// by pgq-go)". A Skytools pgq_ext installed as plain SQL has no version.
func pgqExtLabel(version string, ours bool) string {
	switch {
	case ours:
		return "pgq_ext " + version + " (installed by pgq-go)"
	case version == "":
		return "pgq_ext (version unknown, not installed by pgq-go)"
	default:
		return "pgq_ext " + version + " (installed by Skytools)"
	}
}

// trackingReport is what "tracking status --json" prints.
type trackingReport struct {
	Installed     bool               `json:"installed"`
	PgqExtVersion string             `json:"pgq_ext_version"` // "" when unknown (pgq_ext installed as plain SQL)
	PgqExtOurs    bool               `json:"pgq_ext_installed_by_pgq_go"`
	Migrations    []string           `json:"migrations"`
	Positions     []trackingPosition `json:"positions"`
}

type trackingPosition struct {
	Consumer    string `json:"consumer"`
	SubConsumer string `json:"subconsumer"`
	Kind        string `json:"kind"` // "batch" (remote consumer) or "tick" (serial consumer)
	ID          int64  `json:"id"`
}

// sqlTrackingPositions lists every recorded position in pgq_ext.
const sqlTrackingPositions = `select consumer_id, subconsumer_id, 'batch', last_batch_id from pgq_ext.completed_batch
	union all
	select consumer_id, subconsumer_id, 'tick', last_tick_id from pgq_ext.completed_tick
	order by 1, 2, 3`

func runTrackingStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newCmdFlags("tracking status", "usage: pgqctl tracking status --dsn DESTINATION [--json]\n\nShows the tracking schema and the positions recorded in it.", stderr)
	f.dsnFlag()
	f.jsonFlag()
	if code, ok := noArgs(f, args); !ok {
		return code
	}
	conn, err := connect(ctx, f.dsn)
	if err != nil {
		return f.fail(err)
	}
	defer conn.Close(context.Background())
	st, err := remote.Status(ctx, conn)
	if err != nil {
		return f.fail(err)
	}
	rep := trackingReport{
		Installed: st.PgqExt, PgqExtVersion: st.PgqExtVersion, PgqExtOurs: st.PgqExtOurs,
		Migrations: st.Migrations, Positions: []trackingPosition{},
	}
	if rep.Migrations == nil {
		rep.Migrations = []string{}
	}
	if rep.Installed {
		rows, err := conn.Query(ctx, sqlTrackingPositions)
		if err == nil {
			rep.Positions, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (trackingPosition, error) {
				var p trackingPosition
				var id *int64
				err := r.Scan(&p.Consumer, &p.SubConsumer, &p.Kind, &id)
				if id != nil {
					p.ID = *id
				}
				return p, err
			})
		}
		if err != nil {
			return f.fail(fmt.Errorf("read positions: %w", err))
		}
	}
	if f.json {
		if err := writeJSON(stdout, rep); err != nil {
			return f.fail(err)
		}
	} else {
		printTracking(stdout, rep)
	}
	if !rep.Installed {
		return f.fail(errors.New("tracking schema not installed (pgqctl tracking install)"))
	}
	return 0
}

func printTracking(w io.Writer, rep trackingReport) {
	if !rep.Installed {
		fmt.Fprintln(w, "pgq_ext: not installed")
		return
	}
	fmt.Fprintln(w, pgqExtLabel(rep.PgqExtVersion, rep.PgqExtOurs))
	if len(rep.Migrations) > 0 {
		fmt.Fprintf(w, "pgq_go migrations: %s\n", strings.Join(rep.Migrations, ", "))
	} else {
		fmt.Fprintln(w, "pgq_go: not installed (no parked events or retry tags)")
	}
	fmt.Fprintln(w)
	if len(rep.Positions) == 0 {
		fmt.Fprintln(w, "no positions recorded")
		return
	}
	t := newTable(w)
	fmt.Fprintln(t, "CONSUMER\tSUBCONSUMER\tLAST BATCH\tLAST TICK")
	for _, p := range rep.Positions {
		batch, tick := "-", "-"
		if p.Kind == "batch" {
			batch = fmt.Sprint(p.ID)
		} else {
			tick = fmt.Sprint(p.ID)
		}
		fmt.Fprintf(t, "%s\t%s\t%s\t%s\n", p.Consumer, p.SubConsumer, batch, tick)
	}
	t.Flush()
}
