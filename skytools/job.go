package skytools

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/remote"
)

// Skytools' defaults for the job-runner settings (skytools.BaseScript,
// skytools.DBScript, pgq.BaseConsumer).
const (
	DefaultLoopDelay          = time.Second      // loop_delay = 1.0
	DefaultExceptionSleep     = 20 * time.Second // exception_sleep = 20
	DefaultConnectionLifetime = 20 * time.Minute // connection_lifetime = 1200
	DefaultKeepaliveStats     = 5 * time.Minute  // keepalive_stats = 300
)

// JobSettings are the keys of a Skytools job that concern the process
// running it rather than the consumer loop (see ConsumerConfig): which
// databases to connect to, where to log, how long to sleep. Unset keys
// take Skytools' defaults.
type JobSettings struct {
	// Service is the section name, Skytools' service_name: the script the
	// job is an instance of (queue_mover3, simple_consumer3, ...).
	Service string
	// JobName is job_name: by default the file's base name without its
	// extension. It names the job in logs and is the default consumer
	// name.
	JobName string
	// SrcDB and DstDB are the src_db and dst_db connect strings, "" when
	// unset (libpq key=value or URL form, as the script passes them to
	// psycopg2).
	SrcDB, DstDB string
	// Logfile and Pidfile are logfile and pidfile with "~" expanded
	// (Config.getfile), "" when unset.
	Logfile, Pidfile string
	// LoopDelay is loop_delay, the sleep when there is no work. Default
	// 1s. In Skytools 0 makes the script exit once it finds no work and a
	// negative value runs the work once; ConsumerConfig refuses both.
	LoopDelay time.Duration
	// ExceptionSleep is exception_sleep, the sleep after an error.
	// Default 20s.
	ExceptionSleep time.Duration
	// ConnectionLifetime is connection_lifetime (whole seconds), after
	// which Skytools reconnects; 0 keeps connections. Default 20 min.
	ConnectionLifetime time.Duration
	// KeepaliveStats is keepalive_stats (whole seconds): an idle consumer
	// logs stats this often. Default 5 min.
	KeepaliveStats time.Duration
}

// keyErr is an *Error about key with its value.
func (s *Section) keyErr(key, value string, err error) error {
	_, line, _ := s.lookup(s.name, key)
	return &Error{File: s.file.filename, Line: line, Section: s.name, Key: key, Value: value, hasValue: true, Err: err}
}

// JobSettings reads the job-runner keys of the section. Every bad value
// is reported, each error naming file, line, section, key and value.
func (s *Section) JobSettings() (JobSettings, error) {
	j := JobSettings{Service: s.name, LoopDelay: DefaultLoopDelay, ExceptionSleep: DefaultExceptionSleep,
		ConnectionLifetime: DefaultConnectionLifetime, KeepaliveStats: DefaultKeepaliveStats}
	var errs []error
	opt := func(key string, read func() error) {
		if s.Has(key) {
			if err := read(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	text := func(dst *string, key string, get func(string) (string, error)) {
		opt(key, func() (err error) { *dst, err = get(key); return err })
	}
	text(&j.JobName, "job_name", s.String)
	text(&j.SrcDB, "src_db", s.String)
	text(&j.DstDB, "dst_db", s.String)
	text(&j.Logfile, "logfile", s.File)
	text(&j.Pidfile, "pidfile", s.File)
	opt("loop_delay", func() (err error) { j.LoopDelay, err = s.Duration("loop_delay"); return err })
	opt("exception_sleep", func() error {
		d, err := s.Duration("exception_sleep")
		if err == nil && d < 0 {
			v, _ := s.String("exception_sleep")
			err = s.keyErr("exception_sleep", v, errf(ErrBadValue, "negative (Python's time.sleep refuses it)"))
		}
		j.ExceptionSleep = d
		return err
	})
	seconds := func(dst *time.Duration, key string) {
		opt(key, func() error {
			n, err := s.Int(key)
			if err != nil {
				return err
			}
			if n < 0 || int64(n) > math.MaxInt64/int64(time.Second) {
				return s.keyErr(key, fmt.Sprint(n), errf(ErrBadValue, "seconds must be 0 or more (and under 292 years)"))
			}
			*dst = time.Duration(n) * time.Second
			return nil
		})
	}
	seconds(&j.ConnectionLifetime, "connection_lifetime")
	seconds(&j.KeepaliveStats, "keepalive_stats")
	if err := errors.Join(errs...); err != nil {
		return JobSettings{}, err
	}
	return j, nil
}

// ConsumerConfig returns the consumer.Config the section describes, read
// as Skytools' pgq.Consumer reads its keys (the package documentation has
// the full mapping):
//
//	queue_name                  Queue (pgq_queue_name, the old name, wins when set and not empty)
//	consumer_name               Name (pgq_consumer_id wins when set and not empty; default job_name)
//	pgq_lazy_fetch              LazyFetch; 0 sets NoLazyFetch
//	pgq_batch_collect_events    MinCount
//	pgq_batch_collect_interval  MinInterval (a PostgreSQL interval; "" is off)
//	pgq_keep_lag                KeepLag (a PostgreSQL interval; "" is off)
//	table_filter                Filter: pgq.TableIn(list...)
//	consumer_filter             Filter: pgq.SQLFilter(sql), and-ed with table_filter
//	loop_delay                  PollInterval (must be positive)
//	exception_sleep             ErrorBackoff: fixed, Initial = Max = exception_sleep
//
// Keys left unset leave the field zero, so consumer's defaults apply. The
// Logger, Hooks and Register fields are the caller's. Every bad value is
// reported, each error naming file, line, section, key and value.
func (s *Section) ConsumerConfig() (consumer.Config, error) {
	var c consumer.Config
	var errs []error
	fail := func(err error) { errs = append(errs, err) }
	bad := func(key, value, format string, args ...any) {
		fail(s.keyErr(key, value, errf(ErrBadValue, format, args...)))
	}
	badErr := func(key, value string, err error) { fail(s.keyErr(key, value, fmt.Errorf("%w: %w", ErrBadValue, err))) }
	str := func(key string) string {
		if !s.Has(key) {
			return ""
		}
		v, err := s.String(key)
		if err != nil {
			fail(err)
		}
		return v
	}
	name := func(kind, key, v string) {
		if err := pgq.ValidateName(kind, v); err != nil {
			badErr(key, v, err)
		}
	}

	// Queue and consumer names: the compat keys first, as BaseConsumer.
	c.Queue = str("pgq_queue_name")
	switch {
	case c.Queue != "":
		name("queue", "pgq_queue_name", c.Queue)
	case s.Has("queue_name"):
		c.Queue = str("queue_name")
		name("queue", "queue_name", c.Queue)
	default:
		fail(&Error{File: s.file.filename, Section: s.name, Key: "queue_name", Err: fmt.Errorf("%w: a consumer job needs queue_name", ErrNoKey)})
	}
	c.Name = str("pgq_consumer_id")
	switch {
	case c.Name != "":
		name("consumer", "pgq_consumer_id", c.Name)
	case s.Has("consumer_name"):
		c.Name = str("consumer_name")
		name("consumer", "consumer_name", c.Name)
	default:
		c.Name = str("job_name")
		name("consumer", "job_name", c.Name)
	}

	lazy := consumer.DefaultLazyFetch // Skytools' default too
	if s.Has("pgq_lazy_fetch") {
		n, err := s.Int("pgq_lazy_fetch")
		switch {
		case err != nil:
			fail(err)
		case n < 0:
			bad("pgq_lazy_fetch", fmt.Sprint(n), "negative: 0 reads each batch in one query, more is the cursor's fetch size")
		case n == 0:
			c.NoLazyFetch, lazy = true, 0
		default:
			c.LazyFetch, lazy = n, n
		}
	}
	if s.Has("pgq_autocommit") {
		// A Go consumer commits next_batch before reading anyway; the key
		// is checked as Skytools checks it and otherwise has no effect.
		n, err := s.Int("pgq_autocommit")
		switch {
		case err != nil:
			fail(err)
		case n != 0 && lazy != 0:
			bad("pgq_autocommit", fmt.Sprint(n), "not compatible with pgq_lazy_fetch (set pgq_lazy_fetch = 0), as Skytools says")
		}
	}
	if s.Has("pgq_batch_collect_events") {
		n, err := s.Int("pgq_batch_collect_events")
		switch {
		case err != nil:
			fail(err)
		case n < 0 || n > math.MaxInt32:
			bad("pgq_batch_collect_events", fmt.Sprint(n), "must be 0 (off) to %d events", math.MaxInt32)
		default:
			c.MinCount = n
		}
	}
	interval := func(key string, dst *time.Duration) {
		v := str(key)
		if v == "" { // Skytools: `cf.get(key, '') or None`
			return
		}
		d, err := s.Interval(key)
		switch {
		case err != nil:
			fail(err)
		case d < 0:
			bad(key, v, "negative interval")
		default:
			*dst = d
		}
	}
	interval("pgq_batch_collect_interval", &c.MinInterval)
	interval("pgq_keep_lag", &c.KeepLag)

	var filters []pgq.Filter
	if s.Has("table_filter") {
		tables, err := s.List("table_filter")
		if err != nil {
			fail(err)
		}
		// Skytools qualifies an empty item as "public.", a table no event
		// names: dropping it selects the same events.
		var names []string
		for _, t := range tables {
			if t != "" {
				names = append(names, t)
			}
		}
		if len(names) > 0 {
			f := pgq.TableIn(names...)
			if err := f.Err(); err != nil {
				badErr("table_filter", str("table_filter"), err)
			}
			filters = append(filters, f)
		}
	}
	if v := str("consumer_filter"); pyStrip(v) != "" {
		f := pgq.SQLFilter(v)
		if err := f.Err(); err != nil {
			badErr("consumer_filter", v, err)
		}
		filters = append(filters, f)
	}
	switch len(filters) {
	case 1:
		c.Filter = filters[0]
	case 2:
		c.Filter = pgq.And(filters...)
	}

	if s.Has("loop_delay") {
		d, err := s.Duration("loop_delay")
		switch {
		case err != nil:
			fail(err)
		case d <= 0:
			bad("loop_delay", str("loop_delay"), "Skytools exits when idle (0) or runs once (negative); a Go consumer runs until stopped and needs a positive poll interval")
		default:
			c.PollInterval = d
		}
	}
	if s.Has("exception_sleep") {
		d, err := s.Duration("exception_sleep")
		switch {
		case err != nil:
			fail(err)
		case d <= 0:
			bad("exception_sleep", str("exception_sleep"), "must be positive: 0 would retry a failing batch in a tight loop")
		default:
			c.ErrorBackoff = consumer.Backoff{Initial: d, Max: d, Multiplier: 1}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return consumer.Config{}, err
	}
	return c, nil
}

// RemoteConfig returns the remote.Config of a Skytools RemoteConsumer or
// SerialConsumer job: its Consumer is ConsumerConfig's. SubConsumer stays
// "": Skytools has no such key and tracks a job on the destination under
// its consumer name alone (pgq_ext's row with an empty subconsumer_id), so
// a migrated job continues from the position its Python predecessor
// recorded. The other fields keep remote's defaults.
func (s *Section) RemoteConfig() (remote.Config, error) {
	c, err := s.ConsumerConfig()
	if err != nil {
		return remote.Config{}, err
	}
	return remote.Config{Consumer: c}, nil
}
