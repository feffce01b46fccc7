package skytools_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/remote"
	"github.com/pgq-go/pgq/skytools"
	"github.com/stretchr/testify/require"
)

// TestConsumerConfigFromIni: every consumer key of a Skytools job maps to
// its consumer.Config field.
func TestConsumerConfigFromIni(t *testing.T) {
	t.Parallel()
	s := section(t, "/etc/skytools/orders_copy.ini", `[DEFAULT]
queue = orders

[simple_consumer3]
queue_name = %(queue)s
consumer_name = %(job_name)s_v2
pgq_lazy_fetch = 500
pgq_batch_collect_events = 100
pgq_batch_collect_interval = 2 minutes
pgq_keep_lag = 00:00:30
table_filter = orders, sales.items
consumer_filter = ev_type in ('I', 'U')
loop_delay = 0.25
exception_sleep = 30
`, "simple_consumer3")
	got, err := s.ConsumerConfig()
	require.NoError(t, err)
	want := consumer.Config{
		Queue:        "orders",
		Name:         "orders_copy_v2",
		LazyFetch:    500,
		MinCount:     100,
		MinInterval:  2 * time.Minute,
		KeepLag:      30 * time.Second,
		Filter:       pgq.And(pgq.TableIn("orders", "sales.items"), pgq.SQLFilter("ev_type in ('I', 'U')")),
		PollInterval: 250 * time.Millisecond,
		ErrorBackoff: consumer.Backoff{Initial: 30 * time.Second, Max: 30 * time.Second, Multiplier: 1},
	}
	require.Equal(t, want, got)
	require.Equal(t, "(ev_extra1 in ('public.orders', 'sales.items')) and ((ev_type in ('I', 'U')))", got.Filter.String())

	r, err := s.RemoteConfig()
	require.NoError(t, err)
	require.Equal(t, remote.Config{Consumer: want}, r)
}

// TestConsumerConfigDefaults: unset keys leave fields zero (consumer's
// defaults), the consumer name defaults to job_name, the old compat keys
// win when set and not empty, and empty values mean "off" where Skytools
// reads them so.
func TestConsumerConfigDefaults(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, ini string
		want      consumer.Config
	}{
		{"minimal: name from the file name", "[job]\nqueue_name = q\n",
			consumer.Config{Queue: "q", Name: "mover"}},
		{"job_name set", "[job]\nqueue_name = q\njob_name = j1\n",
			consumer.Config{Queue: "q", Name: "j1"}},
		{"compat keys win", "[job]\nqueue_name = q\npgq_queue_name = old_q\nconsumer_name = c\npgq_consumer_id = old_c\n",
			consumer.Config{Queue: "old_q", Name: "old_c"}},
		{"empty compat keys fall back", "[job]\nqueue_name = q\npgq_queue_name =\nconsumer_name = c\npgq_consumer_id =\n",
			consumer.Config{Queue: "q", Name: "c"}},
		{"pgq_lazy_fetch = 0 reads whole batches", "[job]\nqueue_name = q\npgq_lazy_fetch = 0\npgq_autocommit = 1\n",
			consumer.Config{Queue: "q", Name: "mover", NoLazyFetch: true}},
		{"empty intervals and zero count are off", "[job]\nqueue_name = q\npgq_keep_lag =\npgq_batch_collect_interval =\npgq_batch_collect_events = 0\n",
			consumer.Config{Queue: "q", Name: "mover"}},
		{"empty filters are none", "[job]\nqueue_name = q\ntable_filter = ,\nconsumer_filter =  \n",
			consumer.Config{Queue: "q", Name: "mover"}},
		{"table_filter alone, empty items dropped", "[job]\nqueue_name = q\ntable_filter = a,,b\n",
			consumer.Config{Queue: "q", Name: "mover", Filter: pgq.TableIn("a", "b")}},
		{"consumer_filter alone", "[job]\nqueue_name = q\nconsumer_filter = ev_extra2 = 'x;y'\n",
			consumer.Config{Queue: "q", Name: "mover", Filter: pgq.SQLFilter("ev_extra2 = 'x;y'")}},
		{"DEFAULT keys count", "[DEFAULT]\nqueue_name = shared\nloop_delay = 2\n[job]\n",
			consumer.Config{Queue: "shared", Name: "mover", PollInterval: 2 * time.Second}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got, err := section(t, "/etc/sky/mover.ini", c.ini, "job").ConsumerConfig()
			require.NoError(t, err)
			require.Equal(t, c.want, got)
		})
	}
}

// TestConsumerConfigBadValues: a bad value fails with an error naming
// file, line, section, key and value; every bad key is reported at once.
func TestConsumerConfigBadValues(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, lines string
		sentinel    error
		contains    []string
	}{
		{"no queue", "consumer_name = c", skytools.ErrNoKey, []string{"[job] queue_name", "needs queue_name"}},
		{"empty consumer_name", "queue_name = q\nconsumer_name =", skytools.ErrBadValue, []string{`consumer_name = ""`, "empty"}},
		{"control character in consumer name", "queue_name = q\nconsumer_name = a\tb", skytools.ErrBadValue, []string{`consumer_name = "a\tb"`, "control"}},
		{"lazy fetch not a number", "queue_name = q\npgq_lazy_fetch = lots", skytools.ErrBadValue, []string{`job.ini:4: [job] pgq_lazy_fetch = "lots"`, "not an integer"}},
		{"negative lazy fetch", "queue_name = q\npgq_lazy_fetch = -1", skytools.ErrBadValue, []string{`pgq_lazy_fetch = "-1"`, "negative"}},
		{"autocommit with lazy fetch", "queue_name = q\npgq_autocommit = 1", skytools.ErrBadValue, []string{"pgq_autocommit", "pgq_lazy_fetch"}},
		{"count too big", "queue_name = q\npgq_batch_collect_events = 3000000000", skytools.ErrBadValue, []string{"pgq_batch_collect_events"}},
		{"interval not understood", "queue_name = q\npgq_keep_lag = 1h30", skytools.ErrBadValue, []string{`pgq_keep_lag = "1h30"`, "10 min"}},
		{"negative interval", "queue_name = q\npgq_batch_collect_interval = 5 min ago", skytools.ErrBadValue, []string{"pgq_batch_collect_interval", "negative"}},
		{"hostile consumer_filter", "queue_name = q\nconsumer_filter = true; drop table t", skytools.ErrBadValue, []string{"consumer_filter", "semicolon"}},
		{"loop_delay 0", "queue_name = q\nloop_delay = 0", skytools.ErrBadValue, []string{"loop_delay", "exits when idle"}},
		{"loop_delay not a number", "queue_name = q\nloop_delay = soon", skytools.ErrBadValue, []string{`loop_delay = "soon"`, "not a number"}},
		{"loop_delay infinite", "queue_name = q\nloop_delay = inf", skytools.ErrBadValue, []string{`loop_delay = "inf"`}},
		{"exception_sleep 0", "queue_name = q\nexception_sleep = 0", skytools.ErrBadValue, []string{"exception_sleep", "tight loop"}},
		{"broken reference", "queue_name = %(nope)s", skytools.ErrInterpolation, []string{"queue_name", "nope"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := section(t, "/etc/sky/job.ini", "[DEFAULT]\n[job]\n"+c.lines+"\n", "job").ConsumerConfig()
			require.ErrorIs(t, err, c.sentinel)
			var e *skytools.Error
			require.ErrorAs(t, err, &e)
			require.Equal(t, "/etc/sky/job.ini", e.File)
			require.Equal(t, "job", e.Section)
			for _, s := range c.contains {
				require.ErrorContains(t, err, s)
			}
			_, rerr := section(t, "/etc/sky/job.ini", "[DEFAULT]\n[job]\n"+c.lines+"\n", "job").RemoteConfig()
			require.Equal(t, err.Error(), rerr.Error())
		})
	}

	_, err := section(t, "j.ini", "[job]\nqueue_name = q\npgq_lazy_fetch = x\nloop_delay = y\npgq_keep_lag = z\n", "job").ConsumerConfig()
	for _, key := range []string{"pgq_lazy_fetch", "loop_delay", "pgq_keep_lag"} {
		require.ErrorContains(t, err, "[job] "+key, "every bad key is reported")
	}
	var joined interface{ Unwrap() []error }
	require.True(t, errors.As(err, &joined))
	require.Len(t, joined.Unwrap(), 3)
}

// TestJobSettings: the runner's keys, with Skytools' defaults when unset,
// ~ expanded in logfile and pidfile, and bad values reported.
func TestJobSettings(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	s := section(t, "/etc/sky/orders.ini", `[queue_mover3]
src_db = dbname=src
dst_db = dbname=dst port=%(port)s
port = 5433
logfile = ~/log/%(job_name)s.log
pidfile = /run/%(service_name)s.pid
loop_delay = 0
exception_sleep = 1.5
connection_lifetime = 60
keepalive_stats = 0
`, "queue_mover3")
	got, err := s.JobSettings()
	require.NoError(t, err)
	require.Equal(t, skytools.JobSettings{
		Service:            "queue_mover3",
		JobName:            "orders",
		SrcDB:              "dbname=src",
		DstDB:              "dbname=dst port=5433",
		Logfile:            filepath.Join(home, "log/orders.log"),
		Pidfile:            "/run/queue_mover3.pid",
		LoopDelay:          0,
		ExceptionSleep:     1500 * time.Millisecond,
		ConnectionLifetime: time.Minute,
		KeepaliveStats:     0,
	}, got)

	got, err = section(t, "", "[bare]\n", "bare").JobSettings()
	require.NoError(t, err)
	require.Equal(t, skytools.JobSettings{Service: "bare", JobName: "bare", LoopDelay: time.Second, ExceptionSleep: 20 * time.Second,
		ConnectionLifetime: 20 * time.Minute, KeepaliveStats: 5 * time.Minute}, got)

	_, err = section(t, "x.ini", "[j]\nconnection_lifetime = 1.5\nkeepalive_stats = -1\nexception_sleep = -2\nloop_delay = nan\n", "j").JobSettings()
	require.ErrorIs(t, err, skytools.ErrBadValue)
	for _, s := range []string{`connection_lifetime = "1.5"`, `keepalive_stats = "-1"`, `exception_sleep = "-2"`, `loop_delay = "nan"`} {
		require.ErrorContains(t, err, s)
	}
	require.False(t, strings.Contains(err.Error(), "dbname"), "values of other keys stay out of errors")
}
