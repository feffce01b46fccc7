package job_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgq-go/pgq/job"
	"github.com/stretchr/testify/require"
)

// TestLoad: which sections are jobs, of which kind, under which name, and
// the errors a migrating operator gets for files that say too little.
func TestLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	common := "src_db = dbname=src\ndst_db = dbname=dst\nqueue_name = q\n"

	// The section names the script (Skytools 3 appends a 3); job_name
	// defaults to the file's name, the consumer to job_name.
	j := load(t, writeFile(t, dir, "mover_a.ini", "[queue_mover3]\n"+common+
		"dst_queue_name = dq\nkeepalive_stats = 60\nconnection_lifetime = 30\nloop_delay = 0.25\n"), job.LoadOptions{})
	require.Len(t, j, 1)
	c := j[0].Config()
	require.Equal(t, job.QueueMover, c.Kind)
	require.Equal(t, "mover_a", c.Name)
	require.Equal(t, "mover_a", c.Remote.Consumer.Name)
	require.Equal(t, "q", c.Remote.Consumer.Queue)
	require.Equal(t, "dq", c.DstQueue)
	require.Equal(t, time.Minute, c.Remote.Consumer.StatsPeriod)
	require.Equal(t, 30*time.Second, c.ConnectionLifetime)
	require.Equal(t, 250*time.Millisecond, c.Remote.Consumer.PollInterval)
	require.Contains(t, j[0].Source(), "mover_a.ini [queue_mover3]")

	// job_kind says it when the section name does not; other sections of
	// the file are not jobs.
	j = load(t, writeFile(t, dir, "two.ini", "[londiste3]\nfoo = bar\n\n[my_splitter]\njob_kind = queue_splitter3\njob_name = split\n"+common), job.LoadOptions{})
	require.Len(t, j, 1)
	require.Equal(t, job.QueueSplitter, j[0].Kind())
	require.Equal(t, "split", j[0].Name())
	require.Equal(t, "extra1", j[0].Config().QueueField)

	// --kind names the only section's kind.
	odd := writeFile(t, dir, "odd.ini", "[whatever]\n"+common+"dst_query = select %%(pgq.ev_id)s\n")
	_, err := job.Load(odd, job.LoadOptions{})
	require.ErrorContains(t, err, "no job section")
	require.ErrorContains(t, err, "job_kind")
	j = load(t, odd, job.LoadOptions{Kind: job.SimpleConsumer})
	require.Equal(t, job.SimpleConsumer, j[0].Kind())
	require.Equal(t, "select %(pgq.ev_id)s", j[0].Config().DstQuery)

	// The local consumer's file defaults to Skytools' ~/state/<job>.tick.
	home, err := os.UserHomeDir()
	require.NoError(t, err)
	j = load(t, writeFile(t, dir, "loc.ini", "[simple_local_consumer3]\n"+common+"dst_query = select 1\n"), job.LoadOptions{})
	require.Equal(t, filepath.Join(home, "state", "loc.tick"), j[0].Config().TrackingFile)

	// What is missing or wrong is named with file and section.
	for name, text := range map[string]string{
		"nodst.ini":   "[queue_mover3]\n" + common,
		"badkind.ini": "[x]\njob_kind = queue_shaker\n" + common,
		"badq.ini":    "[simple_consumer3]\n" + common + "dst_query = select '%%(a)s'\n",
		"nosrc.ini":   "[queue_splitter3]\ndst_db = x\nqueue_name = q\n",
		"badlag.ini":  "[queue_mover3]\n" + common + "dst_queue_name = d\npgq_keep_lag = soon\n",
	} {
		_, err := job.Load(writeFile(t, dir, name, text), job.LoadOptions{})
		require.Error(t, err, name)
		require.ErrorContains(t, err, name, "the error names the file")
		switch name {
		case "nodst.ini":
			require.ErrorContains(t, err, "dst_queue_name is required")
		case "badkind.ini":
			require.ErrorContains(t, err, `unknown job kind "queue_shaker"`)
		case "badq.ini":
			require.ErrorContains(t, err, "inside a quoted string")
		case "nosrc.ini":
			require.ErrorContains(t, err, "src_db is required")
		case "badlag.ini":
			require.ErrorContains(t, err, "pgq_keep_lag")
		}
	}
}

// TestLoadAll: a directory is its .ini files in name order; job names
// must be distinct across files.
func TestLoadAll(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	common := "src_db = dbname=src\ndst_db = dbname=dst\nqueue_name = q\ndst_query = select 1\n"
	writeFile(t, dir, "b.ini", "[simple_consumer3]\n"+common)
	writeFile(t, dir, "a.ini", "[simple_serial_consumer]\n"+common)
	writeFile(t, dir, "notes.txt", "not a job")
	jobs, err := job.LoadAll([]string{dir}, job.LoadOptions{})
	require.NoError(t, err)
	require.Len(t, jobs, 2)
	require.Equal(t, "a", jobs[0].Name())
	require.Equal(t, job.SimpleSerialConsumer, jobs[0].Kind())
	require.Equal(t, "b", jobs[1].Name())

	other := t.TempDir()
	writeFile(t, other, "x.ini", "[simple_consumer3]\njob_name = a\n"+common)
	_, err = job.LoadAll([]string{dir, other}, job.LoadOptions{})
	require.ErrorContains(t, err, "two jobs are named a")
	_, err = job.LoadAll([]string{t.TempDir()}, job.LoadOptions{})
	require.ErrorContains(t, err, "has no .ini files")
}

func load(t *testing.T, path string, opts job.LoadOptions) []*job.Job {
	t.Helper()
	j, err := job.Load(path, opts)
	require.NoError(t, err)
	return j
}

// TestLoadNotes: keys that do nothing here are named, with why.
func TestLoadNotes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j := load(t, writeFile(t, dir, "n.ini", "[queue_mover3]\nsrc_db = a\ndst_db = b\nqueue_name = q\ndst_queue_name = d\n"+
		"log_size = 100\nuse_skylog = 1\nsql_retry = 1\nsrc_extra_connstr = x\ndst_queue_nmae = typo\n"), job.LoadOptions{})
	require.ElementsMatch(t, []string{
		"key log_size has no effect here: rotate the logfile with logrotate; SIGHUP reopens it",
		"key use_skylog has no effect here: logs go to logfile and stderr",
		"key sql_retry has no effect here: a failed statement fails the batch, which is retried after exception_sleep",
		"key src_extra_connstr has no effect here: put the options in src_db / dst_db",
		"key dst_queue_nmae is not read (neither by Skytools' generic scripts nor here): a typo?",
	}, j[0].Notes())
}
