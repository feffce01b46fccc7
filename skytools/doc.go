// Package skytools reads Skytools job configuration files (.ini) exactly
// as Skytools' Python skytools.Config reads them, and turns a job's
// section into this module's configurations: consumer.Config,
// remote.Config and the runner's JobSettings. Sites that run dozens of
// Skytools jobs keep their files; pgqctl job run and programs of their own
// read them through this package.
//
//	f, err := skytools.Load("/etc/skytools/orders_mover.ini")
//	sec, err := f.Section("queue_mover3")
//	cfg, err := sec.RemoteConfig()     // or ConsumerConfig
//	job, err := sec.JobSettings()      // src_db, dst_db, logfile, ...
//	lag, err := sec.Interval("pgq_keep_lag")
//
// # Reading
//
// Parse follows Python 3's configparser.ConfigParser as skytools.Config
// sets it up (see Parse for the syntax, File.Section for interpolation and
// the built-in defaults job_name, service_name, host_name, config_dir and
// config_file). A Section's getters mirror Config's: String (get), Int
// (getint), Bool (getboolean), Float (getfloat), List (getlist), Dict
// (getdict), File (getfile), Bytes (getbytes), Wildcard (get_wildcard);
// Duration reads a number of seconds (loop_delay = 0.5) and Interval a
// PostgreSQL interval (pgq_keep_lag = 10 min). A getter returns the value
// or an *Error that names file, line, section, key and value, wrapping
// ErrNoKey, ErrInterpolation or ErrBadValue. Keys lists what the file sets,
// so a caller can warn about keys it does not know.
//
// Where Python 2's ConfigParser (Skytools 2 and early 3) differed, this
// package follows Python 3, which current Skytools runs on: "key = v ; x"
// keeps " ; x" in the value, keys may be indented (then they continue the
// previous value), and a section or key given twice is an error.
//
// # Intervals
//
// Skytools passes pgq_keep_lag and pgq_batch_collect_interval to
// pgq.next_batch_custom as text, read by PostgreSQL's interval input.
// Interval reads the shapes operators write and refuses the rest
// (ErrBadValue) rather than guess, so that every value it returns is what
// PostgreSQL makes of the text:
//
//	1.5 · 30 · .5                       seconds
//	10 min · 1h30m · 2 hours 30 minutes  number-unit pairs, each unit once
//	1 week 2 days · 3 mons · 1 year      (us ms s m h d w mon y, their
//	                                     plurals and PostgreSQL's spellings)
//	00:05:00 · 00:05 · 1 02:00:00       hh:mm[:ss[.ffffff]], after an
//	1 day 02:00                         optional day count or day+ pairs
//	@ 1 minute · 5 min ago              PostgreSQL's verbose output
//	PT10M · P1DT2H · P1Y2M3W4DT5H6M7S   ISO 8601 with designators
//
// Refused: fractional years (PostgreSQL rounds them to months), a fraction
// in a time field's hours or minutes or in a day count (PostgreSQL reads
// "1.5:00:00" as 36 hours), numbers without units beside other fields
// ("1h30" is 1 hour 30 seconds there), a minus sign on one of several
// fields (its reach depends on IntervalStyle), decades and larger units,
// and the SQL-standard "1-2" year-month and ISO "P0001-02-03" forms.
// Months count as 30 days and years as 12 months, as PostgreSQL compares
// intervals (next_batch_custom compares them).
//
// # From a job section to consumer.Config
//
// ConsumerConfig reads the keys Skytools' pgq.BaseConsumer reads, with
// the meaning it gives them; each choice where the two differ is below.
//
//	Skytools key                 Skytools reads it as             consumer.Config
//	queue_name                   get; required                    Queue
//	pgq_queue_name (old name)    get; wins when not empty         Queue
//	consumer_name                get; default job_name            Name
//	pgq_consumer_id (old name)   get; wins when not empty         Name
//	pgq_lazy_fetch               getint; default 300, 0 = all     LazyFetch; 0 sets NoLazyFetch
//	pgq_autocommit               getint; default 0                checked only (see below)
//	pgq_batch_collect_events     getint; 0 = off                  MinCount
//	pgq_batch_collect_interval   get, SQL interval; "" = off      MinInterval (Interval)
//	pgq_keep_lag                 get, SQL interval; "" = off      KeepLag (Interval)
//	table_filter                 getlist; fq_name, quote_literal  Filter: pgq.TableIn
//	consumer_filter              (not an ini key in Skytools)     Filter: pgq.SQLFilter
//	loop_delay                   getfloat seconds; default 1.0    PollInterval
//	exception_sleep              getfloat seconds; default 20     ErrorBackoff
//
// Choices:
//   - Names: an empty consumer_name (set, but to nothing) is an error
//     here; Skytools would register a consumer named "".
//   - pgq_lazy_fetch: a negative value is an error (Skytools would pass it
//     to FETCH). pgq_autocommit is refused with a non-zero pgq_lazy_fetch,
//     as Skytools refuses it; otherwise it has no effect, since a Go
//     consumer commits next_batch before reading in any case.
//   - pgq_batch_collect_events, pgq_batch_collect_interval, pgq_keep_lag:
//     negative values are errors (PgQ would treat them as already met).
//   - table_filter: an empty list is no filter, as in Skytools; empty
//     items ("a,,b") are dropped (Skytools matches them as "public.", a
//     table no event names, so the events selected are the same).
//   - consumer_filter: Skytools has no such ini key (consumer_filter is a
//     Python attribute subclasses such as londiste set). Here it is an
//     operator's SQL condition on the event columns, as trusted as the file
//     (see pgq.SQLFilter for what is refused); with table_filter both must
//     match. A blank value is no filter.
//   - loop_delay: a positive value is PollInterval (Skytools' default 1.0
//     is consumer's default 1s). Skytools exits when idle with 0 and runs
//     once with a negative value; a Go consumer runs until stopped, so
//     both are errors rather than a silent change of behaviour.
//   - exception_sleep: when set, it is a fixed pause (Initial = Max, no
//     growth), which is what the operator wrote; 0 and negative values are
//     errors. When unset, consumer's backoff applies (1s doubling to 20s:
//     faster recovery from a short outage, and Skytools' 20 s as the cap)
//     instead of Skytools' fixed 20 s.
//   - keepalive_stats, connection_lifetime, logfile, pidfile, src_db,
//     dst_db, loop_delay and exception_sleep as plain values are in
//     JobSettings, for the runner.
//
// RemoteConfig is remote.Config{Consumer: ConsumerConfig()}: Skytools has
// no subconsumer key for RemoteConsumer or SerialConsumer (the
// subconsumer_name of pgq_coop's cooperative consumers is another thing),
// and its pgq_ext rows use the consumer name with an empty subconsumer,
// which is what SubConsumer "" uses.
package skytools
