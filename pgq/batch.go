package pgq

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// BatchInfo describes an open batch: the events between two ticks.
type BatchInfo struct {
	ID           int64
	TickID       int64 // cur_tick_id: the batch ends at this tick
	PrevTickID   int64 // prev_tick_id: the batch starts after this tick
	TickTime     time.Time
	PrevTickTime time.Time
	EventSeq     int64 // cur_tick_event_seq (a hint, not an exact count)
	PrevEventSeq int64
	// Snapshot is the snapshot of the batch's end tick (from NextBatch and
	// NextBatchCustom): the batch and the ones before it hold the events
	// of exactly the transactions it sees (Snapshot.Visible).
	Snapshot Snapshot

	read *readPlan // from NextBatch: how a Batch reads the events (batchread.go)
}

// Lag is how old the batch's end tick is.
func (b BatchInfo) Lag() time.Duration { return time.Since(b.TickTime) }

// BatchOptions tunes NextBatchCustom; zero fields are not used.
type BatchOptions struct {
	MinLag      time.Duration // only ticks at least this old (pgq_keep_lag)
	MinCount    int           // wait until this many events (pgq_batch_collect_events)
	MinInterval time.Duration // wait until batches span this long (pgq_batch_collect_interval)
	// UpToEvents makes one batch of every tick ready, as long as the
	// event sequence says it holds at most about this many events (at
	// least one tick; PgQ may stretch it up to twice the time span): a
	// consumer that skipped ticks catches up in one batch, not one per
	// tick. It excludes MinCount and MinInterval, whose knob it uses.
	UpToEvents int64
}

// sqlNextBatch calls next_batch_custom once per row of pgq.queue named $1:
// for a missing queue it is never called and no row comes back. PgQ itself
// raises "Not subscriber to queue" for a missing queue and an unknown
// consumer alike; this tells them apart in the same round trip, inside a
// transaction too (where a failed statement leaves nothing to ask with).
//
// It first takes a transaction-level advisory lock on the (queue,
// consumer) pair (lateral l; an advisory lock needs no privilege on pgq's
// tables). The consumer name passed to the function is computed from the
// lock call's (void, so empty) result: the planner cannot flatten l away
// and must run it first. (A lateral that only passed $2 through was
// flattened, and a generic plan then called the function before the lock.)
// next_batch_custom reads sub_batch without a row lock: two instances of
// one consumer calling it at once could both see no open batch and each
// allocate a batch id over the same ticks, the second overwriting the
// first (and, if the first was finished meanwhile, leaving the
// subscription with ticks from two batches). With the lock, the second
// call waits until the first has committed and, in a statement of the
// function with a fresh snapshot, gets the same open batch back. Instances
// that do not take the lock (python-pgq) can still race; remote's
// tracking by tick catches that.
//
// UpToEvents (lateral m) picks the last ready tick within the event budget
// and passes its distance in time from the consumer's last tick as
// i_min_interval: pgq.find_tick_helper then ends the batch at that tick
// (or at the queue's last tick when that is at most twice as far). m reads
// the subscription with the statement's snapshot; if another instance
// moved it meanwhile, the interval is only too short or too long for once.
//
// The statement also returns the end tick's snapshot (a tick the
// statement's snapshot does not see yet leaves it null) and the queue's
// table prefix and count, which name the tables of the planned read
// (readPlan). (Lateral ts has "offset 0" so that the planner does not pull
// it up, which copies its subquery into every reference.)
const (
	sqlNextBatchHead = `select b.batch_id, b.cur_tick_id, b.prev_tick_id, b.cur_tick_time, b.prev_tick_time,
	b.cur_tick_event_seq, b.prev_tick_event_seq, ts.cur::text, q.queue_data_pfx, q.queue_ntables
	from pgq.queue q,
	lateral (select pg_advisory_xact_lock(hashtextextended('pgq.next_batch:' || $1 || '/' || $2, 0))::text || $2::text as co_name) l,
	`
	sqlNextBatchTail = `,
	lateral (select (select t.tick_snapshot from pgq.tick t where t.tick_queue = q.queue_id and t.tick_id = b.cur_tick_id) as cur
		offset 0) ts
	where q.queue_name = $1`
	sqlNextBatch = sqlNextBatchHead + `lateral (select coalesce((select ct.tick_time - pt.tick_time
		from pgq.consumer c
		join pgq.subscription s on s.sub_consumer = c.co_id and s.sub_queue = q.queue_id
		join pgq.tick pt on pt.tick_queue = s.sub_queue and pt.tick_id = s.sub_last_tick,
		lateral (select t.tick_time from pgq.tick t
			where t.tick_queue = s.sub_queue and t.tick_id > s.sub_last_tick
			  and t.tick_event_seq - pt.tick_event_seq <= $6
			order by t.tick_queue desc, t.tick_id desc limit 1) ct
		where $6::int8 > 0 and c.co_name = l.co_name and s.sub_batch is null
		  and ct.tick_time > pt.tick_time), $5::interval) as ival) m,
	lateral pgq.next_batch_custom(q.queue_name, l.co_name, $3::interval, $4::int4, m.ival) b` + sqlNextBatchTail
	// sqlNextBatchPlain is sqlNextBatch without UpToEvents. It is a
	// statement of its own, not sqlNextBatch with $6 null: with $6 null
	// the planner folds lateral m away in a custom plan, which is then
	// always cheaper than the generic plan, so every call was planned
	// again (about 0.3 ms of a batch's 1 ms of overhead).
	sqlNextBatchPlain = sqlNextBatchHead + `lateral pgq.next_batch_custom(q.queue_name, l.co_name, $3::interval, $4::int4, $5::interval) b` + sqlNextBatchTail
)

// NextBatch opens the consumer's next batch (or returns its open one again:
// the same batch comes back until FinishBatch). It returns nil when no
// batch is ready. Commit the transaction that ran it before processing the
// batch: a rolled-back next batch gives the same events a new batch id.
// A missing queue is [ErrQueueNotFound], an unknown consumer on an
// existing queue [ErrNotRegistered].
func NextBatch(ctx context.Context, db DB, queue, consumer string) (*BatchInfo, error) {
	return NextBatchCustom(ctx, db, queue, consumer, BatchOptions{})
}

// NextBatchCustom is NextBatch with pgq.next_batch_custom's knobs.
func NextBatchCustom(ctx context.Context, db DB, queue, consumer string, o BatchOptions) (*BatchInfo, error) {
	sql, args, err := nextBatchQuery(queue, consumer, o)
	if err != nil {
		return nil, err
	}
	info, err := scanNextBatch(db.QueryRow(ctx, sql, args...), queue, consumer)
	if err != nil && isNotRegistered(err) {
		if _, inTx := db.(pgx.Tx); !inTx {
			// The queue may have been dropped while the statement ran
			// (the function reads with a newer snapshot than the join).
			if qerr := notRegistered(ctx, db, "next batch", queue, consumer); errors.Is(qerr, ErrQueueNotFound) {
				return nil, qerr
			}
		}
	}
	return info, err
}

// QueueNextBatch queues NextBatchCustom's statement on a pipeline; read
// its result, once the pipeline is sent, with the returned function, in
// queue order. A caller that finishes a batch can so ask for the next one
// in the same round trip (after a queued commit, the statement runs, and
// commits, in a transaction of its own).
func QueueNextBatch(pb *pgx.Batch, queue, consumer string, o BatchOptions) (func(pgx.BatchResults) (*BatchInfo, error), error) {
	sql, args, err := nextBatchQuery(queue, consumer, o)
	if err != nil {
		return nil, err
	}
	pb.Queue(sql, args...)
	return func(res pgx.BatchResults) (*BatchInfo, error) {
		return scanNextBatch(res.QueryRow(), queue, consumer)
	}, nil
}

// nextBatchQuery checks the arguments and returns the statement.
func nextBatchQuery(queue, consumer string, o BatchOptions) (string, []any, error) {
	if err := validateQC(queue, consumer); err != nil {
		return "", nil, err
	}
	if o.MinLag < 0 || o.MinCount < 0 || o.MinInterval < 0 || o.UpToEvents < 0 {
		return "", nil, fmt.Errorf("pgq: next batch %s/%s: negative option %+v: %w", queue, consumer, o, ErrInvalidArgument)
	}
	if o.UpToEvents > 0 && (o.MinCount > 0 || o.MinInterval > 0) {
		return "", nil, fmt.Errorf("pgq: next batch %s/%s: UpToEvents excludes MinCount and MinInterval: %w", queue, consumer, ErrInvalidArgument)
	}
	var minLag, minInterval, minCount any
	if o.MinLag > 0 {
		minLag = interval(o.MinLag)
	}
	if o.MinInterval > 0 {
		minInterval = interval(o.MinInterval)
	}
	if o.MinCount > 0 {
		minCount = int32(o.MinCount)
	}
	if o.UpToEvents > 0 {
		return sqlNextBatch, []any{queue, consumer, minLag, minCount, minInterval, o.UpToEvents}, nil
	}
	return sqlNextBatchPlain, []any{queue, consumer, minLag, minCount, minInterval}, nil
}

// scanNextBatch reads the next-batch statement's row.
func scanNextBatch(row pgx.Row, queue, consumer string) (*BatchInfo, error) {
	var (
		id, cur, prev, seq, prevSeq pgtype.Int8
		curT, prevT                 pgtype.Timestamptz
		snap, pfx                   pgtype.Text
		ntables                     pgtype.Int4
	)
	err := row.Scan(&id, &cur, &prev, &curT, &prevT, &seq, &prevSeq, &snap, &pfx, &ntables)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("pgq: next batch %s/%s: %w", queue, consumer, ErrQueueNotFound)
	}
	if err != nil {
		return nil, opErr("next batch", queue, consumer, err)
	}
	if !id.Valid {
		return nil, nil
	}
	info := &BatchInfo{
		ID: id.Int64, TickID: cur.Int64, PrevTickID: prev.Int64,
		TickTime: curT.Time, PrevTickTime: prevT.Time,
		EventSeq: seq.Int64, PrevEventSeq: prevSeq.Int64,
	}
	// The tick's row is read with the statement's snapshot, taken before
	// next_batch_custom ran: a tick made meanwhile may be missing.
	if snap.Valid {
		if info.Snapshot, err = ParseSnapshot(snap.String); err != nil {
			return nil, fmt.Errorf("pgq: next batch %s/%s: tick %d: %w", queue, consumer, info.TickID, err)
		}
	}
	if pfx.Valid && ntables.Valid {
		info.read = &readPlan{pfx: pfx.String, ntables: int(ntables.Int32)}
	}
	return info, nil
}

// FinishBatch closes a batch and moves the consumer on. It reports false
// when PgQ knew no such open batch (PgQ only warns; this makes it visible).
func FinishBatch(ctx context.Context, db DB, batchID int64) (bool, error) {
	var n int
	if err := db.QueryRow(ctx, "select pgq.finish_batch($1)", batchID).Scan(&n); err != nil {
		return false, opErr(fmt.Sprintf("finish batch %d", batchID), "", "", err)
	}
	return n == 1, nil
}

// Batch is an open batch being processed: its info, its events (streamed),
// and the retry tags set on them.
//
// Concurrency: read the events (Events, All) and finish the batch (Finish,
// QueueFinish) from one goroutine at a time; reading streams through one
// connection. The retry tags are safe for concurrent use: events of the
// batch may be tagged (Event.TagRetry, TagRetryAt, TagDone) from several
// goroutines at once, also while Retries, RetryTags, RetryCount or
// ResetRetries run. Tags set while Finish runs may or may not be sent: wait
// for the goroutines that tag before finishing.
type Batch struct {
	Queue    string
	Consumer string
	Info     BatchInfo

	db        DB
	fetchSize int
	filter    Filter

	mu        sync.Mutex // guards the retry tags below and Event.retryAt of the batch's events
	retries   map[int64]*retryTag
	order     []int64 // tagged ids in tagging order (stale entries skipped by seq)
	heldBytes int     // event bytes kept by retries, at most RetryTagBudget
	seen      int
	buffered  bool
	prefetch  *Prefetch // rows sent ahead, until the first read
	tables    []int     // the event tables the batch spans, once read (planned)
	hint      ReadHint
}

// RetryTagBudget bounds, in bytes, the events a Batch keeps in memory for
// its retry tags: 16 MiB of event data (the text fields plus the Event
// struct). Events tagged while the budget has room are kept whole and
// retried with pgq.event_retry_raw (O(1) each). Beyond it only the event id
// and retry time are kept (a few dozen bytes per tag), and Finish retries
// those events in one statement that looks them up on the server
// (pgq.get_batch_events, read once for all of them), so a batch tagging
// many large events never holds them all.
const RetryTagBudget = 16 << 20

// retryTag is one retry tag: the whole event while the budget allows,
// otherwise only its id (the map key) and time.
type retryTag struct {
	seq int       // index of this tag in Batch.order
	ev  *Event    // nil: beyond the budget, looked up by id on the server
	at  time.Time // retry time
}

var eventOverhead = int(unsafe.Sizeof(Event{}))

func retryTagBytes(e *Event) int { return e.size() + eventOverhead }

// ReadOptions tune how a Batch reads its events.
type ReadOptions struct {
	// FetchSize streams events through a cursor this many at a time
	// (pgq_lazy_fetch); 0 reads the whole batch in one query. Streaming
	// (not BufferFetches), the first fetch asks for the batch's estimated
	// size (EventSeq - PrevEventSeq) when that is larger: events are
	// yielded one at a time as they arrive, so the size of a fetch does
	// not change what is held in memory, only the round trips.
	FetchSize int
	// Filter selects events server-side; the zero Filter selects all.
	Filter Filter
	// Prefetch is a read of this batch sent ahead (QueuePrefetch): the
	// first read of the batch takes its rows, if they are this batch's.
	Prefetch *Prefetch
	// Hint is what reading the consumer's previous batch learned
	// (Batch.ReadHint).
	Hint ReadHint
}

// NewBatch wraps an open batch for reading. Events are read through db; with
// a FetchSize they need a transaction, and one is begun (and rolled back
// after reading) when db is a pool or connection.
func NewBatch(db DB, queue, consumer string, info BatchInfo, o ReadOptions) *Batch {
	return &Batch{Queue: queue, Consumer: consumer, Info: info, db: db, fetchSize: o.FetchSize, filter: o.Filter, prefetch: o.Prefetch, hint: o.Hint}
}

// BufferFetches makes Events read each fetch of FetchSize events whole
// before yielding them, so that the caller may run statements on the
// batch's connection (DB) between events; it then holds up to FetchSize
// events in memory instead of one. Call it before reading.
func (b *Batch) BufferFetches() { b.buffered = true }

// ID is the batch id.
func (b *Batch) ID() int64 { return b.Info.ID }

// Seen is how many events the last full pass of Events yielded.
func (b *Batch) Seen() int { return b.seen }

var cursorSeq atomic.Int64

// Events streams the batch's events in ev_id order. Each call reads the
// batch again from the server; memory stays bounded by the fetch size.
// Iteration stops at the first error, which is yielded with a nil event.
func (b *Batch) Events(ctx context.Context) iter.Seq2[*Event, error] {
	return func(yield func(*Event, error) bool) {
		if err := b.filter.err; err != nil {
			yield(nil, fmt.Errorf("pgq: batch %d filter: %w", b.Info.ID, err))
			return
		}
		if b.prefetch != nil && (b.Info.read == nil || b.fetchSize > 0 && b.buffered) {
			// Read otherwise: the rows sent ahead go, freeing the connection.
			_ = b.prefetch.Release()
			b.prefetch = nil
		}
		n := 0
		var err error
		if b.fetchSize > 0 {
			err = b.streamCursor(ctx, func(e *Event) bool { n++; return yield(e, nil) })
		} else {
			err = b.readAll(ctx, func(e *Event) bool { n++; return yield(e, nil) })
		}
		if err != nil {
			if !errors.Is(err, errStopped) {
				yield(nil, opErr(fmt.Sprintf("read batch %d", b.Info.ID), b.Queue, b.Consumer, err))
			}
			return
		}
		b.seen = n
	}
}

// All loads every event of the batch into a slice.
func (b *Batch) All(ctx context.Context) ([]*Event, error) {
	var out []*Event
	for ev, err := range b.Events(ctx) {
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
	}
	return out, nil
}

var errStopped = errors.New("iteration stopped")

const eventColumns = "ev_id, ev_time, ev_txid, ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4"

func (b *Batch) readAll(ctx context.Context, yield func(*Event) bool) error {
	if b.Info.read != nil {
		return b.readPlanned(ctx, yield)
	}
	var rows pgx.Rows
	var err error
	if b.filter.sql == "" {
		rows, err = b.db.Query(ctx, "select "+eventColumns+" from pgq.get_batch_events($1)", b.Info.ID)
	} else {
		var sql string
		if err := b.db.QueryRow(ctx, "select pgq.batch_event_sql($1)", b.Info.ID).Scan(&sql); err != nil {
			return err
		}
		// The same wrapping get_batch_cursor does for its extra_where.
		sql = "select * from (" + strings.Replace(sql, " order by 1", "", 1) + ") _evs where " + b.filter.sql + " order by 1"
		// The text is new for every batch: QueryExecModeExec runs it in one
		// round trip without a prepared statement (the default mode would
		// prepare it, fill the statement cache with one-off plans kept on
		// the server, and deallocate them later).
		rows, err = b.db.Query(ctx, sql, pgx.QueryExecModeExec)
	}
	if err != nil {
		return err
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

type beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

func (b *Batch) streamCursor(ctx context.Context, yield func(*Event) bool) error {
	if b.Info.read != nil && !b.buffered {
		return b.readPlanned(ctx, yield)
	}
	tx, inTx := b.db.(pgx.Tx)
	if !inTx {
		bg, ok := b.db.(beginner)
		if !ok {
			return errors.New("streaming with a FetchSize needs a transaction")
		}
		var err error
		if tx, err = bg.Begin(ctx); err != nil {
			return err
		}
		defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	}
	cname := "pgq_go_cur_" + strconv.FormatInt(cursorSeq.Add(1), 10)
	var where any
	if b.filter.sql != "" {
		where = b.filter.sql
	}
	// The cursor is declared (get_batch_cursor with no quick fetch: its
	// PL/pgSQL loop copies every row it returns) and first fetched in one
	// round trip. Streaming, the first fetch covers the batch as the event
	// sequence estimates it: one round trip reads a typical batch whole,
	// with one event in memory at a time all the same. Buffered, every
	// fetch is FetchSize events, the most held in memory.
	first := b.fetchSize
	if est := b.Info.EventSeq - b.Info.PrevEventSeq; !b.buffered && est >= int64(first) {
		first = int(min(est+1, math.MaxInt32))
	}
	pb := &pgx.Batch{}
	pb.Queue("select 1 from pgq.get_batch_cursor($1, $2, 0, $3)", b.Info.ID, cname, where)
	pb.Queue("fetch " + strconv.Itoa(first) + " from " + cname)
	res := tx.SendBatch(ctx, pb)
	defer res.Close()
	if _, err := res.Exec(); err != nil {
		return err
	}
	rows, err := res.Query()
	if err != nil {
		return err
	}
	want := first
	fetchSQL := "fetch " + strconv.Itoa(b.fetchSize) + " from " + cname
	// Buffered (BufferFetches): each fetch is read whole before its events
	// are yielded, so the connection is free while the caller works.
	// Otherwise events are yielded as they arrive, one in memory at a time.
	var chunk []*Event
	if b.buffered {
		chunk = make([]*Event, 0, b.fetchSize)
	}
	closeCursor := func() {
		_ = res.Close()
		_, _ = tx.Exec(ctx, "close "+cname)
	}
	for {
		chunk = chunk[:0]
		got := 0
		for rows.Next() {
			got++
			ev, err := b.scan(rows)
			if err != nil {
				rows.Close()
				return err
			}
			if b.buffered {
				chunk = append(chunk, ev)
			} else if !yield(ev) {
				rows.Close()
				closeCursor()
				return errStopped
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if err := res.Close(); err != nil {
			return err
		}
		for i, ev := range chunk {
			chunk[i] = nil
			if !yield(ev) {
				closeCursor()
				return errStopped
			}
		}
		if got < want {
			// Exhausted: the cursor closes with the transaction; a close
			// here would cost a round trip per batch.
			return nil
		}
		want = b.fetchSize
		if rows, err = tx.Query(ctx, fetchSQL); err != nil {
			return err
		}
	}
}

func (b *Batch) scan(rows pgx.Rows) (*Event, error) {
	ev := &Event{batch: b}
	var retry pgtype.Int4
	var txid pgtype.Int8
	if err := rows.Scan(&ev.ID, &ev.Time, &txid, &retry, &ev.Type, &ev.Data,
		&ev.Extra1, &ev.Extra2, &ev.Extra3, &ev.Extra4); err != nil {
		return nil, err
	}
	ev.TxID, ev.Retry = txid.Int64, retry.Int32
	return ev, nil
}

// tagRetry records e's tag; b.mu is held.
func (b *Batch) tagRetry(e *Event) {
	if t, ok := b.retries[e.ID]; ok {
		t.at = e.retryAt
		if t.ev != nil && !e.idOnly {
			t.ev = e // the same event, maybe read again: same size
		}
		return
	}
	if b.retries == nil {
		b.retries = map[int64]*retryTag{}
	}
	t := &retryTag{seq: len(b.order), at: e.retryAt}
	if n := retryTagBytes(e); !e.idOnly && b.heldBytes+n <= RetryTagBudget {
		t.ev = e
		b.heldBytes += n
	}
	b.retries[e.ID] = t
	b.order = append(b.order, e.ID)
}

// untagRetry drops e's tag; b.mu is held.
func (b *Batch) untagRetry(e *Event) {
	t, ok := b.retries[e.ID]
	if !ok {
		return
	}
	if t.ev != nil {
		b.heldBytes -= retryTagBytes(t.ev)
	}
	delete(b.retries, e.ID)
	if len(b.order) > 64 && len(b.order) > 2*len(b.retries) {
		b.compactOrder()
	}
}

// compactOrder drops the order entries of untagged events; b.mu is held.
func (b *Batch) compactOrder() {
	live := b.order[:0]
	for i, id := range b.order {
		if t, ok := b.retries[id]; ok && t.seq == i {
			t.seq = len(live)
			live = append(live, id)
		}
	}
	clear(b.order[len(live):])
	b.order = live
}

// tags yields every retry tag once, in tagging order; b.mu is held.
func (b *Batch) tags() iter.Seq2[int64, *retryTag] {
	return func(yield func(int64, *retryTag) bool) {
		for i, id := range b.order {
			if t, ok := b.retries[id]; ok && t.seq == i {
				if !yield(id, t) {
					return
				}
			}
		}
	}
}

// Retries returns the events tagged for retry, in tagging order. Events
// tagged past RetryTagBudget come back without their data: only ID and
// RetryAt are set (Finish retries them by id, on the server).
func (b *Batch) Retries() []*Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]*Event, 0, len(b.retries))
	for id, t := range b.tags() {
		e := t.ev
		if e == nil {
			e = &Event{ID: id, batch: b, retryAt: t.at, idOnly: true}
		}
		out = append(out, e)
	}
	return out
}

// RetryTags yields the id and retry time of every event tagged for retry,
// in tagging order, without building events. It yields the tags as they
// were when iteration began, so the loop body may tag and untag events.
func (b *Batch) RetryTags() iter.Seq2[int64, time.Time] {
	return func(yield func(int64, time.Time) bool) {
		type tag struct {
			id int64
			at time.Time
		}
		b.mu.Lock()
		tags := make([]tag, 0, len(b.retries))
		for id, t := range b.tags() {
			tags = append(tags, tag{id, t.at})
		}
		b.mu.Unlock()
		for _, t := range tags {
			if !yield(t.id, t.at) {
				return
			}
		}
	}
}

// RetryCount is the number of events tagged for retry.
func (b *Batch) RetryCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.retries)
}

// ResetRetries drops every retry tag (before processing the batch again).
// Events already read keep reporting their retry time from RetryAt; read
// the batch again for fresh events.
func (b *Batch) ResetRetries() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.retries, b.order, b.heldBytes = nil, nil, 0
}

// sqlRetryByID retries the events of batch $1 whose ids are in $4 (retry
// times in $5) with one read of the batch: what pgq.event_retry does per
// event, for all of them at once. It returns how many it retried.
const sqlRetryByID = `select count(pgq.event_retry_raw($2, $3, t.at, e.ev_id, e.ev_time, coalesce(e.ev_retry, 0) + 1,
		e.ev_type, e.ev_data, e.ev_extra1, e.ev_extra2, e.ev_extra3, e.ev_extra4))
	from unnest($4::int8[], $5::timestamptz[]) as t(id, at)
	join pgq.get_batch_events($1) e on e.ev_id = t.id`

// QueueFinish queues, on a pipeline, the retry of every tagged event
// (event_retry_raw: O(1) each, unlike event_retry which rescans the batch)
// followed by finish_batch. Events tagged past RetryTagBudget are retried
// by one more statement, which looks them up on the server and returns how
// many it retried. The finish_batch result is the last one queued.
func (b *Batch) QueueFinish(pb *pgx.Batch) { b.queueFinish(pb, false) }

// QueueFinishStrict queues what Finish sends, in a form that fails the
// transaction instead of reporting: finish_batch of a batch PgQ does not
// know (ErrBatchNotFound) and a retry by id that finds fewer events than
// tagged raise an error, so a commit queued after them commits only a
// finished batch (it then rolls back). Once pb is sent, read the results
// with the returned function, in queue order.
func (b *Batch) QueueFinishStrict(pb *pgx.Batch) func(pgx.BatchResults) error {
	byID, queued := b.queueFinish(pb, true)
	return func(res pgx.BatchResults) error {
		_, err := b.readFinish(res, queued, byID)
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "22P02" && strings.Contains(pe.Message, strictMark) {
			msg := pe.Message[strings.Index(pe.Message, strictMark)+len(strictMark):]
			msg = strings.TrimSuffix(msg, `"`)
			if strings.Contains(msg, strictNotOpen) {
				err = fmt.Errorf("pgq: finish batch %d %s/%s: %w", b.Info.ID, b.Queue, b.Consumer, ErrBatchNotFound)
			} else {
				err = fmt.Errorf("pgq: retry events of batch %d %s/%s: %s", b.Info.ID, b.Queue, b.Consumer, msg)
			}
		}
		return err
	}
}

// strictMark starts the text that the strict finish statements cast to an
// integer to raise an error from plain SQL; strictNotOpen is in the text
// when finish_batch did not know the batch.
const (
	strictMark    = "pgq-go strict finish: "
	strictNotOpen = "is not open"
)

// queueFinish is QueueFinish; it returns how many events the retry-by-id
// statement (queued just before finish_batch) must retry, 0 if none, and
// how many statements it queued.
func (b *Batch) queueFinish(pb *pgx.Batch, strict bool) (byID, queued int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	before := len(pb.QueuedQueries)
	var ids []int64
	var ats []time.Time
	for id, t := range b.tags() {
		if t.ev != nil {
			QueueRetryRaw(pb, b.Queue, b.Consumer, t.ev, t.at)
			continue
		}
		ids = append(ids, id)
		ats = append(ats, t.at)
	}
	if len(ids) > 0 {
		if strict {
			pb.Queue(`select case when s.n = $6 then s.n
				else ('`+strictMark+`' || s.n || ' tagged events found in the batch, ' || $6 || ' expected')::int8 end
				from (`+sqlRetryByID+`) s(n)`, b.Info.ID, b.Queue, b.Consumer, ids, ats, int64(len(ids)))
		} else {
			pb.Queue(sqlRetryByID, b.Info.ID, b.Queue, b.Consumer, ids, ats)
		}
	}
	if strict {
		// The error's text depends on the result, so that the planner
		// cannot fold the cast (a constant one would fail at plan time).
		pb.Queue(`select case when f.n = 1 then 1
			else ('`+strictMark+`batch ' || $1::text || ' `+strictNotOpen+` (finish_batch returned ' || f.n || ')')::int end
			from (select pgq.finish_batch($1)) f(n)`, b.Info.ID)
	} else {
		pb.Queue("select pgq.finish_batch($1)", b.Info.ID)
	}
	return len(ids), len(pb.QueuedQueries) - before
}

// Finish sends the retries and finish_batch in one round trip through tx.
// It reports false when PgQ knew no such open batch.
func (b *Batch) Finish(ctx context.Context, tx pgx.Tx) (bool, error) {
	pb := &pgx.Batch{}
	byID, queued := b.queueFinish(pb, false)
	res := tx.SendBatch(ctx, pb)
	defer res.Close()
	ok, err := b.readFinish(res, queued, byID)
	if err != nil {
		return false, err
	}
	return ok, res.Close()
}

// readFinish reads the results of queueFinish's statements.
func (b *Batch) readFinish(res pgx.BatchResults, queued, byID int) (bool, error) {
	raw := queued - 1
	if byID > 0 {
		raw--
	}
	for range raw {
		if _, err := res.Exec(); err != nil {
			return false, opErr(fmt.Sprintf("retry events of batch %d", b.Info.ID), b.Queue, b.Consumer, err)
		}
	}
	if byID > 0 {
		var n int
		if err := res.QueryRow().Scan(&n); err != nil {
			return false, opErr(fmt.Sprintf("retry events of batch %d", b.Info.ID), b.Queue, b.Consumer, err)
		}
		if n != byID {
			return false, fmt.Errorf("pgq: retry events of batch %d %s/%s: %d tagged events found in the batch, %d expected",
				b.Info.ID, b.Queue, b.Consumer, n, byID)
		}
	}
	var n int
	if err := res.QueryRow().Scan(&n); err != nil {
		return false, opErr(fmt.Sprintf("finish batch %d", b.Info.ID), b.Queue, b.Consumer, err)
	}
	return n == 1, nil
}
