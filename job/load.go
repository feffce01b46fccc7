package job

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/pgq-go/pgq/skytools"
)

// KindKey is the ini key that says which Skytools script a section is
// for, when the section's name does not (Skytools names a job's section
// after its script: [queue_mover3], [simple_consumer3] ...). Skytools
// ignores it, so a file keeps working with the Python scripts.
const KindKey = "job_kind"

// LoadOptions configures Load.
type LoadOptions struct {
	// Kind is the kind of a file's only section when neither its name nor
	// a job_kind key says it (pgqctl job run --kind).
	Kind Kind
	// Logger is every loaded job's logger (Config.Logger).
	Logger *slog.Logger
}

// Load reads the Skytools jobs of one ini file: each section whose name
// is a script's (queue_mover3, queue_splitter3, simple_consumer3,
// simple_serial_consumer, simple_local_consumer3, with or without the 3)
// or which has a job_kind key; or, with opts.Kind, the file's only
// section. A file with no job is an error naming the file and what was
// looked for.
func Load(path string, opts LoadOptions) ([]*Job, error) {
	f, err := skytools.Load(path)
	if err != nil {
		return nil, err
	}
	sections := f.Sections()
	var jobs []*Job
	var errs []error
	for _, name := range sections {
		sec, err := f.Section(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		kind, ok, err := sectionKind(sec, len(sections), opts.Kind)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !ok {
			continue
		}
		j, err := FromSection(sec, kind, opts.Logger)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		jobs = append(jobs, j)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(jobs) == 0 {
		return nil, fmt.Errorf("job: %s: no job section: name a section after its Skytools script (%s, or with a 3 as Skytools 3 does), "+
			"add %s = <kind> to it, or give the kind (--kind) for a file of one section", path, kindList(), KindKey)
	}
	return jobs, nil
}

func kindList() string {
	var s []string
	for _, k := range Kinds {
		s = append(s, string(k))
	}
	return strings.Join(s, ", ")
}

// sectionKind tells which kind sec is for: its job_kind key, its name,
// or (the file's only section) the kind given.
func sectionKind(sec *skytools.Section, sections int, given Kind) (Kind, bool, error) {
	if sec.Has(KindKey) {
		v, err := sec.String(KindKey)
		if err != nil {
			return "", false, err
		}
		k, err := ParseKind(strings.TrimSpace(v))
		if err != nil {
			return "", false, fmt.Errorf("%s [%s]: %w", sec.Filename(), sec.Name(), err)
		}
		return k, true, nil
	}
	if k, err := ParseKind(sec.Name()); err == nil {
		return k, true, nil
	}
	if given != "" && sections == 1 {
		k, err := ParseKind(string(given))
		return k, err == nil, err
	}
	return "", false, nil
}

// FromSection builds a job of kind from a Skytools ini section: every
// key the Skytools script reads (see skytools.Section.JobSettings and
// RemoteConfig) plus the kind's own: dst_queue_name (queue_mover),
// queue_field (queue_splitter), dst_query (the simple consumers),
// local_tracking_file (simple_local_consumer; default
// ~/state/<job_name>.tick, as Skytools' template).
func FromSection(sec *skytools.Section, kind Kind, logger *slog.Logger) (*Job, error) {
	js, jsErr := sec.JobSettings()
	rc, rcErr := sec.RemoteConfig()
	if err := errors.Join(jsErr, rcErr); err != nil {
		return nil, err
	}
	rc.Consumer.StatsPeriod = js.KeepaliveStats
	cfg := Config{
		Name: js.JobName, Kind: kind, SrcDB: js.SrcDB, DstDB: js.DstDB, Remote: rc,
		Pidfile: js.Pidfile, Logfile: js.Logfile, ConnectionLifetime: js.ConnectionLifetime, Logger: logger,
		Source: fmt.Sprintf("%s [%s]", sec.Filename(), sec.Name()),
	}
	str := func(key string, dst *string) error {
		if !sec.Has(key) {
			return nil
		}
		v, err := sec.String(key)
		*dst = strings.TrimSpace(v)
		return err
	}
	var errs []error
	switch kind {
	case QueueMover:
		errs = append(errs, str("dst_queue_name", &cfg.DstQueue))
	case QueueSplitter:
		errs = append(errs, str("queue_field", &cfg.QueueField))
	case SimpleConsumer, SimpleSerialConsumer, SimpleLocalConsumer:
		errs = append(errs, str("dst_query", &cfg.DstQuery))
	}
	if kind == SimpleLocalConsumer {
		if sec.Has("local_tracking_file") {
			f, err := sec.File("local_tracking_file")
			errs = append(errs, err)
			cfg.TrackingFile = f
		} else if home, err := os.UserHomeDir(); err == nil {
			cfg.TrackingFile = filepath.Join(home, "state", js.JobName+".tick")
		} else {
			errs = append(errs, fmt.Errorf("local_tracking_file: not set, and no home directory for its default: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("%s [%s]: %w", sec.Filename(), sec.Name(), err)
	}
	j, err := New(cfg)
	if err != nil {
		return nil, fmt.Errorf("%s [%s]: %w", sec.Filename(), sec.Name(), err)
	}
	j.notes = keyNotes(sec)
	return j, nil
}

// usedKeys are the keys a job reads (Skytools' and job_kind).
var usedKeys = map[string]bool{
	"job_name": true, "service_name": true, "config_format": true, "config_dir": true, "config_file": true,
	"src_db": true, "dst_db": true, "queue_name": true, "pgq_queue_name": true, "consumer_name": true,
	"pgq_consumer_id": true, "pgq_lazy_fetch": true, "pgq_autocommit": true, "pgq_batch_collect_events": true,
	"pgq_batch_collect_interval": true, "pgq_keep_lag": true, "table_filter": true, "consumer_filter": true,
	"loop_delay": true, "exception_sleep": true, "keepalive_stats": true, "connection_lifetime": true,
	"logfile": true, "pidfile": true, "dst_queue_name": true, "queue_field": true, "dst_query": true,
	"local_tracking_file": true, KindKey: true,
}

// ignoredKeys are Skytools keys that have no effect here, and why.
var ignoredKeys = []struct{ prefix, why string }{
	{"use_skylog", "logs go to logfile and stderr"},
	{"skylog_", "logs go to logfile and stderr"},
	{"use_syslog", "logs go to logfile and stderr"},
	{"syslog_", "logs go to logfile and stderr"},
	{"log_size", "rotate the logfile with logrotate; SIGHUP reopens it"},
	{"log_count", "rotate the logfile with logrotate; SIGHUP reopens it"},
	{"logfmt_", "logs are slog key=value lines"},
	{"logdatefmt_", "logs are slog key=value lines"},
	{"exception_quiet", "every failure is logged, with its backoff"},
	{"exception_grace", "every failure is logged, with its backoff"},
	{"exception_reset", "every failure is logged, with its backoff"},
	{"sql_retry", "a failed statement fails the batch, which is retried after exception_sleep"},
}

// keyNotes says which keys of sec have no effect.
func keyNotes(sec *skytools.Section) []string {
	var notes []string
	for _, k := range sec.Keys() {
		if usedKeys[k] {
			continue
		}
		why := ""
		for _, ig := range ignoredKeys {
			if strings.HasPrefix(k, ig.prefix) {
				why = ig.why
				break
			}
		}
		switch {
		case why != "":
			notes = append(notes, fmt.Sprintf("key %s has no effect here: %s", k, why))
		case strings.HasSuffix(k, "_extra_connstr"):
			notes = append(notes, fmt.Sprintf("key %s has no effect here: put the options in src_db / dst_db", k))
		default:
			notes = append(notes, fmt.Sprintf("key %s is not read (neither by Skytools' generic scripts nor here): a typo?", k))
		}
	}
	return notes
}

// LoadAll reads the jobs of every path: an ini file, or a directory whose
// *.ini files are read in name order (what Skytools' scriptmgr served).
// Job names must be distinct across them.
func LoadAll(paths []string, opts LoadOptions) ([]*Job, error) {
	var files []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("job: %w", err)
		}
		if !st.IsDir() {
			files = append(files, p)
			continue
		}
		inis, err := filepath.Glob(filepath.Join(p, "*.ini"))
		if err != nil {
			return nil, fmt.Errorf("job: %s: %w", p, err)
		}
		if len(inis) == 0 {
			return nil, fmt.Errorf("job: directory %s has no .ini files", p)
		}
		sort.Strings(inis)
		files = append(files, inis...)
	}
	var jobs []*Job
	var errs []error
	for _, f := range files {
		js, err := Load(f, opts)
		errs = append(errs, err)
		jobs = append(jobs, js...)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	seen := map[string]string{}
	for _, j := range jobs {
		if other, dup := seen[j.Name()]; dup {
			return nil, fmt.Errorf("job: two jobs are named %s (%s and %s): set job_name", j.Name(), other, j.Source())
		}
		seen[j.Name()] = j.Source()
	}
	return slices.Clip(jobs), nil
}
