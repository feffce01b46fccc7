package job

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/internal/pidfile"
)

// State is where a job is in its life in a Runner.
type State string

// The states of a job.
const (
	StateStarting State = "starting" // connecting, before its first batch or idle look
	StateRunning  State = "running"  // consuming
	StateFailed   State = "failed"   // its last attempt failed; restarting after a pause
	StateStopped  State = "stopped"  // ended: the runner stopped, or a fatal error (LastError)
)

// Status is what a Runner knows of one job, and what `pgqctl job
// status` shows.
type Status struct {
	Name     string `json:"name"`
	Kind     Kind   `json:"kind"`
	Queue    string `json:"queue"`
	Consumer string `json:"consumer"`
	State    State  `json:"state"`
	// Since is when the job entered State.
	Since time.Time `json:"since"`
	// Batches and Events count what the job finished since it started.
	Batches int64 `json:"batches"`
	Events  int64 `json:"events"`
	// LastBatch is when the last batch finished; Lag is that batch's lag
	// (the age of its end tick when it was opened).
	LastBatch time.Time     `json:"last_batch,omitzero"`
	Lag       time.Duration `json:"lag"`
	// LastError is the last failure's message, LastErrorAt its time; they
	// stay after a recovery, for the operator to see.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// Restarts counts the times the job was started again after Run
	// ended with an error.
	Restarts int `json:"restarts"`
	// PID is the process running the job.
	PID int `json:"pid"`
}

// RunnerOptions configures a Runner.
type RunnerOptions struct {
	// RestartDelay is the pause before a job whose Run ended with an error
	// is started again (a missing queue, a lost position, an unreachable
	// database at start). Default: the job's exception_sleep
	// (ErrorBackoff.Max), 20 s.
	RestartDelay time.Duration
	// StatusEvery is how often each job's status file is rewritten while
	// it runs (it is also written on every state change). Default 5 s.
	StatusEvery time.Duration
	// Logger receives the runner's own logs. Default slog.Default().
	Logger *slog.Logger
}

// Runner runs many jobs in one process, as Skytools' scriptmgr ran many
// scripts: each job in its own goroutine, isolated (a job that fails is
// restarted after a pause and never stops the others), with its pidfile
// (refusing to start a job whose pidfile names another live process) and
// a status file beside it (StatusPath) that `pgqctl job status` reads.
type Runner struct {
	jobs []*Job
	opts RunnerOptions

	mu     sync.Mutex
	status map[string]*Status
	// kick wakes a job's status writer after a change of state: one
	// goroutine per job writes its file (runJob), so the last write holds
	// the latest status (a periodic write that read the status before a
	// stop cannot land after the stop's), and the consumer's hooks never
	// wait for a file.
	kick map[string]chan struct{}
}

// NewRunner returns a runner for jobs; their names must be distinct.
func NewRunner(jobs []*Job, opts RunnerOptions) (*Runner, error) {
	if opts.StatusEvery <= 0 {
		opts.StatusEvery = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	r := &Runner{jobs: jobs, opts: opts, status: map[string]*Status{}, kick: map[string]chan struct{}{}}
	for _, j := range jobs {
		if _, dup := r.status[j.Name()]; dup {
			return nil, fmt.Errorf("job: two jobs are named %s", j.Name())
		}
		c := j.cfg.Remote.Consumer
		r.status[j.Name()] = &Status{Name: j.Name(), Kind: j.Kind(), Queue: c.Queue, Consumer: c.Name,
			State: StateStarting, Since: time.Now(), PID: os.Getpid()}
	}
	return r, nil
}

// Status returns every job's status, in the order the jobs were given.
func (r *Runner) Status() []Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Status, 0, len(r.jobs))
	for _, j := range r.jobs {
		out = append(out, *r.status[j.Name()])
	}
	return out
}

func (r *Runner) update(j *Job, f func(s *Status)) {
	r.mu.Lock()
	s := r.status[j.Name()]
	before := s.State
	f(s)
	if s.State != before {
		s.Since = time.Now()
		select { // the writer reads the latest status when it runs
		case r.kick[j.Name()] <- struct{}{}:
		default:
		}
	}
	r.mu.Unlock()
}

// flushStatus writes the job's current status to its file; periodic
// says the periodic tick asks (for the test hook).
func (r *Runner) flushStatus(j *Job, periodic bool) {
	r.mu.Lock()
	snap := *r.status[j.Name()]
	r.mu.Unlock()
	if h := testHookPeriodicStatus.Load(); h != nil && periodic {
		(*h)(r, j.Name(), snap)
	}
	r.writeStatus(j, snap)
}

// Run runs every job until ctx is done, then waits for all of them to
// stop and returns nil; or it returns at once with an error if a job
// cannot start at all (its pidfile names a live process).
func (r *Runner) Run(ctx context.Context) error {
	for _, j := range r.jobs {
		if j.cfg.Pidfile == "" {
			continue
		}
		// A second copy of a job would fight the first for batches:
		// Skytools refuses to start too.
		if err := pidfile.Claim(j.cfg.Pidfile); err != nil {
			var running *pidfile.RunningError
			if errors.As(err, &running) {
				err = fmt.Errorf("pidfile %s: the job is already running as process %d", running.Path, running.PID)
			}
			for _, k := range r.jobs {
				if k == j {
					break
				}
				release(k.cfg.Pidfile)
			}
			return fmt.Errorf("job %s: %w", j.Name(), err)
		}
	}
	var wg sync.WaitGroup
	for _, j := range r.jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer release(j.cfg.Pidfile)
			r.runJob(ctx, j)
		}()
	}
	wg.Wait()
	return nil
}

// runJob runs j again and again until ctx is done.
func (r *Runner) runJob(ctx context.Context, j *Job) {
	log := r.opts.Logger.With("job", j.Name())
	hooks := consumer.Hooks{
		OnBatch: func(st consumer.BatchStats) {
			r.update(j, func(s *Status) {
				s.State = StateRunning
				s.Batches++
				s.Events += int64(st.Events)
				s.LastBatch = time.Now()
				s.Lag = st.Lag
			})
		},
		OnIdle: func() { r.update(j, func(s *Status) { s.State = StateRunning }) },
		OnError: func(e consumer.ErrorInfo) {
			r.update(j, func(s *Status) {
				s.State = StateFailed
				s.LastError, s.LastErrorAt = e.Err.Error(), time.Now()
			})
		},
	}
	// The job's status writer: every write of its file, periodic or
	// after a change of state, and the last one (the stop's) when runJob
	// returns.
	tick := time.NewTicker(r.opts.StatusEvery)
	defer tick.Stop()
	kick := make(chan struct{}, 1)
	r.mu.Lock()
	r.kick[j.Name()] = kick
	r.mu.Unlock()
	done, exited := make(chan struct{}), make(chan struct{})
	defer func() {
		close(done)
		<-exited
	}()
	go func() {
		defer close(exited)
		r.flushStatus(j, false)
		for {
			select {
			case <-done:
				r.flushStatus(j, false)
				return
			case <-kick:
				r.flushStatus(j, false)
			case <-tick.C:
				r.flushStatus(j, true)
			}
		}
	}()
	delay := r.opts.RestartDelay
	if delay <= 0 {
		delay = j.cfg.Remote.Consumer.ErrorBackoff.Max
	}
	if delay <= 0 {
		delay = consumer.DefaultBackoffMax
	}
	for {
		err := j.run(ctx, hooks)
		if ctx.Err() != nil {
			r.update(j, func(s *Status) { s.State = StateStopped })
			return
		}
		if err == nil {
			err = errors.New("stopped without an error")
		}
		log.Error("job ended; restarting after a pause", "err", err, "pause", delay)
		r.update(j, func(s *Status) {
			s.State = StateFailed
			s.LastError, s.LastErrorAt = err.Error(), time.Now()
			s.Restarts++
		})
		select {
		case <-ctx.Done():
			r.update(j, func(s *Status) { s.State = StateStopped })
			return
		case <-time.After(delay):
		}
		r.update(j, func(s *Status) { s.State = StateStarting })
	}
}

// testHookPeriodicStatus, if set, runs in the periodic status writer
// between reading a job's status and writing its file.
var testHookPeriodicStatus atomic.Pointer[func(r *Runner, job string, s Status)]

// StatusPath is where a job's status file is: beside its pidfile, with
// ".status" in place of the pidfile's extension; "" without a pidfile.
func StatusPath(pidfile string) string {
	if pidfile == "" {
		return ""
	}
	return strings.TrimSuffix(pidfile, filepath.Ext(pidfile)) + ".status"
}

// writeStatus replaces the job's status file atomically; a failure is
// logged, never fatal.
func (r *Runner) writeStatus(j *Job, s Status) {
	path := StatusPath(j.cfg.Pidfile)
	if path == "" {
		return
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err == nil {
		err = pidfile.WriteAtomic(path, append(b, '\n'))
	}
	if err != nil {
		r.opts.Logger.Warn("cannot write the job's status file", "job", j.Name(), "path", path, "err", err)
	}
}

// ReadStatus reads a status file a Runner wrote.
func ReadStatus(path string) (Status, error) {
	var s Status
	b, err := os.ReadFile(path)
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("job: status file %s: %w", path, err)
	}
	return s, nil
}

func release(path string) {
	if path != "" {
		pidfile.Release(path)
	}
}
