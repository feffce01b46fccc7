package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/pgq-go/pgq/pgq"
)

func init() {
	register("queue", "create, drop and configure queues", runQueue)
}

const queueUsage = `usage: pgqctl queue <create|drop|config> [flags] QUEUE

  create QUEUE [config flags]   create a queue (pgq.create_queue), then apply
                                any config flags; an existing queue is kept
  drop QUEUE [--force]          drop a queue (pgq.drop_queue); --force
                                unregisters its consumers first
  config QUEUE [config flags]   change settings (pgq.set_queue_config) and
                                print the resulting configuration; without
                                flags only prints it (--json for JSON)

Every subcommand takes --dsn (default $DATABASE_URL). Run
'pgqctl queue <sub> --help' for its flags.
`

func runQueue(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return subcommands(ctx, "queue", queueUsage, map[string]runFunc{
		"create": runQueueCreate,
		"drop":   runQueueDrop,
		"config": runQueueConfig,
	}, args, stdout, stderr)
}

// queueConfigFlags adds one flag per pgq.QueueConfig field.
func queueConfigFlags(f *cmdFlags, cfg *pgq.QueueConfig) {
	f.Var(optInt{&cfg.TickerMaxCount}, "ticker-max-count", "tick after this `many` events (ticker_max_count; 1 to 2147483647; PgQ default 500)")
	f.Var(optDuration{&cfg.TickerMaxLag}, "ticker-max-lag", "tick when events are this old (ticker_max_lag; `duration`: seconds or e.g. 500ms; 0 ticks every ticker round while events wait; default 3s)")
	f.Var(optDuration{&cfg.TickerIdlePeriod}, "ticker-idle-period", "tick this often without events (ticker_idle_period; `duration`, at least 1ms; default 1m)")
	f.Var(optBool{&cfg.TickerPaused}, "ticker-paused", "pause ticking (ticker_paused; --ticker-paused=false resumes)")
	f.Var(optDuration{&cfg.RotationPeriod}, "rotation-period", "rotate event tables this often (rotation_period; `duration`, at least 1s; default 2h)")
	f.Var(optBool{&cfg.ExternalTicker}, "external-ticker", "ticks come from elsewhere, not pgq.ticker() (external_ticker)")
	// No --disable-insert: PgQ 3.5's set_queue_config refuses that key.
}

// Bounds of the settings pgqctl takes. PgQ itself takes any value its
// columns hold, including ones that break the queue's schedule.
const (
	minRotationPeriod   = time.Second      // 0 rotates on every maintenance run
	minTickerIdlePeriod = time.Millisecond // 0 ticks an idle queue every ticker_max_lag/2
	maxTickerMaxCount   = math.MaxInt32    // the column is an int4
)

// checkQueueConfig refuses settings that make no sense for a queue,
// before anything is changed: every setting given is applied, or none.
func checkQueueConfig(c pgq.QueueConfig) error {
	switch {
	case c.TickerMaxCount != nil && *c.TickerMaxCount < 1:
		return fmt.Errorf("--ticker-max-count %d: ticker_max_count must be at least 1", *c.TickerMaxCount)
	case c.TickerMaxCount != nil && *c.TickerMaxCount > maxTickerMaxCount:
		return fmt.Errorf("--ticker-max-count %d: ticker_max_count must be at most %d", *c.TickerMaxCount, maxTickerMaxCount)
	case c.TickerMaxLag != nil && *c.TickerMaxLag < 0: // parseDuration refuses it first
		return fmt.Errorf("--ticker-max-lag %v: ticker_max_lag must not be negative", *c.TickerMaxLag)
	case c.TickerIdlePeriod != nil && *c.TickerIdlePeriod < minTickerIdlePeriod:
		return fmt.Errorf("--ticker-idle-period %v: ticker_idle_period must be at least %v (0 would tick an idle queue every half ticker_max_lag)",
			*c.TickerIdlePeriod, minTickerIdlePeriod)
	case c.RotationPeriod != nil && *c.RotationPeriod < minRotationPeriod:
		return fmt.Errorf("--rotation-period %v: rotation_period must be at least %v (0 would rotate the event tables on every maintenance run)",
			*c.RotationPeriod, minRotationPeriod)
	}
	return nil
}

func configSet(c pgq.QueueConfig) bool {
	return c.TickerMaxCount != nil || c.TickerMaxLag != nil || c.TickerIdlePeriod != nil || c.TickerPaused != nil ||
		c.RotationPeriod != nil || c.ExternalTicker != nil
}

// oneName parses args and returns the single positional argument.
func oneName(f *cmdFlags, args []string, what string) (string, int, bool) {
	pos, err := f.parse(args)
	if err != nil {
		return "", parseFailure(err), false
	}
	switch {
	case len(pos) == 0:
		return "", f.fail(usagef("missing %s", what)), false
	case len(pos) > 1:
		return "", f.fail(usagef("unexpected argument %q", pos[1])), false
	}
	if err := pgq.ValidateName(what, pos[0]); err != nil {
		return "", f.fail(usagef("%v", err)), false
	}
	if err := f.needDSN(); err != nil {
		return "", f.fail(err), false
	}
	return pos[0], 0, true
}

func runQueueCreate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newCmdFlags("queue create", "usage: pgqctl queue create [flags] QUEUE\n\nCreates QUEUE (with its first tick), then applies the config flags.", stderr)
	f.dsnFlag()
	var cfg pgq.QueueConfig
	queueConfigFlags(f, &cfg)
	name, code, ok := oneName(f, args, "queue")
	if !ok {
		return code
	}
	if err := checkQueueConfig(cfg); err != nil {
		return f.fail(usagef("queue %s not created: %v", name, err))
	}
	conn, err := connect(ctx, f.dsn)
	if err != nil {
		return f.fail(err)
	}
	defer conn.Close(context.Background())
	created, err := pgq.CreateQueue(ctx, conn, name)
	if err != nil {
		return f.fail(err)
	}
	if err := pgq.SetQueueConfig(ctx, conn, name, cfg); err != nil {
		return f.fail(err)
	}
	if created {
		fmt.Fprintf(stdout, "created queue %s\n", name)
	} else {
		fmt.Fprintf(stdout, "queue %s already exists\n", name)
	}
	if configSet(cfg) {
		return printQueueConfig(ctx, conn, name, false, stdout, f)
	}
	return 0
}

func runQueueDrop(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newCmdFlags("queue drop", "usage: pgqctl queue drop [flags] QUEUE\n\nDrops QUEUE and its events. It fails while consumers are registered,\nunless --force (which unregisters them).", stderr)
	f.dsnFlag()
	force := f.Bool("force", false, "unregister the queue's consumers first")
	name, code, ok := oneName(f, args, "queue")
	if !ok {
		return code
	}
	conn, err := connect(ctx, f.dsn)
	if err != nil {
		return f.fail(err)
	}
	defer conn.Close(context.Background())
	if !*force {
		// pgq.drop_queue's own refusal is terse; say who is registered.
		cs, err := pgq.ListConsumers(ctx, conn, name)
		if err != nil {
			return f.fail(err)
		}
		if len(cs) > 0 {
			names := make([]string, len(cs))
			for i, c := range cs {
				names[i] = c.Name
			}
			return f.fail(fmt.Errorf("queue %s has %d consumer(s) registered (%v); unregister them or use --force", name, len(cs), names))
		}
	}
	if err := pgq.DropQueue(ctx, conn, name, *force); err != nil {
		return f.fail(err)
	}
	fmt.Fprintf(stdout, "dropped queue %s\n", name)
	return 0
}

func runQueueConfig(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newCmdFlags("queue config", "usage: pgqctl queue config [flags] QUEUE\n\nSets the given settings of QUEUE and prints its configuration.", stderr)
	f.dsnFlag()
	f.jsonFlag()
	var cfg pgq.QueueConfig
	queueConfigFlags(f, &cfg)
	name, code, ok := oneName(f, args, "queue")
	if !ok {
		return code
	}
	if err := checkQueueConfig(cfg); err != nil {
		return f.fail(usagef("queue %s not changed: %v", name, err))
	}
	conn, err := connect(ctx, f.dsn)
	if err != nil {
		return f.fail(err)
	}
	defer conn.Close(context.Background())
	if err := pgq.SetQueueConfig(ctx, conn, name, cfg); err != nil {
		return f.fail(err)
	}
	return printQueueConfig(ctx, conn, name, f.json, stdout, f)
}

// queueConfigJSON is what "queue config --json" prints.
type queueConfigJSON struct {
	Name             string  `json:"name"`
	TickerMaxCount   int     `json:"ticker_max_count"`
	TickerMaxLag     seconds `json:"ticker_max_lag_seconds"`
	TickerIdlePeriod seconds `json:"ticker_idle_period_seconds"`
	TickerPaused     bool    `json:"ticker_paused"`
	RotationPeriod   seconds `json:"rotation_period_seconds"`
	ExternalTicker   bool    `json:"external_ticker"`
	DisableInsert    bool    `json:"disable_insert"`
}

func printQueueConfig(ctx context.Context, db pgq.DB, name string, asJSON bool, stdout io.Writer, f *cmdFlags) int {
	q, err := pgq.GetQueueInfo(ctx, db, name)
	if err != nil {
		return f.fail(err)
	}
	// get_queue_info does not report disable_insert.
	var disableInsert bool
	if err := db.QueryRow(ctx, "select queue_disable_insert from pgq.queue where queue_name = $1", name).Scan(&disableInsert); err != nil {
		return f.fail(err)
	}
	c := queueConfigJSON{
		Name: q.Name, TickerMaxCount: q.TickerMaxCount, TickerMaxLag: seconds(q.TickerMaxLag),
		TickerIdlePeriod: seconds(q.TickerIdlePeriod), TickerPaused: q.TickerPaused,
		RotationPeriod: seconds(q.RotationPeriod), ExternalTicker: q.ExternalTicker, DisableInsert: disableInsert,
	}
	if asJSON {
		if err := writeJSON(stdout, c); err != nil {
			return f.fail(err)
		}
		return 0
	}
	t := newTable(stdout)
	for _, kv := range [][2]any{
		{"queue", c.Name},
		{"ticker_max_count", c.TickerMaxCount},
		{"ticker_max_lag", time.Duration(c.TickerMaxLag)},
		{"ticker_idle_period", time.Duration(c.TickerIdlePeriod)},
		{"ticker_paused", c.TickerPaused},
		{"rotation_period", time.Duration(c.RotationPeriod)},
		{"external_ticker", c.ExternalTicker},
		{"disable_insert", c.DisableInsert},
	} {
		fmt.Fprintf(t, "%s\t%v\n", kv[0], kv[1])
	}
	t.Flush()
	return 0
}
