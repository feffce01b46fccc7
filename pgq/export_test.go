package pgq

import (
	"context"
	"errors"
	"time"
)

// SetBeforeCopyHook installs f to run in InsertEvents between reading
// pgq.current_event_table and the COPY; the returned func removes it. Tests
// using it must not run in parallel with other inserting tests.
func SetBeforeCopyHook(f func(ctx context.Context, queue, table string)) (restore func()) {
	testHookBeforeCopy = f
	return func() { testHookBeforeCopy = nil }
}

// HeldRetryBytes is how many bytes of events the batch's retry tags keep.
func (b *Batch) HeldRetryBytes() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.heldBytes
}

// ReadPlan is what a planned read of a batch reads, as the read statement
// computes it now.
type ReadPlan struct {
	Planned bool     // false: the batch is read through pgq.get_batch_cursor
	Batch   int64    // the consumer's open batch
	Tables  []string // the event tables read, unquoted
	Listed  int      // txids looked up by value
	Widened bool     // whether txids the start tick saw in progress lowered the txid range
}

// ReadPlanOf runs the read statement's first part for info's consumer.
func ReadPlanOf(ctx context.Context, db DB, queue, consumer string, info BatchInfo) (ReadPlan, error) {
	p := info.read
	if p == nil {
		return ReadPlan{}, nil
	}
	rp := ReadPlan{Planned: true}
	err := db.QueryRow(ctx, readCTE+`select p.batch, array(select $3 || '_' || t from unnest(p.tabs) t),
		cardinality(p.listed), p.lo < txid_snapshot_xmax(p.prev) from p`, p.args(queue, consumer)...).
		Scan(&rp.Batch, &rp.Tables, &rp.Listed, &rp.Widened)
	return rp, err
}

// TagRetryID tags an event id for retry by id only, as a tag past
// RetryTagBudget is kept; the id need not be in the batch.
func (b *Batch) TagRetryID(id int64, at time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tagRetry(&Event{ID: id, batch: b, retryAt: at, idOnly: true})
}

// ReadNaming reads info's events with the read statement naming the given
// event tables (nil: all); missing reports that the batch spans a table
// not named (no events are returned then).
func ReadNaming(ctx context.Context, db DB, queue, consumer string, info BatchInfo, tables []int) (evs []*Event, missing bool, err error) {
	b := NewBatch(db, queue, consumer, info, ReadOptions{})
	sql, err := info.read.sql("", tables)
	if err != nil {
		return nil, false, err
	}
	rows, err := db.Query(ctx, sql, info.read.args(queue, consumer)...)
	if err != nil {
		return nil, false, err
	}
	defer rows.Close()
	if err := b.checkSentinel(rows); err != nil {
		if errors.Is(err, errTablesMissing) {
			return nil, true, nil
		}
		return nil, false, err
	}
	for rows.Next() {
		ev, err := b.scan(rows)
		if err != nil {
			return nil, false, err
		}
		evs = append(evs, ev)
	}
	return evs, false, rows.Err()
}

// HintNaming is a ReadHint naming the given event tables.
func HintNaming(tables ...int) ReadHint { return ReadHint{tables} }
