package job_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/job"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/remote"
	"github.com/pgq-go/pgq/urlenc"
	"github.com/stretchr/testify/require"
)

// sideBySide is one kind run twice on the same events of one source
// queue: by the Go job and by the Python reference (Skytools' script on
// python3-pgq), each into a destination database of its own, from ini
// files that differ only in job_name and dst_db.
type sideBySide struct {
	ctx      context.Context
	src      *pgtest.DB
	dstGo    *pgtest.DB
	dstPy    *pgtest.DB
	dir      string
	kind     job.Kind
	section  string // the Skytools script's ini section
	tick     int64  // the tick both must consume up to
	iniGo    string
	iniPy    string
	goJob    *job.Job
	prepare  func(dst *pgtest.DB) // per destination, before the jobs run
	extraIni string
}

func newSideBySide(t *testing.T, kind job.Kind, section, extraIni string, prepare func(dst *pgtest.DB)) *sideBySide {
	s := &sideBySide{ctx: testCtx(t), kind: kind, section: section, extraIni: extraIni, prepare: prepare, dir: t.TempDir()}
	s.src = cluster.NewDB(t)
	_, err := pgq.CreateQueue(s.ctx, s.src.Pool, "q")
	require.NoError(t, err)
	s.dstGo, s.dstPy = cluster.NewDB(t), cluster.NewDB(t)
	for _, d := range []*pgtest.DB{s.dstGo, s.dstPy} {
		if kind == job.QueueMover || kind == job.QueueSplitter || kind == job.SimpleSerialConsumer {
			// Skytools' pgq_ext, which the Python SerialConsumer needs
			// installed by hand; the Go job installs it itself.
			require.NoError(t, remote.Install(s.ctx, d.Pool))
		}
		prepare(d)
	}
	ini := func(name string, dst *pgtest.DB) string {
		return writeFile(t, s.dir, name+".ini", fmt.Sprintf(`[%s]
job_name = %s
src_db = %s
dst_db = %s
queue_name = q
logfile = %s/%s.log
pidfile = %s/%s.pid
local_tracking_file = %s/%s.tick
%s
`, section, name, s.src.DSN, dst.DSN, s.dir, name, s.dir, name, s.dir, name, extraIni))
	}
	s.iniGo, s.iniPy = ini("go_job", s.dstGo), ini("py_job", s.dstPy)
	return s
}

// register registers both jobs' consumers, each the way its side does.
func (s *sideBySide) register(t *testing.T) {
	s.goJob = goJob(t, s.kind, s.iniGo)
	msg, err := s.goJob.Admin(s.ctx, "register")
	require.NoError(t, err)
	require.Equal(t, "consumer registered", msg)
	python(t, s.ctx, string(s.kind), s.iniPy, "--register")
}

// run ticks the source and runs both jobs up to that tick.
func (s *sideBySide) run(t *testing.T) {
	var err error
	s.tick, err = pgq.Tick(s.ctx, s.src.Pool, "q")
	require.NoError(t, err)
	runGoUntil(t, s.ctx, s.goJob, s.src.Pool, "q", "go_job", s.tick)
	pythonUntil(t, s.ctx, string(s.kind), s.iniPy, s.src.Pool, "q", "py_job", s.tick)
}

// runGoUntil runs j until its consumer has consumed up to tick, then stops
// it; Run must end cleanly.
func runGoUntil(t *testing.T, ctx context.Context, j *job.Job, src pgq.DB, queue, consumer string, tick int64) {
	t.Helper()
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- j.Run(rctx) }()
	require.Eventually(t, func() bool {
		select {
		case err := <-done:
			done <- err
			return true
		default:
		}
		var last *int64
		require.NoError(t, src.QueryRow(ctx, "select last_tick from pgq.get_consumer_info($1, $2)", queue, consumer).Scan(&last))
		return last != nil && *last >= tick
	}, 60*1e9, 5*1e6, "the Go job did not reach tick %d", tick)
	cancel()
	require.NoError(t, <-done, "the Go job's Run")
}

// events are the source events: every kind of text the hostile corpus
// has, NULLs, row and non-row types; data is urlencoded with keys id and
// name, extra1 names a destination queue for the splitter.
func produce(t *testing.T, ctx context.Context, db pgq.DB) int {
	hostile := pgtest.Hostile(t)
	types := []string{"I:id", "U:id", "D:id", "other"}
	n := 0
	for i, h := range hostile {
		data, err := urlenc.Fields{"id": i, "name": h}.Encode()
		require.NoError(t, err)
		ev := pgq.EventData{Type: pgq.T(types[i%len(types)]), Data: pgq.T(data),
			Extra1: pgq.T([]string{"qa", "qb"}[i%2]), Extra2: pgq.T(h)}
		if i%5 == 0 {
			ev.Extra2 = pgq.Text{} // NULL
		}
		_, err = pgq.InsertEvent(ctx, db, "q", ev)
		require.NoError(t, err)
		n++
	}
	return n
}

// queueEvents reads a destination queue as consumer "reader".
func queueEvents(t *testing.T, ctx context.Context, d *pgtest.DB, queue string) []string {
	var out []string
	for _, ev := range drainQueue(t, ctx, d.Pool, queue, "reader") {
		out = append(out, strings.Join([]string{txt(ev.Type), txt(ev.Data), txt(ev.Extra1), txt(ev.Extra2), txt(ev.Extra3), txt(ev.Extra4),
			ev.Time.UTC().Format("2006-01-02 15:04:05.999999")}, " "))
	}
	return out
}

func txt(v pgq.Text) string {
	if !v.Valid {
		return "NULL"
	}
	return strconv.Quote(v.String)
}

func destQueues(names ...string) func(d *pgtest.DB) {
	return func(d *pgtest.DB) {
		ctx := context.Background()
		for _, q := range names {
			_, err := pgq.CreateQueue(ctx, d.Pool, q)
			if err == nil {
				_, err = pgq.RegisterConsumer(ctx, d.Pool, q, "reader")
			}
			if err != nil {
				panic(err)
			}
		}
	}
}

// TestQueueMoverSideBySide: queue_mover copies every event, payload and
// ev_time, into dst_queue_name, exactly as Skytools' does.
func TestQueueMoverSideBySide(t *testing.T) {
	t.Parallel()
	s := newSideBySide(t, job.QueueMover, "queue_mover3", "dst_queue_name = moved", destQueues("moved"))
	s.register(t)
	n := produce(t, s.ctx, s.src.Pool)
	s.run(t)
	goEvs, pyEvs := queueEvents(t, s.ctx, s.dstGo, "moved"), queueEvents(t, s.ctx, s.dstPy, "moved")
	require.Len(t, goEvs, n)
	require.Equal(t, pyEvs, goEvs)
	// Exactly once: the tick is recorded on the destination (pgq_ext).
	tick, err := remote.LastTick(s.ctx, s.dstGo.Pool, "go_job", "")
	require.NoError(t, err)
	require.Equal(t, s.tick, tick)
}

// TestQueueSplitterSideBySide: each event goes to the queue its extra1
// names, in order, as Skytools' queue_splitter sends it.
func TestQueueSplitterSideBySide(t *testing.T) {
	t.Parallel()
	s := newSideBySide(t, job.QueueSplitter, "queue_splitter3", "", destQueues("qa", "qb"))
	s.register(t)
	n := produce(t, s.ctx, s.src.Pool)
	s.run(t)
	total := 0
	for _, q := range []string{"qa", "qb"} {
		goEvs, pyEvs := queueEvents(t, s.ctx, s.dstGo, q), queueEvents(t, s.ctx, s.dstPy, q)
		require.NotEmpty(t, goEvs, q)
		require.Equal(t, pyEvs, goEvs, q)
		total += len(goEvs)
	}
	require.Equal(t, n, total)
}

const appliedTable = `create table applied (ev_id bigint, tick bigint, typ text, data text, id int, name text,
	ts timestamptz, e1 text, e2 text)`

// The query every simple consumer runs, with the placeholders Skytools'
// docs show, written in the ini with %% as ConfigParser wants.
const dstQueryIni = `dst_query = insert into applied values (%%(pgq.ev_id)s, %%(pgq.tick_id)s, %%(pgq.ev_type)s,
    %%(pgq.ev_data)s, %%(id)s, %%(name)s, %%(pgq.ev_time)s, %%(pgq.ev_extra1)s, %%(pgq.ev_extra2)s)`

func appliedRows(t *testing.T, ctx context.Context, d *pgtest.DB) []string {
	rows, err := d.Pool.Query(ctx, "select applied::text from applied order by ev_id")
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}

func appliedDest(d *pgtest.DB) {
	if _, err := d.Pool.Exec(context.Background(), appliedTable); err != nil {
		panic(err)
	}
}

// TestSimpleSerialConsumerSideBySide: dst_query runs once per event, of
// every type, with the same values as Skytools binds; the tick is tracked
// on the destination.
func TestSimpleSerialConsumerSideBySide(t *testing.T) {
	t.Parallel()
	s := newSideBySide(t, job.SimpleSerialConsumer, "simple_serial_consumer", dstQueryIni, appliedDest)
	s.register(t)
	n := produce(t, s.ctx, s.src.Pool)
	s.run(t)
	goRows, pyRows := appliedRows(t, s.ctx, s.dstGo), appliedRows(t, s.ctx, s.dstPy)
	require.Len(t, goRows, n)
	require.Equal(t, pyRows, goRows)
	tick, err := remote.LastTick(s.ctx, s.dstGo.Pool, "go_job", "")
	require.NoError(t, err)
	require.Equal(t, s.tick, tick)
}

// TestSimpleConsumerSideBySide: dst_query runs once per I:/U:/D: event
// only, as Skytools' simple_consumer.
func TestSimpleConsumerSideBySide(t *testing.T) {
	t.Parallel()
	s := newSideBySide(t, job.SimpleConsumer, "simple_consumer3", dstQueryIni, appliedDest)
	s.register(t)
	n := produce(t, s.ctx, s.src.Pool)
	s.run(t)
	goRows, pyRows := appliedRows(t, s.ctx, s.dstGo), appliedRows(t, s.ctx, s.dstPy)
	require.Len(t, goRows, n-n/4, "the 'other' events are skipped")
	require.Equal(t, pyRows, goRows)
	for _, r := range goRows {
		require.False(t, strings.Contains(r, ",other,"), r)
	}
}

// goJob builds the Go job from the ini file.
func goJob(t *testing.T, kind job.Kind, ini string) *job.Job {
	t.Helper()
	j, err := job.Load(ini, job.LoadOptions{Kind: kind})
	require.NoError(t, err)
	require.Len(t, j, 1)
	require.Equal(t, kind, j[0].Kind())
	require.Equal(t, strings.TrimSuffix(filepath.Base(ini), ".ini"), j[0].Name())
	return j[0]
}

// TestSimpleLocalConsumerSideBySide: as simple_consumer, the position in
// local_tracking_file: both files end at the tick consumed up to, in
// Skytools' format.
func TestSimpleLocalConsumerSideBySide(t *testing.T) {
	t.Parallel()
	s := newSideBySide(t, job.SimpleLocalConsumer, "simple_local_consumer3", dstQueryIni, appliedDest)
	s.register(t)
	n := produce(t, s.ctx, s.src.Pool)
	s.run(t)
	goRows, pyRows := appliedRows(t, s.ctx, s.dstGo), appliedRows(t, s.ctx, s.dstPy)
	require.Len(t, goRows, n-n/4, "the 'other' events are skipped")
	require.Equal(t, pyRows, goRows)
	for _, name := range []string{"go_job", "py_job"} {
		b, err := os.ReadFile(filepath.Join(s.dir, name+".tick"))
		require.NoError(t, err)
		require.Equal(t, strconv.FormatInt(s.tick, 10), string(b), name)
	}
}
