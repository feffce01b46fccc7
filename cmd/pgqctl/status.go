package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/pgq-go/pgq/pgq"
)

func init() {
	register("status", "queues, consumers and health of one database (exit 1 when unhealthy)", runStatus)
}

const statusUsage = `usage: pgqctl status [flags]

Shows what Skytools' "pgqadm status" shows: server and PgQ versions; per
queue its event tables and rotation, ticker thresholds, ticker lag, events
per second and events not yet ticked; per consumer its lag, last seen,
pending events and open batch. Then a health verdict:

  ticker paused    the queue's ticker_paused is set: nothing gets ticked
  ticker stalled   the last tick is older than when the next one was due
                   (ticker_max_lag after it when events wait, or
                   ticker_max_count reached, ticker_idle_period when the
                   queue is idle) by more than --max-ticker-lag
  no ticks         the queue has never been ticked
  lagging          the consumer's position is more than --max-consumer-lag
                   behind the queue's newest tick
  stuck            the consumer has work (an open batch, or ticks after its
                   position) but has not opened or finished a batch for
                   longer than --max-last-seen

In the tables, queue and consumer names wider than 40 columns are cut to
40 with an ellipsis (…); --json and the problem list give them whole.

Exit status: 0 healthy, 1 unhealthy or the database could not be checked
(the reason is on stderr), 2 usage error.
`

// statusFlags are the thresholds of the health verdict.
type statusThresholds struct {
	MaxTickerLag   time.Duration `json:"-"`
	MaxConsumerLag time.Duration `json:"-"`
	MaxLastSeen    time.Duration `json:"-"`
}

// Defaults of the thresholds: generous enough for pgqd's or our ticker's
// default 1 s ticker_period and for consumers between two batches.
const (
	defaultMaxTickerLag   = 30 * time.Second
	defaultMaxConsumerLag = 5 * time.Minute
	defaultMaxLastSeen    = 5 * time.Minute
)

// statusReport is what "status --json" prints.
type statusReport struct {
	Database      string        `json:"database"`
	ServerVersion string        `json:"server_version"`
	PgqVersion    string        `json:"pgq_version"`
	Healthy       bool          `json:"healthy"`
	Problems      []string      `json:"problems"`
	Thresholds    jsonThreshold `json:"thresholds"`
	Queues        []queueStatus `json:"queues"`
}

type jsonThreshold struct {
	MaxTickerLag   seconds `json:"max_ticker_lag_seconds"`
	MaxConsumerLag seconds `json:"max_consumer_lag_seconds"`
	MaxLastSeen    seconds `json:"max_last_seen_seconds"`
}

type queueStatus struct {
	Name             string           `json:"name"`
	Tables           int              `json:"tables"`
	CurTable         int              `json:"cur_table"`
	RotationPeriod   seconds          `json:"rotation_period_seconds"`
	LastRotation     time.Time        `json:"last_rotation"`
	TickerMaxCount   int              `json:"ticker_max_count"`
	TickerMaxLag     seconds          `json:"ticker_max_lag_seconds"`
	TickerIdlePeriod seconds          `json:"ticker_idle_period_seconds"`
	TickerPaused     bool             `json:"ticker_paused"`
	ExternalTicker   bool             `json:"external_ticker"`
	TickerLag        seconds          `json:"ticker_lag_seconds"`
	EventsPerSec     float64          `json:"events_per_sec"`
	NewEvents        int64            `json:"new_events"`
	LastTickID       int64            `json:"last_tick_id"`
	Problems         []string         `json:"problems"`
	Consumers        []consumerStatus `json:"consumers"`
}

type consumerStatus struct {
	Name          string   `json:"name"`
	Lag           seconds  `json:"lag_seconds"`
	Behind        seconds  `json:"behind_seconds"` // lag minus the queue's ticker lag
	LastSeen      seconds  `json:"last_seen_seconds"`
	LastTick      int64    `json:"last_tick"`
	PendingEvents int64    `json:"pending_events"`
	CurrentBatch  int64    `json:"current_batch"` // 0: none open
	NextTick      int64    `json:"next_tick"`
	Problems      []string `json:"problems"`
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newCmdFlags("status", statusUsage, stderr)
	f.dsnFlag()
	f.jsonFlag()
	f.timeoutFlag(30 * time.Second)
	th := statusThresholds{defaultMaxTickerLag, defaultMaxConsumerLag, defaultMaxLastSeen}
	f.Var(durationValue{&th.MaxTickerLag}, "max-ticker-lag", "how late a due tick may be (`duration`: seconds or e.g. 30s)")
	f.Var(durationValue{&th.MaxConsumerLag}, "max-consumer-lag", "how far behind the newest tick a consumer may be (`duration`)")
	f.Var(durationValue{&th.MaxLastSeen}, "max-last-seen", "how long a consumer with work may go without a batch (`duration`)")
	var queue string
	f.StringVar(&queue, "queue", "", "show only this `queue`")
	pos, err := f.parse(args)
	if err != nil {
		return parseFailure(err)
	}
	if len(pos) > 0 {
		return f.fail(usagef("unexpected argument %q", pos[0]))
	}
	if err := f.needDSN(); err != nil {
		return f.fail(err)
	}
	ctx, cancel := f.context(ctx)
	defer cancel()

	rep, err := collectStatus(ctx, f.dsn, queue, th)
	if err != nil {
		return f.fail(err)
	}
	if f.json {
		if err := writeJSON(stdout, rep); err != nil {
			return f.fail(err)
		}
	} else {
		printStatus(stdout, rep)
	}
	if !rep.Healthy {
		return 1
	}
	return 0
}

// collectStatus reads everything in one repeatable-read transaction, so
// queue and consumer figures are from the same moment.
func collectStatus(ctx context.Context, dsn, queue string, th statusThresholds) (*statusReport, error) {
	conn, err := connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	if err := pgq.CheckExtension(ctx, conn); err != nil {
		return nil, err
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.Background())

	rep := &statusReport{
		Problems: []string{},
		Queues:   []queueStatus{},
		Thresholds: jsonThreshold{
			seconds(th.MaxTickerLag), seconds(th.MaxConsumerLag), seconds(th.MaxLastSeen),
		},
	}
	if err := tx.QueryRow(ctx, "select current_database(), current_setting('server_version')").
		Scan(&rep.Database, &rep.ServerVersion); err != nil {
		return nil, err
	}
	if rep.PgqVersion, err = pgq.Version(ctx, tx); err != nil {
		return nil, err
	}
	var qs []pgq.QueueInfo
	var cs []pgq.ConsumerInfo
	if queue != "" {
		q, err := pgq.GetQueueInfo(ctx, tx, queue)
		if err != nil {
			return nil, err
		}
		qs = []pgq.QueueInfo{q}
	} else if qs, err = pgq.ListQueues(ctx, tx); err != nil {
		return nil, err
	}
	if cs, err = pgq.ListConsumers(ctx, tx, queue); err != nil {
		return nil, err
	}
	byQueue := map[string][]pgq.ConsumerInfo{}
	for _, c := range cs {
		byQueue[c.Queue] = append(byQueue[c.Queue], c)
	}
	for _, q := range qs {
		qst := judgeQueue(q, byQueue[q.Name], th)
		for _, p := range qst.Problems {
			rep.Problems = append(rep.Problems, "queue "+q.Name+": "+p)
		}
		for _, c := range qst.Consumers {
			for _, p := range c.Problems {
				rep.Problems = append(rep.Problems, "consumer "+q.Name+"/"+c.Name+": "+p)
			}
		}
		rep.Queues = append(rep.Queues, qst)
	}
	rep.Healthy = len(rep.Problems) == 0
	return rep, nil
}

// judgeQueue turns one queue's info and its consumers into a status with
// verdicts.
func judgeQueue(q pgq.QueueInfo, cs []pgq.ConsumerInfo, th statusThresholds) queueStatus {
	st := queueStatus{
		Name: q.Name, Tables: q.NTables, CurTable: q.CurTable,
		RotationPeriod: seconds(q.RotationPeriod), LastRotation: q.SwitchTime,
		TickerMaxCount: q.TickerMaxCount, TickerMaxLag: seconds(q.TickerMaxLag),
		TickerIdlePeriod: seconds(q.TickerIdlePeriod), TickerPaused: q.TickerPaused,
		ExternalTicker: q.ExternalTicker, TickerLag: seconds(q.TickerLag),
		EventsPerSec: q.EventsPerSec, NewEvents: q.NewEvents, LastTickID: q.LastTickID,
		Problems: []string{}, Consumers: []consumerStatus{},
	}
	switch {
	case q.LastTickID == 0:
		st.Problems = append(st.Problems, "no ticks (is a ticker running?)")
	case q.TickerPaused:
		st.Problems = append(st.Problems, fmt.Sprintf("ticker paused (ticker_paused is set; last tick %s ago)", fmtDur(q.TickerLag)))
	default:
		// When pgq.ticker() would tick this queue: at once when
		// ticker_max_count events wait, ticker_max_lag after the last tick
		// when some wait, ticker_idle_period after it when none do.
		due, why := q.TickerIdlePeriod, "idle period"
		switch {
		case q.NewEvents > 0 && q.NewEvents >= int64(q.TickerMaxCount):
			due, why = 0, "max count reached"
		case q.NewEvents > 0:
			due, why = q.TickerMaxLag, "max lag"
		}
		if late := q.TickerLag - due; late > th.MaxTickerLag {
			st.Problems = append(st.Problems, fmt.Sprintf(
				"ticker stalled: last tick %s ago, due after %s (%s), %d event(s) waiting (is a ticker running?)",
				fmtDur(q.TickerLag), fmtDur(due), why, q.NewEvents))
		}
	}
	for _, c := range cs {
		cst := consumerStatus{
			Name: c.Name, Lag: seconds(c.Lag), LastSeen: seconds(c.LastSeen), LastTick: c.LastTick,
			PendingEvents: c.PendingEvents, CurrentBatch: c.CurrentBatch, NextTick: c.NextTick,
			Problems: []string{},
		}
		// Lag counts from the consumer's last tick; an idle queue ticks
		// rarely, so judge the distance to the newest tick instead.
		behind := max(c.Lag-q.TickerLag, 0)
		cst.Behind = seconds(behind)
		if behind > th.MaxConsumerLag {
			cst.Problems = append(cst.Problems, fmt.Sprintf("lagging: %s behind the newest tick (lag %s), %d events pending",
				fmtDur(behind), fmtDur(c.Lag), c.PendingEvents))
		}
		hasWork := c.CurrentBatch != 0 || c.LastTick < q.LastTickID
		if hasWork && c.LastSeen > th.MaxLastSeen {
			if c.CurrentBatch != 0 {
				cst.Problems = append(cst.Problems, fmt.Sprintf("stuck: batch %d open for %s", c.CurrentBatch, fmtDur(c.LastSeen)))
			} else {
				cst.Problems = append(cst.Problems, fmt.Sprintf("stuck: no batch for %s while ticks wait (is the consumer running?)", fmtDur(c.LastSeen)))
			}
		}
		st.Consumers = append(st.Consumers, cst)
	}
	return st
}

// maxNameWidth is the widest a queue or consumer name is shown in the
// status tables (in terminal columns); wider ones are cut with an
// ellipsis. --json and the problem list give them whole.
const maxNameWidth = 40

func printStatus(w io.Writer, rep *statusReport) {
	fmt.Fprintf(w, "database %s   PostgreSQL %s   PgQ %s\n\n", rep.Database, rep.ServerVersion, rep.PgqVersion)
	if len(rep.Queues) == 0 {
		fmt.Fprintln(w, "no queues")
	} else {
		t := &textTable{}
		t.row("QUEUE", "TABLES", "ROTATION", "TICKER count/lag/idle", "TICKER LAG", "EV/S", "NEW", "LAST TICK", "HEALTH")
		for _, q := range rep.Queues {
			ticker := fmt.Sprintf("%d/%s/%s", q.TickerMaxCount, fmtDur(time.Duration(q.TickerMaxLag)), fmtDur(time.Duration(q.TickerIdlePeriod)))
			if q.TickerPaused {
				ticker += " paused"
			}
			if q.ExternalTicker {
				ticker += " external"
			}
			t.row(fitWidth(q.Name, maxNameWidth), fmt.Sprintf("%d (cur %d)", q.Tables, q.CurTable),
				fmtDur(time.Duration(q.RotationPeriod)), ticker, fmtDur(time.Duration(q.TickerLag)),
				fmt.Sprintf("%.1f", q.EventsPerSec), strconv.FormatInt(q.NewEvents, 10), strconv.FormatInt(q.LastTickID, 10),
				verdict(q.Problems))
		}
		t.write(w)
		fmt.Fprintln(w)
		t = &textTable{}
		t.row("QUEUE", "CONSUMER", "LAG", "BEHIND", "LAST SEEN", "PENDING", "BATCH", "HEALTH")
		n := 0
		for _, q := range rep.Queues {
			for _, c := range q.Consumers {
				batch := "-"
				if c.CurrentBatch != 0 {
					batch = strconv.FormatInt(c.CurrentBatch, 10)
				}
				t.row(fitWidth(q.Name, maxNameWidth), fitWidth(c.Name, maxNameWidth), fmtDur(time.Duration(c.Lag)),
					fmtDur(time.Duration(c.Behind)), fmtDur(time.Duration(c.LastSeen)), strconv.FormatInt(c.PendingEvents, 10),
					batch, verdict(c.Problems))
				n++
			}
		}
		if n == 0 {
			fmt.Fprintln(w, "no consumers")
		} else {
			t.write(w)
		}
	}
	fmt.Fprintln(w)
	if rep.Healthy {
		fmt.Fprintln(w, "status: ok")
		return
	}
	fmt.Fprintf(w, "status: UNHEALTHY (%d)\n", len(rep.Problems))
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "  - %s\n", p)
	}
}

func verdict(problems []string) string {
	if len(problems) == 0 {
		return "ok"
	}
	words := make([]string, len(problems))
	for i, p := range problems {
		// the words before the detail: "stuck", "lagging", "ticker stalled"
		if j := strings.IndexAny(p, ":("); j > 0 {
			p = p[:j]
		}
		words[i] = strings.TrimSpace(p)
	}
	return strings.Join(words, ", ")
}
