package route

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgq-go/pgq/pgq"
)

// MaxBatchBytes bounds the text one AddToBatch call puts into its statement
// (every event's type, target, row and origin, each row counted once per
// target): the whole statement travels as one protocol message, which
// PostgreSQL caps at 1 GB. Split bigger loads over several calls, or use
// SendBulk, which streams.
const MaxBatchBytes = 256 << 20

// isolationRefusal starts the error the statement raises outside READ
// COMMITTED; AddToBatch's result callback recognises it.
const isolationRefusal = "route: Sender.AddToBatch needs a READ COMMITTED transaction, this one is "

// sqlQueueEvents inserts one event per element of the arrays with
// pgq.insert_event, in array order, and returns how many it inserted.
//
// The materialised CTE runs before the first pgq.insert_event (each call
// needs own.queue) and does two things:
//
//   - txid_current() gives the transaction its id before pgq.insert_event
//     reads the queue's current event table. Under READ COMMITTED that read
//     takes a fresh snapshot, so the reasoning of pgq.InsertEvents holds:
//     if the snapshot misses a rotation's step1, our id is older than its
//     step2 and every batch that can hold our events reads the table we
//     wrote.
//   - Under REPEATABLE READ or SERIALIZABLE pgq.insert_event reads the
//     current table from the transaction's snapshot, which may predate a
//     whole rotation (step1 and step2): its events then land in the
//     previous table with an id above step2, and no batch reads them
//     (TestInsertEventLosesEventsUnderRepeatableRead shows it). So the
//     statement fails there instead, by casting the refusal to int: plain
//     SQL has no RAISE, and we own no function in the database.
const sqlQueueEvents = `with own as materialized (
	select $1::text as queue, txid_current() as txid,
	       case when current_setting('transaction_isolation') <> 'read committed'
	            then ('` + isolationRefusal + `' || current_setting('transaction_isolation'))::int
	       end as refused,
	       case when $6::bool then pg_notify('` + pgq.TickRequestChannel + `', $1) end as tick_request
)
select count(pgq.insert_event(own.queue, e.typ, '', e.target, e.row, $5, null))
  from own, unnest($2::text[], $3::text[], $4::text[]) as e(typ, target, row)`

// AddToBatch adds to b one statement that inserts the events of msgs, one
// per target of each message, in message and target order, as SendBulk
// does: the same ev_type, ev_data (empty), ev_extra1 (target), ev_extra2
// (row) and ev_extra3 (origin). The events are written when the caller
// sends b, in the transaction that runs it (an explicit one, or the
// implicit transaction of a batch sent outside one), and exist iff it
// commits. It costs no round trip of its own: the application's
// statements and the targeted rows travel in one pipeline.
//
// Every message is validated and encoded first; on any error nothing is
// added to b. No messages add nothing. Otherwise exactly one statement is
// added, returning one row: the number of events inserted. AddToBatch sets
// that statement's result callback, which BatchResults.Close runs: it
// checks the count and wraps errors with the queue's name.
//
// The events are inserted with PgQ's own pgq.insert_event, so they follow
// the queue's settings as any producer's do (queue_per_tx_limit,
// queue_disable_insert), and a producer role needs no more than pgq_writer
// (execute on pgq.insert_event); Send and SendBulk COPY into the event
// table, which needs INSERT on it.
//
// Which to use (BenchmarkSend has the figures):
//   - AddToBatch when the transaction already pipelines its statements in
//     a pgx.Batch and writes up to some hundreds of events: it saves the
//     round trips SendBulk spends on its own (two or three), while
//     pgq.insert_event costs the server roughly three times what COPY does
//     per event (on the test cluster ~57k events/s against ~190k).
//   - SendBulk for thousands of events, or rows too big to hold in one
//     statement (MaxBatchBytes): COPY is the fastest bulk path and streams.
//   - Send for one row with a handful of targets outside a batch.
//
// All three need a READ COMMITTED transaction (PostgreSQL's default). Under
// REPEATABLE READ or SERIALIZABLE a table rotation between the
// transaction's snapshot and its first event could hide the events from
// every consumer, with COPY and with pgq.insert_event alike, so the
// statement added here fails with an error wrapping pgq.ErrInvalidArgument,
// aborting the transaction (Send and SendBulk refuse before writing).
func (s Sender) AddToBatch(b *pgx.Batch, msgs ...Message) error {
	if err := pgq.ValidateName("queue", s.Queue); err != nil {
		return fmt.Errorf("route: add to batch: %w", err)
	}
	encoded, err := s.encode(msgs)
	if err != nil {
		return fmt.Errorf("route: add to batch for queue %s: %w", s.Queue, err)
	}
	if len(msgs) == 0 {
		return nil
	}
	n := 0
	for _, m := range msgs {
		n += len(m.Targets)
	}
	types := make([]string, 0, n)
	targets := make([]string, 0, n)
	rows := make([]string, 0, n)
	size := 0
	for i, m := range msgs {
		typ := s.eventType(m)
		for _, t := range m.Targets {
			types = append(types, typ)
			targets = append(targets, t)
			rows = append(rows, encoded[i])
			size += len(typ) + len(t) + len(encoded[i]) + len(s.Origin)
		}
		if size > MaxBatchBytes {
			return fmt.Errorf("route: add to batch for queue %s: messages 0..%d already hold %d bytes, more than %d; "+
				"split them over several calls or use SendBulk: %w", s.Queue, i, size, MaxBatchBytes, pgq.ErrInvalidArgument)
		}
	}
	origin := pgq.Text{String: s.Origin, Valid: s.Origin != ""}
	queue := s.Queue
	b.Queue(sqlQueueEvents, queue, types, targets, rows, origin, s.RequestTick).QueryRow(func(row pgx.Row) error {
		var got int64
		if err := row.Scan(&got); err != nil {
			var pe *pgconn.PgError
			if errors.As(err, &pe) && strings.Contains(pe.Message, isolationRefusal) {
				return fmt.Errorf("route: targeted events for queue %s: transaction isolation is not read committed "+
					"(a table rotation could hide the events): %w: %w", queue, pgq.ErrInvalidArgument, err)
			}
			return fmt.Errorf("route: targeted events for queue %s: %w", queue, err)
		}
		if got != int64(n) {
			return fmt.Errorf("route: targeted events for queue %s: inserted %d events, want %d", queue, got, n)
		}
		return nil
	})
	return nil
}
