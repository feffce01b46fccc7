package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/apply"
	"github.com/pgq-go/pgq/copier"
	"github.com/pgq-go/pgq/route"
)

func init() {
	register("parked", "list, replay or purge events a targeted copier parked", runParked)
}

const parkedUsage = `usage: pgqctl parked <list|replay|purge> --dsn NODE [flags]

Events a targeted copier could not apply (bad payload, or still failing
after its retries) are parked in pgq_go.parked_event on the node they were
meant for, with the error. Fix the cause, then replay them; or purge them.

  list     show parked events (--consumer, --id, --limit; --json)
  replay   apply them again, each in its own transaction that also removes
           it from the parked table; one that fails again stays parked
           with its new error. Events are taken in park order; one whose
           order key has an earlier event still parked, or that is
           addressed to another node than --node (default: the node of
           the pull consumer that parked them), is refused. Needs the
           applier the copier uses:
             --applier row --table T --keys id[,id2]
             --applier func --func schema.fn
  purge    delete them for good (--consumer or --id required)

--consumer is the pull consumer, "pull.<node>"; relay-side parked events
(bad targets) are on the hub under "relay.<node>".
`

func runParked(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return subcommands(ctx, "parked", parkedUsage, map[string]runFunc{
		"list":   runParkedList,
		"replay": runParkedReplay,
		"purge":  runParkedPurge,
	}, args, stdout, stderr)
}

// parkedFilterFlags adds --consumer, --id and optionally --limit.
func parkedFilterFlags(f *cmdFlags, pf *copier.ParkedFilter, withLimit bool) {
	f.StringVar(&pf.Consumer, "consumer", "", "only events parked by this `consumer` (e.g. pull.node1)")
	f.Var(int64List{&pf.IDs}, "id", "only these park `ids` (repeatable or comma-separated)")
	if withLimit {
		f.IntVar(&pf.Limit, "limit", 1000, "at most this many events")
	}
}

// parkedJSON is one event in "parked list --json".
type parkedJSON struct {
	ParkID   int64     `json:"park_id"`
	Consumer string    `json:"consumer"`
	Queue    string    `json:"queue"`
	ParkedAt time.Time `json:"parked_at"`
	Error    string    `json:"error"`
	EventID  int64     `json:"ev_id"`
	Time     time.Time `json:"ev_time"`
	Retry    int32     `json:"ev_retry"`
	Type     *string   `json:"ev_type"`
	Data     *string   `json:"ev_data"`
	Extra1   *string   `json:"ev_extra1"`
	Extra2   *string   `json:"ev_extra2"`
	Extra3   *string   `json:"ev_extra3"`
	Extra4   *string   `json:"ev_extra4"`
}

func runParkedList(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newCmdFlags("parked list", "usage: pgqctl parked list --dsn NODE [flags]\n\nLists parked events, oldest first.", stderr)
	f.dsnFlag()
	f.jsonFlag()
	var pf copier.ParkedFilter
	parkedFilterFlags(f, &pf, true)
	if code, ok := noArgs(f, args); !ok {
		return code
	}
	if pf.Limit < 1 {
		return f.fail(usagef("--limit must be at least 1"))
	}
	conn, err := connectParked(ctx, f.dsn)
	if err != nil {
		return f.fail(err)
	}
	defer conn.Close(context.Background())
	evs, err := copier.ListParked(ctx, conn, pf)
	if err != nil {
		return f.fail(err)
	}
	if f.json {
		out := make([]parkedJSON, 0, len(evs))
		for _, p := range evs {
			e := p.Event
			out = append(out, parkedJSON{
				ParkID: p.ParkID, Consumer: p.Consumer, Queue: p.Queue, ParkedAt: p.ParkedAt, Error: p.Error,
				EventID: e.ID, Time: e.Time, Retry: e.Retry, Type: textPtr(e.Type.String, e.Type.Valid),
				Data: textPtr(e.Data.String, e.Data.Valid), Extra1: textPtr(e.Extra1.String, e.Extra1.Valid),
				Extra2: textPtr(e.Extra2.String, e.Extra2.Valid), Extra3: textPtr(e.Extra3.String, e.Extra3.Valid),
				Extra4: textPtr(e.Extra4.String, e.Extra4.Valid),
			})
		}
		if err := writeJSON(stdout, out); err != nil {
			return f.fail(err)
		}
		return 0
	}
	if len(evs) == 0 {
		fmt.Fprintln(stdout, "no parked events")
		return 0
	}
	t := newTable(stdout)
	fmt.Fprintln(t, "PARK ID\tCONSUMER\tQUEUE\tPARKED\tEV ID\tTYPE\tTARGET\tERROR")
	for _, p := range evs {
		fmt.Fprintf(t, "%d\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", p.ParkID, p.Consumer, p.Queue,
			p.ParkedAt.Local().Format("2006-01-02 15:04:05"), p.Event.ID, clip(p.Event.Type.String, 20),
			clip(p.Event.Extra1.String, 20), clip(p.Error, 100))
	}
	t.Flush()
	if len(evs) == pf.Limit {
		fmt.Fprintf(stdout, "(first %d; raise --limit for more)\n", pf.Limit)
	}
	return 0
}

// sqlHasParked says whether the database has the copier's parked events
// table, and names the database. (The catalog, not to_regclass: that
// one fails without USAGE on the schema.)
const sqlHasParked = `select current_database(), exists (select 1 from pg_catalog.pg_class c
	join pg_catalog.pg_namespace n on n.oid = c.relnamespace
	where n.nspname = 'pgq_go' and c.relname = 'parked_event')`

// connectParked connects to a database that has parked events: a node
// (or a hub) where a targeted copier was set up.
func connectParked(ctx context.Context, dsn string) (*pgx.Conn, error) {
	conn, err := connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	var db string
	var ok bool
	if err := conn.QueryRow(ctx, sqlHasParked).Scan(&db, &ok); err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	if !ok {
		conn.Close(context.Background())
		return nil, fmt.Errorf("database %q is not a targeted-copy node: no parked events table (pgq_go.parked_event); "+
			"point --dsn at a node's database (or a hub's, for relay-side parked events) where a copier has run", db)
	}
	return conn, nil
}

func textPtr(s string, valid bool) *string {
	if !valid {
		return nil
	}
	return &s
}

// clip shortens s to n runes on one line for a table cell.
func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

func runParkedReplay(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newCmdFlags("parked replay", "usage: pgqctl parked replay --dsn NODE --applier row|func [flags]\n\nApplies parked events again; those that fail again stay parked.\nExit status 1 when any failed.", stderr)
	f.dsnFlag()
	var pf copier.ParkedFilter
	parkedFilterFlags(f, &pf, true)
	var kind, table, keys, fn string
	f.StringVar(&kind, "applier", "", "how to apply: `row` (upsert into --table by --keys) or func (call --func)")
	f.StringVar(&table, "table", "", "row applier: the `table` (optionally schema.table)")
	f.StringVar(&keys, "keys", "", "row applier: key `columns`, comma-separated")
	f.StringVar(&fn, "func", "", "func applier: the SQL `function` called as fn(target text, payload text)")
	var node string
	f.StringVar(&node, "node", "", "the `node` this database belongs to; events addressed elsewhere are refused (default: from the pull consumer, pull.<node>)")
	if code, ok := noArgs(f, args); !ok {
		return code
	}
	if node != "" {
		if err := route.ValidateNode(node); err != nil {
			return f.fail(usagef("--node: %v", err))
		}
	}
	var applier apply.Applier
	switch kind {
	case "row":
		if table == "" || keys == "" || fn != "" {
			return f.fail(usagef("--applier row needs --table and --keys (and no --func)"))
		}
		a, err := apply.NewRowApplier(table, splitComma(keys))
		if err != nil {
			return f.fail(usagef("%v", err))
		}
		applier = a
	case "func":
		if fn == "" || table != "" || keys != "" {
			return f.fail(usagef("--applier func needs --func (and no --table/--keys)"))
		}
		a, err := apply.NewFuncApplier(fn)
		if err != nil {
			return f.fail(usagef("%v", err))
		}
		applier = a
	case "":
		return f.fail(usagef("--applier row|func is required"))
	default:
		return f.fail(usagef("--applier %q: want row or func", kind))
	}
	conn, err := connectParked(ctx, f.dsn)
	if err != nil {
		return f.fail(err)
	}
	defer conn.Close(context.Background())
	if node == "" {
		if node, err = replayNode(ctx, conn, pf); err != nil {
			return f.fail(err)
		}
	}
	res, err := copier.ReplayParked(ctx, conn, node, applier, pf)
	if err != nil {
		return f.fail(err)
	}
	fmt.Fprintf(stdout, "replayed %d, still parked %d\n", res.Replayed, len(res.Failed))
	if len(res.Failed) == 0 {
		return 0
	}
	ids := make([]int64, 0, len(res.Failed))
	for id := range res.Failed {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		fmt.Fprintf(stdout, "  park id %d: %s\n", id, clip(res.Failed[id].Error(), 200))
	}
	return 1
}

// replayNode derives the node a replay runs for from the pull consumer
// that parked the selected events ("pull.<node>"): --consumer, or the one
// consumer of the selection.
func replayNode(ctx context.Context, conn *pgx.Conn, pf copier.ParkedFilter) (string, error) {
	consumers := map[string]bool{}
	if pf.Consumer != "" {
		consumers[pf.Consumer] = true
	} else {
		evs, err := copier.ListParked(ctx, conn, pf)
		if err != nil {
			return "", err
		}
		for _, p := range evs {
			consumers[p.Consumer] = true
		}
	}
	if len(consumers) == 0 {
		return "", usagef("nothing parked matches; name the node with --node")
	}
	if len(consumers) > 1 {
		return "", usagef("the events were parked by %d consumers; name the node with --node (or pick one with --consumer)", len(consumers))
	}
	for c := range consumers {
		if node, ok := strings.CutPrefix(c, route.PullConsumerName("")); ok && route.ValidateNode(node) == nil {
			return node, nil
		}
		return "", usagef("consumer %q is not a pull consumer (pull.<node>); name the node with --node", c)
	}
	return "", nil
}

func splitComma(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func runParkedPurge(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newCmdFlags("parked purge", "usage: pgqctl parked purge --dsn NODE (--consumer C | --id N,...)\n\nDeletes parked events for good.", stderr)
	f.dsnFlag()
	var pf copier.ParkedFilter
	parkedFilterFlags(f, &pf, false)
	if code, ok := noArgs(f, args); !ok {
		return code
	}
	if pf.Consumer == "" && len(pf.IDs) == 0 {
		return f.fail(usagef("name what to purge: --consumer and/or --id"))
	}
	conn, err := connectParked(ctx, f.dsn)
	if err != nil {
		return f.fail(err)
	}
	defer conn.Close(context.Background())
	n, err := copier.PurgeParked(ctx, conn, pf)
	if err != nil {
		return f.fail(err)
	}
	fmt.Fprintf(stdout, "purged %d parked event(s)\n", n)
	return 0
}
