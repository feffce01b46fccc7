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

// InsertEventsPipelined inserts events one pgq.insert_event call each, sent
// in one pipelined round trip, and returns their ids in order.
func InsertEventsPipelined(ctx context.Context, tx pgx.Tx, queue string, evs []EventData) ([]int64, error) {
	if err := ValidateName("queue", queue); err != nil {
		return nil, err
	}
	b := &pgx.Batch{}
	for i := range evs {
		if n := evs[i].size(); n > MaxPayload {
			return nil, fmt.Errorf("pgq: insert events %s: event %d payload %d bytes exceeds %d: %w", queue, i, n, MaxPayload, ErrInvalidArgument)
		}
		e := &evs[i]
		b.Queue(sqlInsertEvent, queue, e.Type, e.Data, e.Extra1, e.Extra2, e.Extra3, e.Extra4)
	}
	res := tx.SendBatch(ctx, b)
	ids := make([]int64, len(evs))
	for i := range evs {
		if err := res.QueryRow().Scan(&ids[i]); err != nil {
			res.Close()
			return nil, opErr("insert events", queue, "", err)
		}
	}
	if err := res.Close(); err != nil {
		return nil, opErr("insert events", queue, "", err)
	}
	return ids, nil
}

// Copier is what bulk insert needs: pgx.Tx satisfies it.
type Copier interface {
	DB
	CopyFrom(ctx context.Context, table pgx.Identifier, cols []string, src pgx.CopyFromSource) (int64, error)
}

var copyColumns = []string{"ev_time", "ev_type", "ev_data", "ev_extra1", "ev_extra2", "ev_extra3", "ev_extra4"}

// InsertEvents bulk-inserts events with COPY into
// pgq.current_event_table(queue). It must run in the caller's transaction
// (the current table is valid only inside it). The rows are the ones
// pgq.insert_event would write: ev_id from the queue's sequence, ev_time =
// now() of the transaction, ev_txid = the transaction's id, owner and retry
// NULL.
func InsertEvents(ctx context.Context, tx Copier, queue string, evs []EventData) (int64, error) {
	return InsertEventsFrom(ctx, tx, queue, func(yield func(EventData) bool) {
		for _, e := range evs {
			if !yield(e) {
				return
			}
		}
	})
}

// InsertEventsFrom is InsertEvents reading events from an iterator, so huge
// loads never sit in memory.
func InsertEventsFrom(ctx context.Context, tx Copier, queue string, evs iter.Seq[EventData]) (int64, error) {
	if err := ValidateName("queue", queue); err != nil {
		return 0, err
	}
	var (
		table string
		now   time.Time
	)
	if err := tx.QueryRow(ctx, "select pgq.current_event_table($1), now()", queue).Scan(&table, &now); err != nil {
		return 0, opErr("bulk insert", queue, "", err)
	}
	schema, name, ok := strings.Cut(table, ".")
	if !ok {
		return 0, fmt.Errorf("pgq: bulk insert %s: unexpected event table name %q", queue, table)
	}
	src := &eventSource{now: now}
	src.next, src.stop = iter.Pull(evs)
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

type eventSource struct {
	now  time.Time
	next func() (EventData, bool)
	stop func()
	cur  EventData
	idx  int
	err  error
	row  [7]any
}

func (s *eventSource) Next() bool {
	if s.err != nil {
		return false
	}
	e, ok := s.next()
	if !ok {
		return false
	}
	if n := e.size(); n > MaxPayload {
		s.err = fmt.Errorf("event %d payload %d bytes exceeds %d: %w", s.idx, n, MaxPayload, ErrInvalidArgument)
		return false
	}
	s.idx++
	s.cur = e
	return true
}

func (s *eventSource) Values() ([]any, error) {
	e := &s.cur
	s.row = [7]any{s.now, e.Type, e.Data, e.Extra1, e.Extra2, e.Extra3, e.Extra4}
	return s.row[:], nil
}

func (s *eventSource) Err() error { return s.err }
