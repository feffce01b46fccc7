package job

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/local"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/remote"
)

// Kind is a Skytools generic script.
type Kind string

// The job kinds, named as Skytools' scripts and their ini sections are.
const (
	QueueMover           Kind = "queue_mover"
	QueueSplitter        Kind = "queue_splitter"
	SimpleConsumer       Kind = "simple_consumer"
	SimpleSerialConsumer Kind = "simple_serial_consumer"
	SimpleLocalConsumer  Kind = "simple_local_consumer"
)

// Kinds lists every kind.
var Kinds = []Kind{QueueMover, QueueSplitter, SimpleConsumer, SimpleSerialConsumer, SimpleLocalConsumer}

// ParseKind reads a kind as Skytools names it: the script name, with or
// without the "3" Skytools 3 appended (queue_mover3) and a ".py".
func ParseKind(s string) (Kind, error) {
	for _, k := range Kinds {
		switch s {
		case string(k), string(k) + "3", string(k) + ".py", string(k) + "3.py":
			return k, nil
		}
	}
	return "", fmt.Errorf("job: unknown job kind %q (want one of %v)", s, Kinds)
}

// serial reports whether the kind tracks its ticks in the destination.
func (k Kind) serial() bool {
	return k == QueueMover || k == QueueSplitter || k == SimpleSerialConsumer
}

// Config is one job: what its ini section says.
type Config struct {
	// Name is the job's name (Skytools job_name), used in logs and status.
	// Required.
	Name string
	// Kind is the Skytools script the job replaces. Required.
	Kind Kind
	// SrcDB is the source database's connect string (src_db): a libpq
	// keyword/value string or URL. Required.
	SrcDB string
	// DstDB is the destination's (dst_db). Required for every kind.
	DstDB string
	// Remote configures the consumer: Remote.Consumer is the source side
	// (queue_name, the consumer name, pgq_lazy_fetch, filters, loop_delay,
	// exception_sleep ...). The serial kinds track their ticks in the
	// destination under Remote.Consumer.Name (pgq_ext, as Skytools).
	Remote remote.Config
	// DstQueue is queue_mover's destination queue (dst_queue_name).
	DstQueue string
	// QueueField is queue_splitter's event field naming the destination
	// queue (queue_field). Default "extra1".
	QueueField string
	// DstQuery is the simple consumers' per-event SQL (dst_query).
	DstQuery string
	// TrackingFile is simple_local_consumer's position file
	// (local_tracking_file). Default ~/state/<job_name>.tick, as Skytools.
	TrackingFile string
	// Source is where the job was read from ("file.ini [section]"), for
	// messages. Default: none.
	Source string
	// Pidfile is the job's pidfile (pidfile): a Runner writes it while the
	// job runs and refuses to start the job while another live process
	// holds it. Its status file goes beside it (StatusPath). Default: none.
	Pidfile string
	// Logfile is where the job's log goes (logfile), for the command line
	// to open; the library logs to Logger only.
	Logfile string
	// ConnectionLifetime closes database connections older than this
	// (connection_lifetime). Default 20 minutes, Skytools' default.
	ConnectionLifetime time.Duration
	// Logger receives the job's logs, with key "job". Default
	// slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.QueueField == "" {
		c.QueueField = "extra1"
	}
	if c.ConnectionLifetime <= 0 {
		c.ConnectionLifetime = 20 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Logger = c.Logger.With("job", c.Name)
	if c.Remote.Consumer.Logger == nil {
		c.Remote.Consumer.Logger = c.Logger
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	need := func(v, key string) {
		if v == "" {
			errs = append(errs, fmt.Errorf("%s is required", key))
		}
	}
	need(c.Name, "job_name")
	need(c.SrcDB, "src_db")
	need(c.DstDB, "dst_db")
	need(c.Remote.Consumer.Queue, "queue_name")
	switch c.Kind {
	case QueueMover:
		need(c.DstQueue, "dst_queue_name")
	case QueueSplitter:
		if _, err := eventField(c.QueueField); err != nil {
			errs = append(errs, err)
		}
	case SimpleConsumer, SimpleSerialConsumer, SimpleLocalConsumer:
		need(c.DstQuery, "dst_query")
	default:
		_, err := ParseKind(string(c.Kind))
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("job %s (%s): %w", c.Name, c.Kind, err)
	}
	return nil
}

// Job is one configured job. Run runs it; the other methods are the
// Skytools command-line operations (--register, --unregister, --rewind,
// --reset).
type Job struct {
	cfg   Config
	notes []string
}

// Notes are remarks on the ini section the job was read from: keys that
// have no effect here, and why. Say them when the job starts.
func (j *Job) Notes() []string { return j.notes }

// New checks cfg and returns the job. Nothing is connected yet.
func New(cfg Config) (*Job, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.DstQuery != "" && cfg.Kind != QueueMover && cfg.Kind != QueueSplitter {
		if _, err := ParseQuery(cfg.DstQuery); err != nil {
			return nil, fmt.Errorf("job %s: %w", cfg.Name, err)
		}
	}
	return &Job{cfg: cfg}, nil
}

// Config returns the job's configuration, defaults filled in.
func (j *Job) Config() Config { return j.cfg }

// Name is the job's name.
func (j *Job) Name() string { return j.cfg.Name }

// Kind is the job's kind.
func (j *Job) Kind() Kind { return j.cfg.Kind }

// Source is where the job was read from, or its name.
func (j *Job) Source() string {
	if j.cfg.Source != "" {
		return j.cfg.Source
	}
	return j.cfg.Name
}

// pools connects to the job's databases.
func (j *Job) pools(ctx context.Context) (src, dst *pgxpool.Pool, err error) {
	open := func(key, conn string) (*pgxpool.Pool, error) {
		pc, err := pgxpool.ParseConfig(conn)
		if err != nil {
			return nil, fmt.Errorf("job %s: %s: %w", j.cfg.Name, key, err)
		}
		pc.MaxConnLifetime = j.cfg.ConnectionLifetime
		pc.MaxConns = 4
		p, err := pgxpool.NewWithConfig(ctx, pc)
		if err != nil {
			return nil, fmt.Errorf("job %s: %s: %w", j.cfg.Name, key, err)
		}
		return p, nil
	}
	if src, err = open("src_db", j.cfg.SrcDB); err != nil {
		return nil, nil, err
	}
	if dst, err = open("dst_db", j.cfg.DstDB); err != nil {
		src.Close()
		return nil, nil, err
	}
	return src, dst, nil
}

// runner is what a job runs, and the Skytools operations on it.
type runner interface {
	Run(ctx context.Context) error
	Register(ctx context.Context) (bool, error)
	Unregister(ctx context.Context) (bool, error)
	// Rewind moves the source position to the job's own record of it;
	// false: there is none. Reset forgets that record.
	Rewind(ctx context.Context) (bool, error)
	Reset(ctx context.Context) error
}

// serialJob is a job tracked by tick in the destination's pgq_ext.
type serialJob struct{ *remote.SerialConsumer }

func (s serialJob) Register(ctx context.Context) (bool, error) {
	// As Skytools: a new subscription starts afresh on the destination.
	isNew, err := s.Consumer().Register(ctx)
	if err != nil || !isNew {
		return isNew, err
	}
	return true, s.Reset(ctx)
}

func (s serialJob) Unregister(ctx context.Context) (bool, error) {
	was, err := s.Consumer().Unregister(ctx)
	if err != nil {
		return false, err
	}
	return was, s.Reset(ctx)
}

// localJob keeps its position in a local file.
type localJob struct{ *local.Consumer }

func (l localJob) Reset(context.Context) error { return l.Consumer.Reset() }

// plainJob has no position of its own (simple_consumer).
type plainJob struct {
	*consumer.Consumer
	kind Kind
}

func (p plainJob) Rewind(context.Context) (bool, error) {
	return false, fmt.Errorf("a %s keeps no position of its own to rewind to", p.kind)
}

func (p plainJob) Reset(context.Context) error {
	return fmt.Errorf("a %s keeps no position of its own to reset", p.kind)
}

// build returns the job's consumer on src and dst.
func (j *Job) build(c Config, src, dst *pgxpool.Pool) (runner, error) {
	var h remote.Handler
	switch c.Kind {
	case QueueMover:
		var err error
		if h, err = MoveHandler(c.DstQueue); err != nil {
			return nil, err
		}
	case QueueSplitter:
		var err error
		if h, err = SplitHandler(c.QueueField); err != nil {
			return nil, err
		}
	case SimpleSerialConsumer:
		q, err := ParseQuery(c.DstQuery)
		if err != nil {
			return nil, err
		}
		h = SerialQueryHandler(q)
	case SimpleConsumer:
		q, err := ParseQuery(c.DstQuery)
		if err != nil {
			return nil, err
		}
		cons, err := consumer.New(src, c.Remote.Consumer, consumer.BatchHandlerFunc(func(ctx context.Context, b *pgq.Batch) error {
			return QueryBatch(ctx, dst, q, b)
		}))
		if err != nil {
			return nil, err
		}
		return plainJob{cons, c.Kind}, nil
	case SimpleLocalConsumer:
		q, err := ParseQuery(c.DstQuery)
		if err != nil {
			return nil, err
		}
		lc, err := local.New(src, local.Config{Consumer: c.Remote.Consumer, TrackingFile: c.TrackingFile},
			local.HandlerFunc(func(ctx context.Context, b *pgq.Batch) error { return QueryBatch(ctx, dst, q, b) }))
		if err != nil {
			return nil, err
		}
		return localJob{lc}, nil
	default:
		return nil, fmt.Errorf("unknown kind %q", c.Kind)
	}
	s, err := remote.NewSerial(src, dst, c.Remote, h)
	if err != nil {
		return nil, err
	}
	return serialJob{s}, nil
}

// Run connects and runs the job until ctx is done (nil) or a fatal error.
func (j *Job) Run(ctx context.Context) error { return j.run(ctx, consumer.Hooks{}) }

// run is Run with extra hooks, called after the job's own.
func (j *Job) run(ctx context.Context, extra consumer.Hooks) error {
	c := j.cfg
	c.Remote.Consumer.Hooks = chainHooks(c.Remote.Consumer.Hooks, extra)
	src, dst, err := j.pools(ctx)
	if err != nil {
		return err
	}
	defer src.Close()
	defer dst.Close()
	r, err := j.build(c, src, dst)
	if err != nil {
		return err
	}
	c.Logger.Info("job started", "kind", c.Kind, "queue", c.Remote.Consumer.Queue, "consumer", c.Remote.Consumer.Name)
	err = r.Run(ctx)
	if err != nil {
		c.Logger.Error("job stopped", "err", err)
	} else {
		c.Logger.Info("job stopped")
	}
	return err
}

func chainHooks(a, b consumer.Hooks) consumer.Hooks {
	return consumer.Hooks{
		OnBatch: chain(a.OnBatch, b.OnBatch),
		OnError: chain(a.OnError, b.OnError),
		OnIdle: func() {
			if a.OnIdle != nil {
				a.OnIdle()
			}
			if b.OnIdle != nil {
				b.OnIdle()
			}
		},
	}
}

func chain[T any](a, b func(T)) func(T) {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	}
	return func(v T) { a(v); b(v) }
}

// Admin runs one of Skytools' command-line operations on the job and
// returns what it did, in words: "register" (a serial job's new
// subscription also forgets the destination's position, a local job's
// removes its file), "unregister" (likewise), "rewind" (the source
// position moves to the destination's tick, or the local file's) or
// "reset" (forget the destination's position; remove the local file).
// simple_consumer has no position of its own: rewind and reset fail.
func (j *Job) Admin(ctx context.Context, op string) (string, error) {
	name := fmt.Sprintf("job %s: %s", j.cfg.Name, op)
	switch op {
	case "register", "unregister", "rewind", "reset":
	default:
		return "", fmt.Errorf("%s: unknown operation (want register, unregister, rewind or reset)", name)
	}
	src, dst, err := j.pools(ctx)
	if err != nil {
		return "", err
	}
	defer src.Close()
	defer dst.Close()
	r, err := j.build(j.cfg, src, dst)
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	if j.cfg.Kind.serial() && !j.cfg.Remote.SkipInstall {
		// As Run would: the position lives in the destination's pgq_ext.
		if err := remote.Install(ctx, dst); err != nil {
			return "", fmt.Errorf("%s: %w", name, err)
		}
	}
	var msg string
	switch op {
	case "register":
		var isNew bool
		if isNew, err = r.Register(ctx); err == nil {
			msg = map[bool]string{true: "consumer registered", false: "consumer already registered"}[isNew]
		}
	case "unregister":
		var was bool
		if was, err = r.Unregister(ctx); err == nil {
			msg = map[bool]string{true: "consumer unregistered", false: "consumer was not registered"}[was]
		}
	case "rewind":
		var ok bool
		if ok, err = r.Rewind(ctx); err == nil {
			msg = map[bool]string{true: "rewound to the job's own position", false: "no position recorded: nothing to rewind to"}[ok]
		}
	case "reset":
		if err = r.Reset(ctx); err == nil {
			msg = "position forgotten"
		}
	}
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	return msg, nil
}
