package harness

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/remote"
)

// The remote INSERT-per-event cases (issue 13, goal 4) copy the first
// remoteRowsEvents events of ticks_q (batches of tickSize) into the
// destination table with a handler that runs one INSERT per event: with
// one round trip each (dst.Exec), through remote.Pipeline, and, as
// baselines, python-pgq's RemoteConsumer doing the same and our COPY
// handler on the same events.
const remoteRowsEvents = 50_000

//go:embed py/py_remote.py
var pyRemoteScript []byte

// insertDst is the INSERT every INSERT-per-event handler runs.
var insertDst = "insert into " + dstTable.Sanitize() + " (" + strings.Join(dstColumns, ", ") +
	") values ($1, $2, $3, $4, $5, $6, $7, $8)"

// insertHandler runs insertDst once per event, through the Pipe when pipe
// is set, else with a round trip each.
func insertHandler(pipe bool) remote.Handler {
	return remote.HandlerFunc(func(ctx context.Context, b *pgq.Batch, dst pgx.Tx) error {
		p := remote.Pipeline(dst)
		for ev, err := range b.Events(ctx) {
			if err != nil {
				return err
			}
			args := []any{ev.ID, ev.Time, ev.Type, ev.Data, ev.Extra1, ev.Extra2, ev.Extra3, ev.Extra4}
			if pipe {
				err = p.Exec(ctx, insertDst, args...)
			} else {
				_, err = dst.Exec(ctx, insertDst, args...)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// remoteRows copies the first want events of ticks_q into the emptied
// destination with a RemoteConsumer running h, and checks the row count.
func (f *consumeFixture) remoteRows(ctx context.Context, r *remoteFixture, want int, h remote.Handler) (time.Duration, error) {
	if err := r.reset(ctx); err != nil {
		return 0, err
	}
	name, err := f.register(ctx, ticksQueue, "remrows", f.ticksT0)
	if err != nil {
		return 0, err
	}
	defer f.unregister(ctx, ticksQueue, name)
	d, err := runUntil(ctx, want, func(hooks consumer.Hooks) (interface{ Run(context.Context) error }, error) {
		return remote.New(f.db.Pool, r.dst.Pool, remote.Config{
			Consumer: consumer.Config{Queue: ticksQueue, Name: name, Hooks: hooks},
		}, h)
	})
	if err != nil {
		return 0, err
	}
	return d, r.checkRows(ctx, want)
}

func (r *remoteFixture) checkRows(ctx context.Context, want int) error {
	var n int
	if err := r.dst.Pool.QueryRow(ctx, "select count(*) from "+dstTable.Sanitize()).Scan(&n); err != nil {
		return err
	}
	if n != want {
		return fmt.Errorf("%d rows on the destination, want %d", n, want)
	}
	return nil
}

// remotePython runs py/py_remote.py (system python3 with python3-pgq, as
// scripts/ensure-deps installs) over the same events and returns the time
// it reports.
func (f *consumeFixture) remotePython(ctx context.Context, r *remoteFixture, want int) (time.Duration, error) {
	if err := r.reset(ctx); err != nil {
		return 0, err
	}
	name, err := f.register(ctx, ticksQueue, "pyrows", f.ticksT0)
	if err != nil {
		return 0, err
	}
	defer f.unregister(ctx, ticksQueue, name)
	dir, err := os.MkdirTemp("", "pgq-bench-py")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	script := filepath.Join(dir, "py_remote.py")
	out := filepath.Join(dir, "result.txt")
	conf := filepath.Join(dir, "py_remote.ini")
	if err := os.WriteFile(script, pyRemoteScript, 0o644); err != nil {
		return 0, err
	}
	ini := fmt.Sprintf("[py_remote]\njob_name = %s\nsrc_db = %s\ndst_db = %s\nqueue_name = %s\nwant_events = %d\nout_file = %s\nlogfile = %s\npidfile = %s\nloop_delay = 0.01\n",
		name, f.db.DSN, r.dst.DSN, ticksQueue, want, out, filepath.Join(dir, "py.log"), filepath.Join(dir, "py.pid"))
	if err := os.WriteFile(conf, []byte(ini), 0o644); err != nil {
		return 0, err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, "/usr/bin/python3", script, conf)
	cmd.Dir = dir
	if o, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("python RemoteConsumer (needs python3-pgq and python3-psycopg2: make deps): %w: %s", err, o)
	}
	res, err := os.ReadFile(out)
	if err != nil {
		return 0, fmt.Errorf("python RemoteConsumer wrote no result: %w", err)
	}
	fields := strings.Fields(string(res))
	if len(fields) != 2 {
		return 0, fmt.Errorf("python RemoteConsumer result %q", res)
	}
	got, err1 := strconv.Atoi(fields[0])
	secs, err2 := strconv.ParseFloat(fields[1], 64)
	if err1 != nil || err2 != nil || got != want {
		return 0, fmt.Errorf("python RemoteConsumer result %q, want %d events", res, want)
	}
	return time.Duration(secs * float64(time.Second)), r.checkRows(ctx, want)
}

// remoteRowsRuns are the per-run rates of the remote INSERT-per-event
// cases.
type remoteRowsRuns struct {
	exec, pipe, copy, python []float64
}

func (f *consumeFixture) measureRemoteRows(ctx context.Context, r *remoteFixture, want int, runs *remoteRowsRuns) (string, error) {
	var ds [4]time.Duration
	var err error
	if ds[0], err = f.remoteRows(ctx, r, want, insertHandler(false)); err != nil {
		return "", fmt.Errorf("remote insert per event: %w", err)
	}
	if ds[1], err = f.remoteRows(ctx, r, want, insertHandler(true)); err != nil {
		return "", fmt.Errorf("remote insert per event, pipelined: %w", err)
	}
	if ds[2], err = f.remoteRows(ctx, r, want, copyHandler); err != nil {
		return "", fmt.Errorf("remote copy, batches of %d: %w", tickSize, err)
	}
	if ds[3], err = f.remotePython(ctx, r, want); err != nil {
		return "", err
	}
	runs.exec = append(runs.exec, rate(want, ds[0]))
	runs.pipe = append(runs.pipe, rate(want, ds[1]))
	runs.copy = append(runs.copy, rate(want, ds[2]))
	runs.python = append(runs.python, rate(want, ds[3]))
	return fmt.Sprintf("insert per event %s, pipelined %s, copy %s, python %s",
		formatRate(rate(want, ds[0])), formatRate(rate(want, ds[1])), formatRate(rate(want, ds[2])), formatRate(rate(want, ds[3]))), nil
}

func (s *suite) addRemoteRows(want int, runs remoteRowsRuns) {
	what := fmt.Sprintf("RemoteConsumer, one INSERT per event, %s events in batches of %d", count(want), tickSize)
	r := rateResult(what+", through remote.Pipeline", runs.pipe, runs.python,
		"python-pgq RemoteConsumer, one INSERT per event, same events", "≥ 5", 5)
	r.Events = want
	s.add(r)
	r = rateResult(what+", through remote.Pipeline, against COPY", runs.pipe, runs.copy,
		"RemoteConsumer + COPY, same events", "≥ 0.50", 0.5)
	r.Events = want
	s.add(r)
	r = rateResult(what+", one round trip each (dst.Exec)", runs.exec, runs.python,
		"python-pgq RemoteConsumer, same", "report", 0)
	r.Events = want
	s.add(r)
}
