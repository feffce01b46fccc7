package copier

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/pgq-go/pgq/internal/logging"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/apply"
	"github.com/pgq-go/pgq/pgq"
)

// puller applies a batch of this node's events to the node.
//
// Per-key order: a row that fails is not sent to PgQ's retry queue (later
// rows of its key would overtake it) but held on the node, in
// pgq_go.held_event, with every later row of its key behind it; all of it
// written in the node transaction that records the batch, so exactly once
// across crashes. At the start of every batch the held keys whose first
// row is due are tried again, in order. See Config.OrderKey.
type puller struct {
	tc      *TargetedCopier
	pending pullCounts   // this batch's counts, added to the copier's once committed
	heldDue atomic.Int64 // unix ns when held rows want a batch again; 0: none held
}

// due is when the pull should look for a batch for its held rows, if
// any (consumer.Bell.Due): the shared queue's pull otherwise looks only
// when rung.
func (p *puller) due() time.Time {
	if ns := p.heldDue.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// noteHeld records whether the node holds rows after this batch.
func (p *puller) noteHeld(st *keyState) {
	if len(st.held) == 0 {
		p.heldDue.Store(0)
		return
	}
	p.heldDue.Store(time.Now().Add(p.tc.cfg.RetryDelay).UnixNano())
}

// batchCommitted adds the committed batch's counts to the copier's stats,
// so that Stats never counts a row whose transaction then rolled back.
func (p *puller) batchCommitted() {
	tc := p.tc
	tc.applied.Add(p.pending.applied)
	tc.retried.Add(p.pending.retried)
	tc.parked.Add(p.pending.parked)
	tc.ignored.Add(p.pending.ignored)
	p.pending = pullCounts{}
}

type pullCounts struct{ applied, retried, parked, ignored int64 }

func (c *pullCounts) add(o pullCounts) {
	c.applied += o.applied
	c.retried += o.retried
	c.parked += o.parked
	c.ignored += o.ignored
}

// keyState is what the node holds back, by order key.
type keyState struct {
	held   map[string]bool // keys with rows in pgq_go.held_event
	parked map[string]bool // keys with rows in pgq_go.parked_event
}

func (s *keyState) blocked() bool { return len(s.held) > 0 || len(s.parked) > 0 }

// sqlOrderLock serialises the pull of a consumer with ReplayParked on the
// same node, so that neither sees the other's held or parked keys half
// way.
const sqlOrderLock = "select pg_advisory_xact_lock(hashtextextended('pgq_go.order:' || $1, 0))"

// sqlCaptureOff turns capture off for the rest of the transaction.
const sqlCaptureOff = "select pg_catalog.set_config('" + CaptureSetting + "', 'off', true)"

const sqlHeldKeys = `select distinct on (order_key) order_key, retry_after <= now()
	from pgq_go.held_event where consumer_id = $1 order by order_key, hold_id`

const sqlParkedKeys = `select distinct order_key from pgq_go.parked_event
	where consumer_id = $1 and order_key is not null`

func (p *puller) ProcessRemoteBatch(ctx context.Context, b *pgq.Batch, tx pgx.Tx) error {
	p.pending = pullCounts{}
	st, c, err := p.prepare(ctx, b, tx)
	if err != nil {
		return fmt.Errorf("copier: %s/%s batch %d: held rows: %w", b.Queue, b.Consumer, b.ID(), err)
	}
	// Fast path: every row in one savepoint, no per-row round trips.
	bc, err := p.applyAll(ctx, b, tx, st)
	if err != nil {
		// Some row failed (or waits behind its key): redo the batch row by
		// row, each in its own savepoint, holding or parking the failures.
		if bc, err = p.applyEach(ctx, b, tx, st); err != nil {
			return err
		}
	}
	c.add(bc)
	p.pending = c
	p.noteHeld(st)
	return nil
}

// prepare locks the consumer's order state, retries the held keys that
// are due and returns the keys still held or parked.
func (p *puller) prepare(ctx context.Context, b *pgq.Batch, tx pgx.Tx) (*keyState, pullCounts, error) {
	var c pullCounts
	st := &keyState{held: map[string]bool{}, parked: map[string]bool{}}
	pb := &pgx.Batch{}
	// Rows applied here are not captured again (a node that captures the
	// table it receives rows into would send them on: see CaptureSetting).
	pb.Queue(sqlCaptureOff)
	pb.Queue(sqlOrderLock, b.Consumer)
	pb.Queue(sqlHeldKeys, b.Consumer)
	pb.Queue(sqlParkedKeys, b.Consumer)
	res := tx.SendBatch(ctx, pb)
	var due []string
	_, err := res.Exec()
	if err == nil {
		_, err = res.Exec()
	}
	if err == nil {
		var rows pgx.Rows
		if rows, err = res.Query(); err == nil {
			var key string
			var isDue bool
			_, err = pgx.ForEachRow(rows, []any{&key, &isDue}, func() error {
				st.held[key] = true
				if isDue {
					due = append(due, key)
				}
				return nil
			})
		}
	}
	if err == nil {
		var rows pgx.Rows
		if rows, err = res.Query(); err == nil {
			var key string
			_, err = pgx.ForEachRow(rows, []any{&key}, func() error { st.parked[key] = true; return nil })
		}
	}
	if cerr := res.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, c, err
	}
	for _, key := range due {
		kc, err := p.retryKey(ctx, b, tx, st, key)
		if err != nil {
			return nil, c, err
		}
		c.add(kc)
	}
	return st, c, nil
}

// heldRow is one row of pgq_go.held_event.
type heldRow struct {
	id       int64
	queue    string
	attempts int32
	ev       pgq.Event
}

// retryKey applies the held rows of key in order, until one fails: that
// one is held again with a longer delay, or parked with every row behind
// it.
func (p *puller) retryKey(ctx context.Context, b *pgq.Batch, tx pgx.Tx, st *keyState, key string) (pullCounts, error) {
	var c pullCounts
	rows, err := tx.Query(ctx, `select hold_id, queue_name, attempts, ev_id, ev_time, coalesce(ev_txid, 0),
		coalesce(ev_retry, 0), ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4
		from pgq_go.held_event where consumer_id = $1 and order_key = $2 order by hold_id`, b.Consumer, key)
	if err != nil {
		return c, err
	}
	var held []heldRow
	var h heldRow
	e := &h.ev
	_, err = pgx.ForEachRow(rows, []any{&h.id, &h.queue, &h.attempts, &e.ID, &e.Time, &e.TxID, &e.Retry,
		&e.Type, &e.Data, &e.Extra1, &e.Extra2, &e.Extra3, &e.Extra4}, func() error {
		held = append(held, h)
		return nil
	})
	if err != nil {
		return c, err
	}
	var done []int64
	for i, h := range held {
		ev := h.ev
		aerr, err := p.applyOne(ctx, tx, &ev)
		if err != nil {
			return c, err
		}
		if aerr == nil {
			done = append(done, h.id)
			c.applied++
			continue
		}
		attempts := h.attempts + 1
		if errors.Is(aerr, apply.ErrBadPayload) || int(attempts) > p.tc.cfg.MaxRetries {
			for _, f := range held[i:] {
				done = append(done, f.id)
			}
			n, err := p.parkKey(ctx, tx, b.Consumer, key, held[i:], attempts, aerr)
			if err != nil {
				return c, err
			}
			c.parked += n
			delete(st.held, key)
			st.parked[key] = true
			break
		}
		d := p.retryDelay(attempts)
		if _, err := tx.Exec(ctx, `update pgq_go.held_event set attempts = $2, error = $3,
			retry_after = now() + $4::bigint * interval '1 microsecond' where hold_id = $1`,
			h.id, attempts, clipError(aerr.Error()), d.Microseconds()); err != nil {
			return c, err
		}
		c.retried++
		p.tc.log.Warn("held row failed again; retrying later", "event_id", ev.ID, "key", key,
			"attempts", attempts, logging.KeyBackoff, d, "waiting", len(held)-i-1, logging.KeyErr, aerr)
		break
	}
	if len(done) == len(held) && !st.parked[key] {
		delete(st.held, key)
	}
	if len(done) > 0 {
		if _, err := tx.Exec(ctx, "delete from pgq_go.held_event where hold_id = any($1)", done); err != nil {
			return c, err
		}
	}
	return c, nil
}

// errBehindParked is the error stored with a row parked only because an
// earlier row of its order key is parked.
func errBehindParked(evID int64, key string) error {
	return fmt.Errorf("event %d: parked behind an earlier parked event of order key %s (replay that one first)", evID, key)
}

// parkKey parks rows (of one key, in order): the first with cause, the
// others behind it. It returns how many it parked.
func (p *puller) parkKey(ctx context.Context, tx pgx.Tx, consumer, key string, rows []heldRow, attempts int32, cause error) (int64, error) {
	for i, h := range rows {
		ev := h.ev
		err := cause
		if i == 0 {
			ev.Retry = attempts
		} else {
			err = errBehindParked(ev.ID, key)
		}
		if err := parkKeyed(ctx, tx, consumer, h.queue, &ev, err, &key); err != nil {
			return int64(i), err
		}
	}
	p.tc.log.Warn("row parked", "event_id", rows[0].ev.ID, "key", key, "retries", attempts, "parked_behind", len(rows)-1, logging.KeyErr, cause)
	return int64(len(rows)), nil
}

func (p *puller) retryDelay(attempts int32) time.Duration {
	return p.tc.cfg.RetryDelay << min(max(attempts-1, 0), 5)
}

// applyOne applies ev in a savepoint of tx. aerr is the applier's error
// (the savepoint rolled back); err is a failure of tx itself.
func (p *puller) applyOne(ctx context.Context, tx pgx.Tx, ev *pgq.Event) (aerr, err error) {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return nil, err
	}
	aerr = p.tc.cfg.Applier.Apply(ctx, sp, ev)
	if aerr == nil {
		return nil, sp.Commit(ctx)
	}
	if err := sp.Rollback(ctx); err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return aerr, nil
}

// errWaits makes the fast path give up on a row that must wait behind its
// key.
var errWaits = errors.New("row waits behind its order key")

// Bulk apply: an applier that implements apply.BatchApplier gets the
// batch's rows in chunks of at most applyChunkBytes, counting each event's
// text and applyRowOverhead bytes for what its decoding costs besides
// (about 28,000 rows of 70 bytes). Chunks are large on purpose: a COPY's
// fixed cost on the server is not small (measured on a 2-core VM: COPYs of
// 2,000 rows cost the backend 3 µs a row, one large COPY 1.1; perf showed
// a fifth of the backend's time in brk() giving each COPY's buffers back).
const (
	applyChunkBytes  = 16 << 20
	applyRowOverhead = 512
)

// applyAll applies the batch inside one savepoint, in chunks when the
// applier applies in bulk; any failure rolls it all back and is returned
// (the caller then applies row by row).
func (p *puller) applyAll(ctx context.Context, b *pgq.Batch, tx pgx.Tx, st *keyState) (pullCounts, error) {
	var c pullCounts
	sp, err := tx.Begin(ctx)
	if err != nil {
		return c, err
	}
	bulk, _ := p.tc.cfg.Applier.(apply.BatchApplier)
	var chunk []*pgq.Event
	chunkBytes := 0
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		if err := bulk.ApplyBatch(ctx, sp, chunk); err != nil {
			return err
		}
		c.applied += int64(len(chunk))
		chunk, chunkBytes = chunk[:0], 0
		return nil
	}
	check := st.blocked()
	for ev, err := range b.Events(ctx) {
		if err == nil {
			switch {
			case ev.Extra1.String != p.tc.cfg.Node:
				err = errors.New("misaddressed event") // handled row by row
			case !p.wanted(ev):
				c.ignored++
				continue
			default:
				if check {
					key, kerr := p.tc.cfg.OrderKey(ev)
					if kerr != nil || st.held[key] || st.parked[key] {
						err = errWaits
						break
					}
				}
				if bulk != nil {
					chunk = append(chunk, ev)
					chunkBytes += int(eventBytes(&ev.EventData)) + applyRowOverhead
					if chunkBytes >= applyChunkBytes {
						err = flush()
					}
					break
				}
				if err = p.tc.cfg.Applier.Apply(ctx, sp, ev); err == nil {
					c.applied++
				}
			}
		}
		if err != nil {
			_ = sp.Rollback(ctx)
			return c, err
		}
	}
	if err := flush(); err != nil {
		_ = sp.Rollback(ctx)
		return c, err
	}
	return c, sp.Commit(ctx)
}

func (p *puller) wanted(ev *pgq.Event) bool {
	return p.tc.cfg.Accept(ev.Type.String)
}

const sqlHold = `insert into pgq_go.held_event (consumer_id, queue_name, order_key, attempts, retry_after, error,
	ev_id, ev_time, ev_txid, ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4)
	values ($1, $2, $3, $4, now() + $5::bigint * interval '1 microsecond', $6,
	$7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`

// hold stores ev under key in held_event: as the head of its key when
// cause is not nil (to retry after delay), else behind the rows there.
func hold(ctx context.Context, tx pgx.Tx, consumer, queue, key string, ev *pgq.Event, attempts int32, delay time.Duration, cause error) error {
	var msg *string
	if cause != nil {
		m := clipError(cause.Error())
		msg = &m
	}
	_, err := tx.Exec(ctx, sqlHold, consumer, queue, key, attempts, delay.Microseconds(), msg,
		ev.ID, ev.Time, ev.TxID, ev.Retry, ev.Type, ev.Data, ev.Extra1, ev.Extra2, ev.Extra3, ev.Extra4)
	return err
}

func (p *puller) applyEach(ctx context.Context, b *pgq.Batch, tx pgx.Tx, st *keyState) (pullCounts, error) {
	tc := p.tc
	var c pullCounts
	for ev, err := range b.Events(ctx) {
		if err != nil {
			return c, err
		}
		if ev.Extra1.String != tc.cfg.Node {
			// The server-side filter makes this impossible; never apply it.
			if err := park(ctx, tx, b.Consumer, b.Queue, ev, fmt.Errorf("event %d addressed to %q, not %q", ev.ID, ev.Extra1.String, tc.cfg.Node)); err != nil {
				return c, err
			}
			c.parked++
			continue
		}
		if !p.wanted(ev) {
			c.ignored++
			continue
		}
		key, kerr := tc.cfg.OrderKey(ev)
		if kerr != nil {
			// Without a key it cannot be ordered: park it now.
			if err := park(ctx, tx, b.Consumer, b.Queue, ev, fmt.Errorf("event %d: order key: %w", ev.ID, kerr)); err != nil {
				return c, err
			}
			c.parked++
			tc.log.Warn("row parked: no order key", "event_id", ev.ID, logging.KeyErr, kerr)
			continue
		}
		switch {
		case st.parked[key]:
			cause := errBehindParked(ev.ID, key)
			if err := parkKeyed(ctx, tx, b.Consumer, b.Queue, ev, cause, &key); err != nil {
				return c, err
			}
			c.parked++
			tc.log.Warn("row parked behind its key", "event_id", ev.ID, "key", key)
			continue
		case st.held[key]:
			if err := hold(ctx, tx, b.Consumer, b.Queue, key, ev, int32(ev.Retry), 0, nil); err != nil {
				return c, err
			}
			continue
		}
		aerr, err := p.applyOne(ctx, tx, ev)
		if err != nil {
			return c, err
		}
		if aerr == nil {
			c.applied++
			continue
		}
		attempts := ev.Retry + 1
		if errors.Is(aerr, apply.ErrBadPayload) || int(attempts) > tc.cfg.MaxRetries {
			if err := parkKeyed(ctx, tx, b.Consumer, b.Queue, ev, aerr, &key); err != nil {
				return c, err
			}
			st.parked[key] = true
			c.parked++
			tc.log.Warn("row parked", "event_id", ev.ID, "key", key, "retries", ev.Retry, logging.KeyErr, aerr)
			continue
		}
		d := p.retryDelay(attempts)
		if err := hold(ctx, tx, b.Consumer, b.Queue, key, ev, attempts, d, aerr); err != nil {
			return c, err
		}
		st.held[key] = true
		c.retried++
		tc.log.Warn("row failed; held with its key, retrying later", "event_id", ev.ID, "key", key,
			"retries", ev.Retry, logging.KeyBackoff, d, logging.KeyErr, aerr)
	}
	return c, nil
}
