package pgq

import (
	"context"
	"fmt"
	"iter"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

const sqlInsertEvent = "select pgq.insert_event($1, $2, $3, $4, $5, $6, $7)"

// InsertEvent inserts one event with pgq.insert_event and returns its id.
// Run it in the caller's transaction: the event exists iff it commits.
func InsertEvent(ctx context.Context, db DB, queue string, ev EventData) (int64, error) {
	if err := ValidateName("queue", queue); err != nil {
		return 0, err
	}
	if n := ev.size(); n > MaxPayload {
		return 0, fmt.Errorf("pgq: insert event %s: payload %d bytes exceeds %d: %w", queue, n, MaxPayload, ErrInvalidArgument)
	}
	var id int64
	err := db.QueryRow(ctx, sqlInsertEvent, queue, ev.Type, ev.Data, ev.Extra1, ev.Extra2, ev.Extra3, ev.Extra4).Scan(&id)
	if err != nil {
		return 0, opErr("insert event", queue, "", err)
	}
	return id, nil
}

// Copier is what bulk insert needs: pgx.Tx satisfies it.
type Copier interface {
	DB
	CopyFrom(ctx context.Context, table pgx.Identifier, cols []string, src pgx.CopyFromSource) (int64, error)
}

var copyColumns = []string{"ev_time", "ev_type", "ev_data", "ev_extra1", "ev_extra2", "ev_extra3", "ev_extra4"}

// InsertEvents bulk-inserts events with COPY into
// pgq.current_event_table(queue) and returns how many it wrote. It reads
// the events from an iterator, so huge loads never sit in memory; pass a
// slice as slices.Values(evs).
//
// It must run in the caller's transaction (the current table is valid only
// inside it): the events exist iff that transaction commits. The rows are
// the ones pgq.insert_event would write: ev_id from the queue's sequence,
// ev_time = now() of the transaction, ev_txid = the transaction's id, owner
// and retry NULL. The ids are not returned; use InsertEvent for one event
// whose id you need.
//
// The transaction must be READ COMMITTED (PostgreSQL's default): under
// REPEATABLE READ or SERIALIZABLE the event table would be read from a
// snapshot older than the transaction's id, and a table rotation in between
// could hide the events from every consumer, so such a transaction is
// refused with ErrInvalidArgument before anything is written. An event
// larger than MaxPayload fails the call with ErrInvalidArgument (nothing
// of the COPY is kept).
func InsertEvents(ctx context.Context, tx Copier, queue string, evs iter.Seq[EventData]) (int64, error) {
	return copyEvents(ctx, tx, queue, func(yield func(EventData, time.Time) bool) {
		for e := range evs {
			if !yield(e, time.Time{}) {
				return
			}
		}
	})
}

// MoveEvents bulk-inserts events read from another queue (or database)
// into queue, as InsertEvents does, but each keeps its ev_time: the time it
// was first queued, as Skytools' queue_mover and queue_splitter keep it
// (pgq.bulk_insert_events with the time field). The ids, txids and retry
// counts are the new queue's: the event is new there. An event with a zero
// Time gets the transaction's now().
func MoveEvents(ctx context.Context, tx Copier, queue string, evs iter.Seq[*Event]) (int64, error) {
	return copyEvents(ctx, tx, queue, func(yield func(EventData, time.Time) bool) {
		for e := range evs {
			if !yield(e.EventData, e.Time) {
				return
			}
		}
	})
}

func copyEvents(ctx context.Context, tx Copier, queue string, evs iter.Seq2[EventData, time.Time]) (int64, error) {
	if err := ValidateName("queue", queue); err != nil {
		return 0, err
	}
	table, now, err := currentEventTable(ctx, tx, queue)
	if err != nil {
		return 0, err
	}
	if testHookBeforeCopy != nil {
		testHookBeforeCopy(ctx, queue, table)
	}
	schema, name, ok := strings.Cut(table, ".")
	if !ok {
		return 0, fmt.Errorf("pgq: bulk insert %s: unexpected event table name %q", queue, table)
	}
	src := &eventSource{now: now}
	src.next, src.stop = iter.Pull2(evs)
	defer src.stop()
	n, err := tx.CopyFrom(ctx, pgx.Identifier{schema, name}, copyColumns, src)
	if src.err != nil {
		err = src.err // ours, more precise than the server's "COPY failed"
	}
	if err != nil {
		return 0, opErr("bulk insert", queue, "", err)
	}
	return n, nil
}

const (
	sqlOwnTxid    = "select txid_current()"
	sqlEventTable = "select pgq.current_event_table($1), now(), current_setting('transaction_isolation')"
)

// currentEventTable returns the table to COPY into and the transaction's
// now(), after making sure the transaction owns a txid.
//
// Why the txid must come first (pgq--3.5.sql): rotation step1 switches
// queue_cur_table and records its txid as queue_switch_step1; step2, in a
// later transaction, records queue_switch_step2. batch_event_tables reads
// only the new table for a batch whose start tick has
// xmin(snapshot) > queue_switch_step2. Our txid X is assigned before the
// statement that reads the table takes its snapshot (READ COMMITTED: one
// snapshot per statement, so a separate, earlier statement). If that
// snapshot sees step1, we write the new table, which every batch that can
// contain X reads (its end tick saw us commit after step1 did, so its xmax
// exceeds queue_switch_step1). If not, step1 committed after the snapshot,
// so step2's txid was assigned later still: X < queue_switch_step2. A batch
// containing us starts at a tick that did not see us commit, so that
// tick's xmin is at most X, hence not above queue_switch_step2, and the
// previous table - where we wrote - is read too. Without the earlier txid,
// X is assigned by the COPY itself, possibly after step2, and the rows land
// in the previous table with X > queue_switch_step2: never delivered.
// pgq.insert_event reads the table and inserts in one statement, which
// closes the gap only under READ COMMITTED and only once the transaction
// has its txid before that statement; under REPEATABLE READ it loses
// events the same way (route's TestInsertEventLosesEventsUnderRepeatableRead).
func currentEventTable(ctx context.Context, tx Copier, queue string) (string, time.Time, error) {
	var (
		table, iso string
		now        time.Time
		txid       int64
	)
	var err error
	if bs, ok := tx.(batchSender); ok {
		// One round trip, still two statements (two snapshots).
		pb := &pgx.Batch{}
		pb.Queue(sqlOwnTxid)
		pb.Queue(sqlEventTable, queue)
		res := bs.SendBatch(ctx, pb)
		if err = res.QueryRow().Scan(&txid); err == nil {
			err = res.QueryRow().Scan(&table, &now, &iso)
		}
		if cerr := res.Close(); err == nil {
			err = cerr
		}
	} else if err = tx.QueryRow(ctx, sqlOwnTxid).Scan(&txid); err == nil {
		err = tx.QueryRow(ctx, sqlEventTable, queue).Scan(&table, &now, &iso)
	}
	if err != nil {
		return "", time.Time{}, opErr("bulk insert", queue, "", err)
	}
	if iso != "read committed" {
		return "", time.Time{}, fmt.Errorf("pgq: bulk insert %s: transaction isolation is %s; COPY into the event table "+
			"needs read committed (a rotation could otherwise hide the events): %w", queue, iso, ErrInvalidArgument)
	}
	return table, now, nil
}

// testHookBeforeCopy, set by tests only, runs between the event table read
// and the COPY.
var testHookBeforeCopy func(ctx context.Context, queue, table string)

type eventSource struct {
	now  time.Time
	next func() (EventData, time.Time, bool)
	stop func()
	cur  EventData
	at   time.Time // cur's ev_time; zero: now
	idx  int
	err  error
	row  [7]any
}

func (s *eventSource) Next() bool {
	if s.err != nil {
		return false
	}
	e, at, ok := s.next()
	if !ok {
		return false
	}
	if n := e.size(); n > MaxPayload {
		s.err = fmt.Errorf("event %d payload %d bytes exceeds %d: %w", s.idx, n, MaxPayload, ErrInvalidArgument)
		return false
	}
	s.idx++
	s.cur, s.at = e, at
	return true
}

func (s *eventSource) Values() ([]any, error) {
	e := &s.cur
	at := s.now
	if !s.at.IsZero() {
		at = s.at
	}
	s.row = [7]any{at, e.Type, e.Data, e.Extra1, e.Extra2, e.Extra3, e.Extra4}
	return s.row[:], nil
}

func (s *eventSource) Err() error { return s.err }
