package pgq

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// readPlan is what NextBatch learns, in its own round trip, to read the
// batch's events with one prepared statement: the statement PgQ builds in
// pgq.batch_event_sql (and pgq.get_batch_cursor declares a cursor for) is
// new text for every batch, so the server parses and plans it each time,
// inside a PL/pgSQL function: about 0.35 ms of server time per batch. The
// statement here selects the same events with the batch's values as
// parameters, so its plan is cached per connection.
//
// What it reads is what pgq.batch_event_sql selects: from the tables
// pgq.batch_event_tables would name (NextBatch's statement applies its
// rule; see sqlNextBatch), the
// events whose transaction the end tick's snapshot sees and the start
// tick's does not, owned by no consumer or by this subscription. The txids
// that the start tick saw in progress and the end tick did not are taken
// the same way: those within 100 of the start tick's xmax widen the txid
// range, older ones are looked up by value.
type readPlan struct {
	tables []string // quoted event table names
	last   Snapshot // the start tick's snapshot
	subID  int64
}

// newReadPlan checks what NextBatch read; nil when a value is missing (a
// tick the statement's snapshot did not see yet), and reading falls back
// to pgq.get_batch_cursor.
func newReadPlan(tables []string, last *string, subID *int64) (*readPlan, error) {
	if len(tables) == 0 || len(tables) > 2 || last == nil || subID == nil {
		return nil, nil
	}
	p := &readPlan{last: Snapshot{}, subID: *subID}
	var err error
	if p.last, err = ParseSnapshot(*last); err != nil {
		return nil, err
	}
	for i, t := range tables {
		if i > 0 && t == tables[0] {
			continue // a queue of one table
		}
		schema, name, ok := strings.Cut(t, ".")
		if !ok {
			return nil, fmt.Errorf("event table %q: want schema.table", t)
		}
		p.tables = append(p.tables, pgx.Identifier{schema, name}.Sanitize())
	}
	return p, nil
}

// readSentinel is the first row of a planned read when the batch is still
// open: a row of nulls from the subscription holding the batch, read with
// the same snapshot as the events. Without it the batch is gone (finished,
// or the consumer repositioned): its event tables may have been rotated
// away since, so nothing read could be trusted.
const readSentinel = "select null::int8, null::timestamptz, null::int8, null::int4, null::text, null::text, null::text, null::text, null::text, null::text from pgq.subscription where sub_batch = (select $1::int8)"

// sql is the read statement; filter is a Filter's SQL ("" for none).
//
// Every parameter is read through a scalar subquery, so the planner never
// sees its value: a custom plan then costs what the generic plan does, and
// PostgreSQL keeps the generic one after its five custom plans. With the
// values visible (an empty txid list, a narrow range), every custom plan
// looked cheaper and the statement was planned again on every call, 0.11
// ms per batch.
func (p *readPlan) sql(filter string) string {
	const owner = " and (ev.ev_owner is null or ev.ev_owner = (select $7::int8))"
	var parts []string
	for _, t := range p.tables {
		parts = append(parts,
			"select "+eventColumns+" from "+t+" ev where ev.ev_txid >= (select $2::int8) and ev.ev_txid <= (select $3::int8)"+
				" and txid_visible_in_snapshot(ev.ev_txid, (select $4::text::txid_snapshot))"+
				" and not txid_visible_in_snapshot(ev.ev_txid, (select $5::text::txid_snapshot))"+owner,
			"select "+eventColumns+" from "+t+" ev where ev.ev_txid = any((select $6::int8[])::int8[])"+owner)
	}
	evs := strings.Join(parts, " union all ")
	if filter != "" {
		evs = "select * from (" + evs + ") _evs where " + filter
	}
	return "select * from (" + readSentinel + " union all " + evs + ") _batch order by 1 nulls first"
}

// args are the statement's parameters for batch info.
func (p *readPlan) args(info *BatchInfo) []any {
	cur := info.Snapshot
	start, end := p.last.Xmax, cur.Xmax
	var listed []int64
	for _, x := range slices.Backward(p.last.Xip) {
		if _, still := slices.BinarySearch(cur.Xip, x); still {
			continue
		}
		if start-100 <= x {
			start = x
		} else {
			listed = append(listed, x)
		}
	}
	if listed == nil {
		listed = []int64{}
	}
	return []any{info.ID, start, end, cur.String(), p.last.String(), listed, p.subID}
}

// readPlanned streams the batch's events with the plan's statement.
func (b *Batch) readPlanned(ctx context.Context, yield func(*Event) bool) error {
	p := b.Info.read
	rows, err := b.db.Query(ctx, p.sql(b.filter.sql), p.args(&b.Info)...)
	if err != nil {
		return err
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return err
		}
		return fmt.Errorf("%w: batch %d is no longer open", ErrBatchNotFound, b.Info.ID)
	}
	if rows.RawValues()[0] != nil {
		return fmt.Errorf("%w: batch %d is no longer open", ErrBatchNotFound, b.Info.ID)
	}
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
