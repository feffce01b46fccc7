package job

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/remote"
)

// MoveHandler is queue_mover's work: each batch's events go into queue on
// the destination, in the destination transaction the batch is recorded
// in, with one COPY, keeping their type, data, extras and ev_time
// (pgq.MoveEvents). Events stream from the source; nothing is held.
func MoveHandler(queue string) (remote.Handler, error) {
	if err := pgq.ValidateName("dst_queue_name", queue); err != nil {
		return nil, err
	}
	return remote.HandlerFunc(func(ctx context.Context, b *pgq.Batch, dst pgx.Tx) error {
		var readErr error
		_, err := pgq.MoveEvents(ctx, dst, queue, func(yield func(*pgq.Event) bool) {
			for ev, err := range b.Events(ctx) {
				if err != nil {
					readErr = err
					return
				}
				if !yield(ev) {
					return
				}
			}
		})
		if readErr != nil {
			return readErr
		}
		return err
	}), nil
}

// SplitBudget bounds, in bytes of event payload, what a splitter holds
// before writing it to the destination queues.
const SplitBudget = 4 << 20

// SplitHandler is queue_splitter's work: each event goes into the
// destination queue named by its field (queue_field: type, data, extra1
// .. extra4; Skytools' default extra1), keeping its payload and ev_time,
// in the destination transaction the batch is recorded in. The events are
// grouped by queue and written with one COPY per queue, every SplitBudget
// bytes and at the end of the batch, so each queue gets its events in
// batch order. An event whose field is NULL or not a valid queue name
// fails the batch, naming the event: Skytools failed there too.
func SplitHandler(field string) (remote.Handler, error) {
	get, err := eventField(field)
	if err != nil {
		return nil, err
	}
	return remote.HandlerFunc(func(ctx context.Context, b *pgq.Batch, dst pgx.Tx) error {
		var (
			order  []string
			groups = map[string][]*pgq.Event{}
			size   int
		)
		flush := func() error {
			for _, q := range order {
				if _, err := pgq.MoveEvents(ctx, dst, q, slices.Values(groups[q])); err != nil {
					return err
				}
			}
			order, size = order[:0], 0
			clear(groups)
			return nil
		}
		for ev, err := range b.Events(ctx) {
			if err != nil {
				return err
			}
			q := get(ev)
			if !q.Valid {
				return fmt.Errorf("event %d: queue_field %s is NULL: no destination queue", ev.ID, field)
			}
			if err := pgq.ValidateName("queue", q.String); err != nil {
				return fmt.Errorf("event %d: queue_field %s: %w", ev.ID, field, err)
			}
			if _, ok := groups[q.String]; !ok {
				order = append(order, q.String)
			}
			groups[q.String] = append(groups[q.String], ev)
			size += len(ev.Type.String) + len(ev.Data.String) + len(ev.Extra1.String) + len(ev.Extra2.String) +
				len(ev.Extra3.String) + len(ev.Extra4.String) + 64
			if size >= SplitBudget {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		return flush()
	}), nil
}

// eventField returns the getter of a queue_field name, as Skytools'
// Event attributes name them (with or without the ev_ prefix).
func eventField(name string) (func(*pgq.Event) pgq.Text, error) {
	switch strings.TrimPrefix(strings.ToLower(strings.TrimSpace(name)), "ev_") {
	case "type":
		return func(e *pgq.Event) pgq.Text { return e.Type }, nil
	case "data":
		return func(e *pgq.Event) pgq.Text { return e.Data }, nil
	case "extra1":
		return func(e *pgq.Event) pgq.Text { return e.Extra1 }, nil
	case "extra2":
		return func(e *pgq.Event) pgq.Text { return e.Extra2 }, nil
	case "extra3":
		return func(e *pgq.Event) pgq.Text { return e.Extra3 }, nil
	case "extra4":
		return func(e *pgq.Event) pgq.Text { return e.Extra4 }, nil
	}
	return nil, fmt.Errorf("job: queue_field %q: want one of type, data, extra1, extra2, extra3, extra4", name)
}

// Execer is where a query handler sends its statements: a remote.Pipe,
// or a transaction.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) error
}

// applyQuery runs q for each event of b through to; rowsOnly skips the
// events that are not I:/U:/D: row events, as simple_consumer and
// simple_local_consumer do.
func applyQuery(ctx context.Context, q *Query, b *pgq.Batch, to Execer, rowsOnly bool) error {
	for ev, err := range b.Events(ctx) {
		if err != nil {
			return err
		}
		if rowsOnly && !rowEvent(ev) {
			continue
		}
		args, err := q.Args(ev, b.Info.TickID)
		if err != nil {
			return err
		}
		if err := to.Exec(ctx, q.SQL, args...); err != nil {
			return fmt.Errorf("dst_query for event %d: %w", ev.ID, err)
		}
	}
	return nil
}

// SerialQueryHandler is simple_serial_consumer's work: q for every event
// of the batch, pipelined on the destination transaction the batch's tick
// is recorded in (exactly once with a SerialConsumer). Every event type is
// applied, as Skytools' simple_serial_consumer did; a NULL ev_data has no
// fields.
func SerialQueryHandler(q *Query) remote.Handler {
	return remote.HandlerFunc(func(ctx context.Context, b *pgq.Batch, dst pgx.Tx) error {
		return applyQuery(ctx, q, b, remote.Pipeline(dst), false)
	})
}

// QueryBatch is simple_consumer's and simple_local_consumer's work: q for
// each I:/U:/D: event of the batch (others are skipped), pipelined in one
// destination transaction per batch, committed before the batch is
// finished on the source. That is at least once, as in Skytools (there,
// each statement committed on its own): a crash between the two commits
// applies the batch again. Use simple_serial_consumer for exactly once.
func QueryBatch(ctx context.Context, dst *pgxpool.Pool, q *Query, b *pgq.Batch) error {
	tx, err := dst.Begin(ctx)
	if err != nil {
		return fmt.Errorf("dst_db: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit, a no-op
	p := remote.Pipeline(tx)
	if err := applyQuery(ctx, q, b, p, true); err != nil {
		return err
	}
	if err := p.Flush(ctx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("dst_db: commit: %w", err)
	}
	return nil
}
