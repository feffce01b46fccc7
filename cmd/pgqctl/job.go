package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/internal/pidfile"
	"github.com/pgq-go/pgq/job"
	"github.com/pgq-go/pgq/pgq"
)

func init() {
	register("job", "run Skytools jobs from their ini files (queue_mover, queue_splitter, simple_*consumer), show their status", runJob)
}

const jobUsage = `usage: pgqctl job <run|status> [flags] FILE.ini|DIR ...

  run FILE.ini|DIR ...      run the Skytools jobs of the files (a directory: its
                            *.ini files) in this process, each isolated
  status FILE.ini|DIR ...   each job's state, lag, pending events and last error

Run 'pgqctl job run --help' for the details.
`

const jobRunUsage = `usage: pgqctl job run [flags] FILE.ini|DIR ...

Runs Skytools' generic jobs from their unchanged ini files, as the Python
scripts would, all in this one process (what scriptmgr did): queue_mover,
queue_splitter, simple_consumer, simple_serial_consumer and
simple_local_consumer. A directory stands for its *.ini files.

A section is a job when it is named after its script ([queue_mover3],
[simple_consumer3], ... as Skytools names it), or has job_kind = <script>
(Skytools ignores that key), or, with --kind, is the only section of its
file. The keys are Skytools': job_name, src_db, dst_db, queue_name,
consumer_name, dst_queue_name, queue_field, dst_query, local_tracking_file,
logfile, pidfile, loop_delay, exception_sleep, connection_lifetime,
keepalive_stats, pgq_lazy_fetch, pgq_batch_collect_events,
pgq_batch_collect_interval, pgq_keep_lag, table_filter, consumer_filter.

Each job logs to its logfile (and to stderr unless -q), writes its pidfile
(refusing to start while another live process holds it) and a status
file beside it, for 'pgqctl job status'. A job that fails is restarted
after its exception_sleep; the others go on.

--register, --unregister, --rewind and --reset do that to every job and
exit, as the Skytools options do.

Signals: SIGINT/SIGTERM stop after the current batches; SIGHUP re-reads the
files (a bad file keeps the running jobs) and reopens the logfiles.

Flags may come before or after the files.
`

func runJob(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return subcommands(ctx, "job", jobUsage, map[string]runFunc{
		"run":    runJobRun,
		"status": runJobStatus,
	}, args, stdout, stderr)
}

type jobRunFlags struct {
	*cmdFlags
	kind         string
	ops          map[string]*bool
	quiet        bool
	verbose      bool
	restartDelay time.Duration
}

func newJobRunFlags(stderr io.Writer) *jobRunFlags {
	f := &jobRunFlags{cmdFlags: newCmdFlags("job run", jobRunUsage, stderr), ops: map[string]*bool{}}
	f.StringVar(&f.kind, "kind", "", "the Skytools script of a file's only section when neither its name nor job_kind says it")
	for _, op := range []string{"register", "unregister", "rewind", "reset"} {
		f.ops[op] = f.Bool(op, false, op+" every job's consumer (as the Skytools option), then exit")
	}
	f.BoolVar(&f.quiet, "q", false, "log only to the jobs' logfiles, not to stderr")
	f.BoolVar(&f.verbose, "v", false, "log at debug level")
	f.DurationVar(&f.restartDelay, "restart-delay", 0, "pause before a failed job starts again (default: its exception_sleep)")
	return f
}

func runJobRun(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newJobRunFlags(stderr)
	paths, err := f.parse(args)
	if err != nil {
		return parseFailure(err)
	}
	if len(paths) == 0 {
		return f.fail(usagef("want ini files or directories"))
	}
	var op string
	for name, set := range f.ops {
		if *set {
			if op != "" {
				return f.fail(usagef("--%s and --%s: one operation at a time", op, name))
			}
			op = name
		}
	}
	var kind job.Kind
	if f.kind != "" {
		if kind, err = job.ParseKind(f.kind); err != nil {
			return f.fail(usagef("--kind: %v", err))
		}
	}
	logs := newJobLogs(stderr, f.quiet, f.verbose)
	defer logs.close()
	load := func() ([]*job.Job, error) {
		// Each job's logger writes to its own logfile; loading twice
		// (SIGHUP) reuses the sinks, reopened.
		jobs, err := job.LoadAll(paths, job.LoadOptions{Kind: kind})
		if err != nil {
			return nil, err
		}
		out := make([]*job.Job, 0, len(jobs))
		for _, j := range jobs {
			cfg := j.Config()
			lg, err := logs.logger(cfg.Logfile)
			if err != nil {
				return nil, fmt.Errorf("job %s: logfile: %w", cfg.Name, err)
			}
			cfg.Logger, cfg.Remote.Consumer.Logger = lg, nil
			nj, err := job.New(cfg)
			if err != nil {
				return nil, err
			}
			for _, n := range j.Notes() {
				lg.Warn(n, "job", j.Name(), "source", j.Source())
			}
			out = append(out, nj)
		}
		return out, nil
	}
	jobs, err := load()
	if err != nil {
		return f.fail(err)
	}
	if op != "" {
		code := 0
		for _, j := range jobs {
			msg, err := j.Admin(ctx, op)
			if err != nil {
				fmt.Fprintf(stderr, "pgqctl job run: %v\n", readableConnectError(err))
				code = 1
				continue
			}
			fmt.Fprintf(stdout, "%s: %s\n", j.Name(), msg)
		}
		return code
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	main := logs.main()
	for {
		r, err := job.NewRunner(jobs, job.RunnerOptions{RestartDelay: f.restartDelay, Logger: main})
		if err != nil {
			return f.fail(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- r.Run(rctx) }()
		names := make([]string, 0, len(jobs))
		for _, j := range jobs {
			names = append(names, j.Name())
		}
		main.Info("jobs started", "jobs", names)
	wait:
		for {
			select {
			case err := <-done:
				cancel()
				if err != nil {
					return f.fail(err)
				}
				main.Info("jobs stopped")
				return 0
			case <-hup:
				main.Info("SIGHUP: re-reading the job files")
				next, err := load()
				if err != nil {
					main.Error("cannot reload; the jobs go on as they were", "err", err)
					continue
				}
				logs.reopen()
				cancel()
				if err := <-done; err != nil {
					return f.fail(err)
				}
				jobs = next
				break wait
			}
		}
	}
}

// jobLogs are the jobs' log sinks: stderr (unless quiet) plus each job's
// logfile, reopened on SIGHUP (logrotate).
type jobLogs struct {
	mu      sync.Mutex
	stderr  io.Writer
	level   slog.Level
	sinks   map[string]*logSink // by logfile path
	mainLog *slog.Logger
}

func newJobLogs(stderr io.Writer, quiet, verbose bool) *jobLogs {
	l := &jobLogs{stderr: stderr, sinks: map[string]*logSink{}, level: slog.LevelInfo}
	if quiet {
		l.stderr = nil
	}
	if verbose {
		l.level = slog.LevelDebug
	}
	return l
}

func (l *jobLogs) handler(w io.Writer) slog.Handler {
	return slog.NewTextHandler(w, &slog.HandlerOptions{Level: l.level, ReplaceAttr: replaceConnectErrors})
}

// main is the runner's own logger (stderr only).
func (l *jobLogs) main() *slog.Logger {
	if l.mainLog == nil {
		w := l.stderr
		if w == nil {
			w = io.Discard
		}
		l.mainLog = slog.New(l.handler(w))
	}
	return l.mainLog
}

// logger is a job's logger, writing to logfile too.
func (l *jobLogs) logger(logfile string) (*slog.Logger, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.sinks[logfile]
	if !ok {
		s = &logSink{stderr: l.stderr}
		if err := s.open(logfile); err != nil {
			return nil, err
		}
		l.sinks[logfile] = s
	}
	return slog.New(l.handler(s)), nil // job.New adds the job's name
}

func (l *jobLogs) reopen() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for path, s := range l.sinks {
		if err := s.open(path); err != nil {
			l.main().Error("cannot reopen logfile", "path", path, "err", err)
		}
	}
}

func (l *jobLogs) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.sinks {
		_ = s.open("")
	}
}

const jobStatusUsage = `usage: pgqctl job status [flags] FILE.ini|DIR ...

For each job of the files: whether it runs (its pidfile), its state and
last error (the status file 'pgqctl job run' writes beside the pidfile),
and, from the source database, its consumer's lag and pending events.
Exit status 1 when a job is not running, failing, or not registered.
`

// jobStatusRow is one job's line of 'pgqctl job status'.
type jobStatusRow struct {
	Name      string        `json:"name"`
	Kind      job.Kind      `json:"kind"`
	Queue     string        `json:"queue"`
	Consumer  string        `json:"consumer"`
	Running   bool          `json:"running"`
	PID       int           `json:"pid,omitempty"`
	State     job.State     `json:"state,omitempty"`
	Lag       time.Duration `json:"lag,omitempty"`
	Pending   *int64        `json:"pending_events,omitempty"`
	Batches   int64         `json:"batches,omitempty"`
	LastError string        `json:"last_error,omitempty"`
	Problem   string        `json:"problem,omitempty"`
}

func runJobStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newCmdFlags("job status", jobStatusUsage, stderr)
	f.jsonFlag()
	f.timeoutFlag(30 * time.Second)
	kindFlag := f.String("kind", "", "as for job run")
	paths, err := f.parse(args)
	if err != nil {
		return parseFailure(err)
	}
	if len(paths) == 0 {
		return f.fail(usagef("want ini files or directories"))
	}
	var kind job.Kind
	if *kindFlag != "" {
		if kind, err = job.ParseKind(*kindFlag); err != nil {
			return f.fail(usagef("--kind: %v", err))
		}
	}
	jobs, err := job.LoadAll(paths, job.LoadOptions{Kind: kind})
	if err != nil {
		return f.fail(err)
	}
	ctx, cancel := f.context(ctx)
	defer cancel()
	rows := make([]jobStatusRow, 0, len(jobs))
	unhealthy := false
	for _, j := range jobs {
		row := jobStatus(ctx, j)
		if row.Problem != "" {
			unhealthy = true
		}
		rows = append(rows, row)
	}
	if f.json {
		if err := writeJSON(stdout, rows); err != nil {
			return f.fail(err)
		}
	} else {
		t := &textTable{}
		t.row("JOB", "KIND", "STATE", "PID", "LAG", "PENDING", "PROBLEM / LAST ERROR")
		for _, r := range rows {
			state, pid, lag, pending := string(r.State), "-", "-", "-"
			if !r.Running {
				state = "not running"
			} else {
				pid = strconv.Itoa(r.PID)
			}
			if r.Pending != nil {
				lag, pending = r.Lag.Round(time.Millisecond).String(), strconv.FormatInt(*r.Pending, 10)
			}
			note := r.Problem
			if note == "" {
				note = r.LastError
			} else if r.LastError != "" {
				note += "; last error: " + r.LastError
			}
			t.row(fitWidth(r.Name, maxNameWidth), string(r.Kind), state, pid, lag, pending, fitWidth(note, 160))
		}
		if err := t.write(stdout); err != nil {
			return f.fail(err)
		}
	}
	if unhealthy {
		return 1
	}
	return 0
}

// jobStatus gathers what is known of j.
func jobStatus(ctx context.Context, j *job.Job) jobStatusRow {
	cfg := j.Config()
	r := jobStatusRow{Name: j.Name(), Kind: j.Kind(), Queue: cfg.Remote.Consumer.Queue, Consumer: cfg.Remote.Consumer.Name}
	var problems []string
	if cfg.Pidfile == "" {
		problems = append(problems, "no pidfile in the ini: cannot tell whether it runs")
	} else if pid, alive := pidfile.Alive(cfg.Pidfile); alive {
		r.Running, r.PID = true, pid
		if st, err := job.ReadStatus(job.StatusPath(cfg.Pidfile)); err == nil && st.PID == pid {
			r.State, r.Batches, r.LastError = st.State, st.Batches, st.LastError
			if st.State == job.StateFailed {
				problems = append(problems, "failing")
			}
		}
	} else {
		problems = append(problems, "not running")
		if st, err := job.ReadStatus(job.StatusPath(cfg.Pidfile)); err == nil {
			r.LastError = st.LastError
		}
	}
	conn, err := connect(ctx, cfg.SrcDB)
	if err != nil {
		problems = append(problems, "src_db: "+err.Error())
	} else {
		defer conn.Close(context.WithoutCancel(ctx))
		ci, err := pgq.GetConsumerInfo(ctx, conn, r.Queue, r.Consumer)
		switch {
		case errors.Is(err, pgq.ErrQueueNotFound):
			problems = append(problems, fmt.Sprintf("queue %s does not exist on src_db", r.Queue))
		case errors.Is(err, pgx.ErrNoRows), errors.Is(err, pgq.ErrNotRegistered):
			problems = append(problems, fmt.Sprintf("consumer %s is not registered on queue %s (pgqctl job run --register)", r.Consumer, r.Queue))
		case err != nil:
			problems = append(problems, "src_db: "+readableConnectError(err).Error())
		default:
			r.Lag, r.Pending = ci.Lag, &ci.PendingEvents
		}
	}
	for i, p := range problems {
		if i > 0 {
			r.Problem += "; "
		}
		r.Problem += p
	}
	return r
}
