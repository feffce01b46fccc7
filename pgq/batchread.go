package pgq

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// readPlan is what a Batch needs to read its events with one prepared
// statement: the statement PgQ builds in pgq.batch_event_sql (and
// pgq.get_batch_cursor declares a cursor for) is new text for every batch,
// so the server parses and plans it each time, inside a PL/pgSQL function:
// about 0.35 ms of server time per batch. The statement here (sqlRead)
// names every event table of the queue and takes everything else from the
// consumer's subscription row as it reads, so its text is the same for
// every batch of a queue and its plan is cached per connection.
//
// Because it needs nothing but the queue's and the consumer's names, it
// can also be sent before the batch it reads is known: right after the
// statement that opens it, in the same round trip (QueuePrefetch).
type readPlan struct {
	pfx     string // queue_data_pfx, "schema.table"
	ntables int    // queue_ntables
}

// readCTE computes, in one row, what the read of the consumer's open batch
// needs: the batch id (the sentinel), the subscription id (the owner of
// its retried events), both ticks' snapshots, and the event tables to
// read. It is pgq.batch_event_sql's logic, in a statement whose text does
// not depend on the batch:
//
//   - the tables are pgq.batch_event_tables' rule, applied to the queue row
//     as this statement sees it, as pgq.get_batch_events applies it when it
//     reads;
//   - the events are those whose transaction the end tick's snapshot sees
//     and the start tick's does not, owned by no consumer or by this
//     subscription. Their txids are at least the start tick's xmin; the
//     range is [lo, end tick's xmax], where lo is the start tick's xmax
//     lowered to the oldest transaction it saw in progress that was not
//     100 txids older than it (and has ended by the end tick); older ended
//     ones are looked up by value (listed). Any txid below lo and not
//     listed is visible to the start tick or invisible to the end tick.
//
// A row comes back only if the consumer has a batch open and the queue's
// table prefix and count are the ones named in the statement's text ($3,
// $4: a queue dropped and created again under the same name reads its new
// tables, or nothing). Each subquery on a tick is evaluated once (offset 0
// keeps b from being pulled up, which would copy them into every use).
const readCTE = `with p as materialized (
	select b.sub, b.batch, b.prev, b.cur,
		case when txid_snapshot_xmax(b.cur) < b.s1 then array[(b.ct + b.nt - 1) % b.nt]
			when b.s2 is not null and txid_snapshot_xmin(b.prev) > b.s2 then array[b.ct]
			else array[(b.ct + b.nt - 1) % b.nt, b.ct] end as tabs,
		x.lo, x.listed, txid_snapshot_xmax(b.cur) as hi
	from (select s.sub_id::int8 as sub, s.sub_batch as batch, q.queue_cur_table as ct, q.queue_ntables as nt,
			q.queue_switch_step1 as s1, q.queue_switch_step2 as s2,
			(select t.tick_snapshot from pgq.tick t where t.tick_queue = s.sub_queue and t.tick_id = s.sub_last_tick) as prev,
			(select t.tick_snapshot from pgq.tick t where t.tick_queue = s.sub_queue and t.tick_id = s.sub_next_tick) as cur
		from pgq.queue q
		join pgq.subscription s on s.sub_queue = q.queue_id
			and s.sub_consumer = (select c.co_id from pgq.consumer c where c.co_name = $2)
		where q.queue_name = $1 and s.sub_batch is not null
			and q.queue_data_pfx = $3 and q.queue_ntables = $4
		offset 0) b,
	lateral (select coalesce(min(x) filter (where x >= txid_snapshot_xmax(b.prev) - 100), txid_snapshot_xmax(b.prev)) as lo,
			coalesce(array_agg(x) filter (where x < txid_snapshot_xmax(b.prev) - 100), '{}') as listed
		from txid_snapshot_xip(b.prev) x where txid_visible_in_snapshot(x, b.cur)) x
	where b.prev is not null and b.cur is not null)
`

// The first row of a read is its sentinel: a row of nulls but for the
// open batch's id (ev_txid), whether the tables the statement names hold
// every table the batch spans (ev_retry, 1 or 0), and those tables
// (ev_type, their numbers comma-separated), read with the same snapshot as
// the events. Without it, or with another batch's id, the batch is gone
// (finished, or the consumer repositioned): its event tables may have been
// rotated away since, so nothing read could be trusted. With tables
// missing, the events read are not the batch's.
const readSentinel = "select null::int8, null::timestamptz, p.batch, (p.tabs <@ %s::int4[])::int4, array_to_string(p.tabs, ','), null::text, null::text, null::text, null::text, null::text from p"

// readStatements caches the read statement's text per queue layout,
// named tables and filter: it is built once, not per batch.
var readStatements sync.Map // readKey -> string

type readKey struct {
	pfx     string
	ntables int
	tables  string
	filter  string
}

// sql is the read statement; filter is a Filter's SQL ("" for none);
// tables are the event tables it names, by number (nil: all of them). Its
// parameters are the queue, the consumer, the table prefix and count.
//
// Every value from p is read through a scalar subquery (an InitPlan), so
// the planner never sees it: the plan is the same for every batch, and a
// table's branches are skipped by a one-time filter when the batch does
// not span that table. A table named costs all the same (about 10 µs per
// table of executor start-up in every call), which is why a read names
// only the tables the batch before spanned when it knows them (ReadHint).
func (p *readPlan) sql(filter string, tables []int) (string, error) {
	if tables == nil {
		for i := range p.ntables {
			tables = append(tables, i)
		}
	}
	var names []string
	for _, i := range tables {
		if i < 0 || i >= p.ntables {
			return "", fmt.Errorf("event table %d of %d", i, p.ntables)
		}
		names = append(names, strconv.Itoa(i))
	}
	k := readKey{p.pfx, p.ntables, strings.Join(names, ","), filter}
	if s, ok := readStatements.Load(k); ok {
		return s.(string), nil
	}
	schema, name, ok := strings.Cut(p.pfx, ".")
	if !ok || p.ntables < 1 || len(tables) == 0 {
		return "", fmt.Errorf("queue layout %q/%d: want schema.table and at least one table", p.pfx, p.ntables)
	}
	const owner = " and (ev.ev_owner is null or ev.ev_owner = (select sub from p))"
	var parts []string
	for _, i := range tables {
		t := pgx.Identifier{schema, name + "_" + strconv.Itoa(i)}.Sanitize()
		in := "(select " + strconv.Itoa(i) + " = any(tabs) from p)"
		parts = append(parts,
			"select "+eventColumns+" from "+t+" ev where "+in+
				" and ev.ev_txid >= (select lo from p) and ev.ev_txid <= (select hi from p)"+
				" and txid_visible_in_snapshot(ev.ev_txid, (select cur from p))"+
				" and not txid_visible_in_snapshot(ev.ev_txid, (select prev from p))"+owner,
			"select "+eventColumns+" from "+t+" ev where "+in+
				" and ev.ev_txid = any((select listed from p)::int8[])"+owner)
	}
	evs := strings.Join(parts, " union all ")
	if filter != "" {
		evs = "select * from (" + evs + ") _evs where " + filter
	}
	sentinel := fmt.Sprintf(readSentinel, "array["+k.tables+"]")
	s := readCTE + "select * from (" + sentinel + " union all " + evs + ") _batch order by 1 nulls first"
	readStatements.Store(k, s)
	return s, nil
}

// args are the statement's parameters.
func (p *readPlan) args(queue, consumer string) []any {
	return []any{queue, consumer, p.pfx, int32(p.ntables)}
}

// readPlanned streams the batch's events with the plan's statement, from
// the rows sent ahead if the batch has them (and they are its own, from
// every table it spans), else with a statement of its own.
func (b *Batch) readPlanned(ctx context.Context, yield func(*Event) bool) error {
	rows, err := b.prefetched()
	if err != nil {
		return err
	}
	// The tables named: those the batch, or the batch of its hint, spanned;
	// if it spans one more, it is read again naming all.
	named := b.tablesHint()
	for rows == nil {
		sql, err := b.Info.read.sql(b.filter.sql, named)
		if err != nil {
			return err
		}
		if rows, err = b.db.Query(ctx, sql, b.Info.read.args(b.Queue, b.Consumer)...); err != nil {
			return err
		}
		if err := b.checkSentinel(rows); err != nil {
			rows.Close()
			rows = nil
			if !errors.Is(err, errTablesMissing) || named == nil {
				return err
			}
			named = nil
		}
	}
	defer rows.Close()
	for rows.Next() {
		ev, err := b.scan(rows)
		if err != nil {
			return err
		}
		if !yield(ev) {
			return errStopped
		}
	}
	return rows.Err()
}

// ReadHint is what reading a batch learned that helps read the next batch
// of the same queue and consumer: the event tables it spanned (the next
// batch almost always spans the same, and a read names only those; one
// spanning more is read again naming every table). Pass it in
// ReadOptions.Hint; the zero ReadHint knows nothing.
type ReadHint struct{ tables []int }

// ReadHint returns what reading b learned for the next batch; the zero
// ReadHint if b was not read (or not with NextBatch's read plan).
func (b *Batch) ReadHint() ReadHint { return ReadHint{b.tables} }

// IsZero reports whether h knows nothing.
func (h ReadHint) IsZero() bool { return h.tables == nil }

// tablesHint is the tables to name in a read of b: those it spans if it
// was read, else those of its hint; nil (all) if neither is known, or the
// hint names a table the queue does not have (it was dropped and made
// again with fewer).
func (b *Batch) tablesHint() []int {
	t := b.tables
	if t == nil {
		t = b.hint.tables
	}
	for _, i := range t {
		if i < 0 || i >= b.Info.read.ntables {
			return nil
		}
	}
	return t
}

// errTablesMissing is a sentinel saying the statement did not name every
// table the batch spans.
var errTablesMissing = errors.New("the read did not name every event table of the batch")

// checkSentinel reads the first row, which must be the sentinel of this
// batch, and records the tables the batch spans.
func (b *Batch) checkSentinel(rows pgx.Rows) error {
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return err
		}
		return fmt.Errorf("%w: batch %d is no longer open", ErrBatchNotFound, b.Info.ID)
	}
	var id, batch pgtype.Int8
	var all pgtype.Int4
	var tables pgtype.Text
	if err := rows.Scan(&id, nil, &batch, &all, &tables, nil, nil, nil, nil, nil); err != nil {
		return err
	}
	if id.Valid || !batch.Valid || batch.Int64 != b.Info.ID {
		return fmt.Errorf("%w: batch %d is no longer open", ErrBatchNotFound, b.Info.ID)
	}
	var spans []int
	for f := range strings.SplitSeq(tables.String, ",") {
		n, err := strconv.Atoi(f)
		if err != nil {
			return fmt.Errorf("batch %d: event tables %q: %w", b.Info.ID, tables.String, err)
		}
		spans = append(spans, n)
	}
	b.tables = spans
	if all.Int32 != 1 {
		return errTablesMissing
	}
	return nil
}

// prefetched returns the rows sent ahead for this batch, past their
// sentinel, or nil when there are none (or they were for another batch,
// missed one of its tables, or could not be read: the caller then reads
// the batch itself). Only the first read of the batch uses them.
func (b *Batch) prefetched() (pgx.Rows, error) {
	p := b.prefetch
	if p == nil {
		return nil, nil
	}
	b.prefetch = nil
	rows, ok := p.take()
	if !ok {
		return nil, nil
	}
	if err := b.checkSentinel(rows); err != nil {
		// Not this batch's rows, or not all of them: they are dropped,
		// and the batch is read again (an ErrBatchNotFound then comes
		// from that read).
		rows.Close()
		return nil, nil
	}
	return rows, nil
}

// Prefetch is a read of a consumer's open batch sent before the batch was
// known, in the round trip that opened it (Batch.QueuePrefetch). It holds the
// connection the pipeline was sent on until the rows have been read or
// released: the Batch given it in ReadOptions reads them on its first
// read, and the owner of the connection calls Release before sending
// anything else on it.
type Prefetch struct {
	mu      sync.Mutex
	res     pgx.BatchResults
	rows    pgx.Rows
	state   int // prefetchWaiting, prefetchReading, prefetchDone
	onClose func()
}

const (
	prefetchWaiting = iota
	prefetchReading
	prefetchDone
)

// ErrPrefetchReading is what Release returns while a Batch is still
// reading the rows sent ahead: the connection is busy with them.
var ErrPrefetchReading = errors.New("pgq: the batch's events are being read on this connection")

// QueuePrefetch queues, after the statements that open the consumer's next
// batch and commit it (QueueNextBatch in a transaction of its own), a read
// of that batch's events, in the form b was read, naming the event tables
// b spanned (the next batch almost always spans them too; when it does
// not, its read finds out and reads again). It reports false when it
// cannot (b's info was not made by NextBatch, or its filter is invalid).
// Once the pipeline's earlier results are read, NewPrefetch takes what is
// left of its results.
func (b *Batch) QueuePrefetch(pb *pgx.Batch) bool {
	if b.Info.read == nil || b.filter.err != nil {
		return false
	}
	sql, err := b.Info.read.sql(b.filter.sql, b.tablesHint())
	if err != nil {
		return false
	}
	pb.Queue(sql, b.Info.read.args(b.Queue, b.Consumer)...)
	return true
}

// NewPrefetch wraps res, whose next result is the read QueuePrefetch
// queued (its last one); onClose runs once the prefetch is read or
// released.
func NewPrefetch(res pgx.BatchResults, onClose func()) *Prefetch {
	return &Prefetch{res: res, onClose: onClose}
}

// take hands the rows to a Batch's first read; false if they were
// released.
func (p *Prefetch) take() (pgx.Rows, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != prefetchWaiting {
		return nil, false
	}
	rows, err := p.res.Query()
	if err != nil {
		p.closeLocked()
		return nil, false
	}
	p.rows = rows
	p.state = prefetchReading
	return &prefetchRows{Rows: rows, p: p}, true
}

// Release frees the connection: rows not yet taken are dropped (read to
// their end). It returns ErrPrefetchReading while a Batch is reading them
// (taken, and neither read to their end nor closed).
func (p *Prefetch) Release() error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state == prefetchReading {
		return ErrPrefetchReading
	}
	p.closeLocked()
	return nil
}

// Close ends the prefetch whatever its state, freeing the connection: for
// the owner of the connection once the batch is done with (its reader
// stopped).
func (p *Prefetch) Close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closeLocked()
}

func (p *Prefetch) closeLocked() {
	if p.state == prefetchDone {
		return
	}
	p.state = prefetchDone
	if p.rows != nil {
		p.rows.Close()
	}
	_ = p.res.Close()
	if p.onClose != nil {
		p.onClose()
	}
}

// prefetchRows are the prefetched rows handed to a Batch: closing them
// ends the prefetch.
type prefetchRows struct {
	pgx.Rows
	p      *Prefetch
	closed bool
}

func (r *prefetchRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.Close()
	return false
}

func (r *prefetchRows) Close() {
	if r.closed {
		return
	}
	r.closed = true
	r.p.mu.Lock()
	defer r.p.mu.Unlock()
	r.p.closeLocked()
}
