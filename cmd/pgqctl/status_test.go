package main

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

// pgqctl runs a command line in-process and returns its exit code and
// output.
func pgqctl(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut strings.Builder
	code = run(context.Background(), args, &out, &errOut)
	require.NotContains(t, errOut.String(), "goroutine ", "no stack trace")
	require.NotContains(t, errOut.String(), "internal error")
	return code, out.String(), errOut.String()
}

// statusJSON runs "status --json" and parses its output.
func statusJSON(t *testing.T, dsn string, extra ...string) (int, statusReport) {
	t.Helper()
	code, out, errOut := pgqctl(t, append([]string{"status", "--json", "--dsn", dsn}, extra...)...)
	var rep statusReport
	require.NoError(t, json.Unmarshal([]byte(out), &rep), "stdout: %s\nstderr: %s", out, errOut)
	return code, rep
}

// statusSetup is a fresh database with queue "q" and consumer "c".
type statusSetup struct {
	db  *pgtest.DB
	ctx context.Context
}

func newStatusSetup(t *testing.T) statusSetup {
	t.Helper()
	s := statusSetup{db: cluster.NewDB(t), ctx: context.Background()}
	_, err := pgq.CreateQueue(s.ctx, s.db.Pool, "q")
	require.NoError(t, err)
	_, err = pgq.RegisterConsumer(s.ctx, s.db.Pool, "q", "c")
	require.NoError(t, err)
	return s
}

func (s statusSetup) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	_, err := s.db.Pool.Exec(s.ctx, sql, args...)
	require.NoError(t, err)
}

// ageTicks moves every tick of queue q back in time by age: the state of
// a queue whose ticker has not run for that long.
func (s statusSetup) ageTicks(t *testing.T, age time.Duration) {
	s.exec(t, `update pgq.tick set tick_time = tick_time - $1::interval
		where tick_queue = (select queue_id from pgq.queue where queue_name = 'q')`, age.String())
}

func (s statusSetup) insert(t *testing.T) {
	t.Helper()
	_, err := pgq.InsertEvent(s.ctx, s.db.Pool, "q", pgq.EventData{Data: pgq.T("x")})
	require.NoError(t, err)
}

func findConsumer(t *testing.T, rep statusReport, queue, name string) (queueStatus, consumerStatus) {
	t.Helper()
	for _, q := range rep.Queues {
		if q.Name != queue {
			continue
		}
		for _, c := range q.Consumers {
			if c.Name == name {
				return q, c
			}
		}
	}
	t.Fatalf("consumer %s/%s not in report %+v", queue, name, rep)
	return queueStatus{}, consumerStatus{}
}

func TestStatusHealthy(t *testing.T) {
	t.Parallel()
	s := newStatusSetup(t)
	_, err := pgq.CreateQueue(s.ctx, s.db.Pool, "idle_q")
	require.NoError(t, err)

	code, out, errOut := pgqctl(t, "status", "--dsn", s.db.DSN)
	require.Equal(t, 0, code, "stdout: %s\nstderr: %s", out, errOut)
	require.Contains(t, out, "PgQ 3.")
	require.Contains(t, out, "QUEUE")
	require.Contains(t, out, "idle_q")
	require.Contains(t, out, "status: ok")
	require.Regexp(t, `(?m)^q\s+c\s+.*\s+ok$`, out)

	code, rep := statusJSON(t, s.db.DSN)
	require.Equal(t, 0, code)
	require.True(t, rep.Healthy)
	require.Empty(t, rep.Problems)
	require.NotEmpty(t, rep.ServerVersion)
	require.Equal(t, s.db.Name, rep.Database)
	require.True(t, strings.HasPrefix(rep.PgqVersion, "3."), rep.PgqVersion)
	require.Len(t, rep.Queues, 2)
	q, c := findConsumer(t, rep, "q", "c")
	require.Equal(t, 3, q.Tables)
	require.Equal(t, 500, q.TickerMaxCount)
	require.Equal(t, seconds(3*time.Second), q.TickerMaxLag)
	require.Equal(t, seconds(time.Minute), q.TickerIdlePeriod)
	require.Equal(t, seconds(2*time.Hour), q.RotationPeriod)
	require.NotZero(t, q.LastTickID)
	require.Equal(t, q.LastTickID, c.LastTick)
	require.Zero(t, c.CurrentBatch)

	// --queue limits the report.
	code, rep = statusJSON(t, s.db.DSN, "--queue", "idle_q")
	require.Equal(t, 0, code)
	require.Len(t, rep.Queues, 1)
	require.Equal(t, "idle_q", rep.Queues[0].Name)
	require.Empty(t, rep.Queues[0].Consumers)
}

func TestStatusStalledTicker(t *testing.T) {
	t.Parallel()
	s := newStatusSetup(t)

	// Idle queue, last tick 20 s ago: not due before the 1 min idle
	// period, so healthy even with a tight --max-ticker-lag.
	s.ageTicks(t, 20*time.Second)
	code, rep := statusJSON(t, s.db.DSN, "--max-ticker-lag", "1s")
	require.Equal(t, 0, code, "%+v", rep.Problems)
	require.True(t, rep.Healthy)

	// Events wait: the tick was due ticker_max_lag (3 s) after the last.
	// (PgQ's new-event count is one short on a queue's first event.)
	s.insert(t)
	s.insert(t)
	code, rep = statusJSON(t, s.db.DSN, "--max-ticker-lag", "1s")
	require.Equal(t, 1, code)
	require.False(t, rep.Healthy)
	require.Len(t, rep.Problems, 1)
	require.Contains(t, rep.Problems[0], "queue q: ticker stalled")
	require.Contains(t, rep.Problems[0], "event(s) waiting")
	require.Positive(t, rep.Queues[0].NewEvents)
	// ... but 17 s late is within the default 30 s allowance.
	code, _ = statusJSON(t, s.db.DSN)
	require.Equal(t, 0, code)

	// No tick for an hour: stalled whatever the queue's idle period.
	s.ageTicks(t, time.Hour)
	code, out, _ := pgqctl(t, "status", "--dsn", s.db.DSN)
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "status: UNHEALTHY")
	require.Regexp(t, `(?m)^q\s.*ticker stalled$`, out)
	require.Contains(t, out, "queue q: ticker stalled: last tick 1h00m ago")

	// A paused ticker is reported as such.
	require.NoError(t, pgq.SetQueueConfig(s.ctx, s.db.Pool, "q", pgq.QueueConfig{TickerPaused: pgq.Ptr(true)}))
	code, rep = statusJSON(t, s.db.DSN)
	require.Equal(t, 1, code)
	require.True(t, rep.Queues[0].TickerPaused)
	require.Contains(t, rep.Problems[0], "queue q: ticker paused")
}

func TestStatusNoTicks(t *testing.T) {
	t.Parallel()
	s := newStatusSetup(t)
	s.exec(t, "delete from pgq.subscription")
	s.exec(t, "delete from pgq.tick")
	code, rep := statusJSON(t, s.db.DSN)
	require.Equal(t, 1, code)
	require.Contains(t, rep.Problems[0], "queue q: no ticks")
}

func TestStatusLaggingAndStuckConsumer(t *testing.T) {
	t.Parallel()
	s := newStatusSetup(t)
	_, err := pgq.RegisterConsumer(s.ctx, s.db.Pool, "q", "fast")
	require.NoError(t, err)
	s.insert(t)
	s.insert(t)
	// The consumers' position is now an hour old; then two fresh ticks.
	// (pgq.ticker, not force_tick, which inflates pending counts.)
	s.ageTicks(t, time.Hour)
	n, err := pgq.Ticker(s.ctx, s.db.Pool)
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
	// "fast" catches up; "c" does not.
	for {
		b, err := pgq.NextBatch(s.ctx, s.db.Pool, "q", "fast")
		require.NoError(t, err)
		if b == nil {
			break
		}
		_, err = pgq.FinishBatch(s.ctx, s.db.Pool, b.ID)
		require.NoError(t, err)
	}

	// c is an hour behind the newest tick, but was seen recently: lagging.
	code, rep := statusJSON(t, s.db.DSN)
	require.Equal(t, 1, code)
	_, c := findConsumer(t, rep, "q", "c")
	require.Len(t, c.Problems, 1, "%v", c.Problems)
	require.Contains(t, c.Problems[0], "lagging: 1h00m behind")
	require.GreaterOrEqual(t, time.Duration(c.Behind), time.Hour)
	require.Positive(t, c.PendingEvents)
	_, fast := findConsumer(t, rep, "q", "fast")
	require.Empty(t, fast.Problems)
	require.Equal(t, []string{rep.Problems[0]}, rep.Problems)
	require.True(t, strings.HasPrefix(rep.Problems[0], "consumer q/c: lagging"))

	// A larger allowance accepts it.
	code, _ = statusJSON(t, s.db.DSN, "--max-consumer-lag", "2h")
	require.Equal(t, 0, code)

	// Not seen for an hour while ticks wait: stuck.
	s.exec(t, "update pgq.subscription set sub_active = now() - interval '1 hour'")
	code, rep = statusJSON(t, s.db.DSN, "--max-consumer-lag", "2h")
	require.Equal(t, 1, code)
	_, c = findConsumer(t, rep, "q", "c")
	require.Len(t, c.Problems, 1)
	require.Contains(t, c.Problems[0], "stuck: no batch for 1h00m")
	// "fast" has nothing to do: an old last-seen is fine.
	_, fast = findConsumer(t, rep, "q", "fast")
	require.Empty(t, fast.Problems)

	// An open batch that is not finished: stuck in that batch.
	b, err := pgq.NextBatch(s.ctx, s.db.Pool, "q", "c")
	require.NoError(t, err)
	require.NotNil(t, b)
	s.exec(t, "update pgq.subscription set sub_active = now() - interval '1 hour'")
	code, out, _ := pgqctl(t, "status", "--dsn", s.db.DSN, "--max-consumer-lag", "2h")
	require.Equal(t, 1, code)
	require.Regexp(t, `(?m)^q\s+c\s.*\s`+itoa(b.ID)+`\s+stuck$`, out)
	require.Contains(t, out, "consumer q/c: stuck: batch "+itoa(b.ID)+" open for 1h00m")

	code, _ = statusJSON(t, s.db.DSN, "--max-consumer-lag", "2h", "--max-last-seen", "2h")
	require.Equal(t, 0, code)
}

func TestStatusErrors(t *testing.T) {
	t.Parallel()
	plain := cluster.NewPlainDB(t)
	code, _, errOut := pgqctl(t, "status", "--dsn", plain.DSN)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "pgq extension is not installed")

	code, _, errOut = pgqctl(t, "status", "--dsn", "postgres://nobody@127.0.0.1:1/none?connect_timeout=5")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, `pgqctl status: cannot connect to database "none" on 127.0.0.1:1 as user "nobody": connection refused`)

	db := cluster.NewDB(t)
	code, _, errOut = pgqctl(t, "status", "--dsn", db.DSN, "--queue", "nope")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "queue not found")

	// An empty database is healthy.
	code, out, _ := pgqctl(t, "status", "--dsn", db.DSN)
	require.Equal(t, 0, code)
	require.Contains(t, out, "no queues")
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestStatusColumnsAligned: names with multibyte, wide and combining
// characters, and names longer than the documented width, keep the
// tables' columns aligned on a terminal.
func TestStatusColumnsAligned(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := cluster.NewDB(t)
	const (
		wideQueue = "注文キュー"           // 5 wide characters: 10 columns, 15 bytes
		accented  = "ünïcødé"         // precomposed: 7 columns, 7 runes, 11 bytes
		combining = "cafe\u0301_sync" // "café_sync" with a combining accent: 9 columns, 10 runes
		asciiQ    = "q"               // short
		shortC    = "c"               // short
	)
	longQueue := strings.Repeat("long_queue_name_", 8) // 128 columns
	longWide := strings.Repeat("消費者", 20)              // 60 wide characters: 120 columns
	for q, cs := range map[string][]string{
		wideQueue: {accented, combining, longWide},
		longQueue: {shortC, accented},
		asciiQ:    {shortC},
	} {
		_, err := pgq.CreateQueue(ctx, db.Pool, q)
		require.NoError(t, err)
		for _, c := range cs {
			_, err = pgq.RegisterConsumer(ctx, db.Pool, q, c)
			require.NoError(t, err)
		}
	}

	code, out, errOut := pgqctl(t, "status", "--dsn", db.DSN)
	require.Equal(t, 0, code, "%s%s", out, errOut)
	tables := strings.Split(out, "\n\n")
	require.GreaterOrEqual(t, len(tables), 3, out)
	queues, consumers := strings.Split(tables[1], "\n"), strings.Split(tables[2], "\n")
	require.True(t, strings.HasPrefix(queues[0], "QUEUE "), out)
	require.True(t, strings.HasPrefix(consumers[0], "QUEUE "), out)
	require.Len(t, queues, 1+3, out)
	require.Len(t, consumers, 1+6, out)
	for _, table := range [][]string{queues, consumers} {
		header := cellStarts(table[0])
		for _, line := range table[1:] {
			require.Equal(t, header, cellStarts(line), "cells start under their headers:\n%s\n%s", table[0], line)
		}
	}

	// Names wider than maxNameWidth are cut to it, ending in an ellipsis.
	cut := longQueue[:maxNameWidth-1] + "…"
	require.Contains(t, out, cut+"  ")
	require.NotContains(t, out, longQueue)
	wideCut := strings.Repeat("消費者", 6) + "消" + "…" // 19 wide characters and "…": 39 columns
	require.Equal(t, maxNameWidth-1, testWidth(wideCut))
	require.Contains(t, out, wideCut+"  ")
	require.NotContains(t, out, longWide)
	for _, name := range []string{wideQueue, accented, combining} {
		require.Contains(t, out, name+"  ", "short names whole")
	}

	// JSON has the names whole; the width is documented.
	_, rep := statusJSON(t, db.DSN)
	findConsumer(t, rep, longQueue, accented)
	findConsumer(t, rep, wideQueue, longWide)
	_, _, help := pgqctl(t, "status", "--help")
	require.Contains(t, help, "wider than 40 columns")
}

// cellStarts returns the display column at which each cell of a table
// line starts (cells are two or more spaces apart).
func cellStarts(line string) []int {
	var starts []int
	col, spaces := 0, 0
	for _, r := range line {
		if r == ' ' {
			spaces++
		} else {
			if col == 0 || spaces >= 2 {
				starts = append(starts, col)
			}
			spaces = 0
		}
		col += testWidth(string(r))
	}
	return starts
}

// testWidth is the display width of the test's names: CJK characters take
// two columns, combining accents none.
func testWidth(s string) int {
	n := 0
	for _, r := range s {
		switch {
		case r >= 0x3000 && r <= 0x9fff:
			n += 2
		case r >= 0x300 && r <= 0x36f:
		default:
			n++
		}
	}
	return n
}
