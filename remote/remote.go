package remote

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/pgq"
)

// Handler applies one batch to the destination (Skytools
// process_remote_batch). It must write only through dst: the batch is
// recorded as done in the same transaction, which commits after the
// handler returns nil. On error the transaction rolls back and the batch
// is processed again later. Events are done by default; TagRetry works as
// in the consumer package and survives crashes (see RemoteConsumer).
type Handler interface {
	ProcessRemoteBatch(ctx context.Context, batch *pgq.Batch, dst pgx.Tx) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, batch *pgq.Batch, dst pgx.Tx) error

// ProcessRemoteBatch calls f(ctx, batch, dst).
func (f HandlerFunc) ProcessRemoteBatch(ctx context.Context, batch *pgq.Batch, dst pgx.Tx) error {
	return f(ctx, batch, dst)
}

// Config configures a RemoteConsumer or SerialConsumer.
type Config struct {
	// Consumer configures the source side: queue, consumer name, fetch
	// size, filter, polling, backoff, logger, hooks (see consumer.Config).
	// Consumer.Name is also the tracking key on the destination
	// (pgq_ext consumer_id).
	Consumer consumer.Config
	// SubConsumer is pgq_ext's subconsumer_id, the second half of the
	// tracking key. Default "". Two flows into one destination (another
	// queue or another source database under the same consumer name) must
	// use distinct keys, or one would take the other's position: the
	// TargetedCopier sets it to the source's identity and queue.
	SubConsumer string
	// SkipInstall leaves the destination tracking schema alone on Run;
	// Run then only verifies it. Default false: Run installs it (Install).
	SkipInstall bool
	// AcquireTimeout bounds the wait for a destination connection while
	// the batch holds a source connection. Two pools that feed each other
	// (a relay and a pull between the same two databases) can otherwise
	// wait for each other forever when both are exhausted; past the
	// timeout the batch fails with an error saying so and is retried after
	// the consumer's backoff. Default 30s.
	AcquireTimeout time.Duration
	// IdleTimeout is the destination transaction's
	// idle_in_transaction_session_timeout: if the process stalls mid-batch
	// (a silent network hang to the source, a paused process), the
	// destination server ends the transaction and releases its row locks
	// instead of holding them indefinitely; the batch is then redone.
	// Default 60s; negative disables it (the server's setting applies).
	IdleTimeout time.Duration
	// AfterCommit, when set, is called after a batch's destination
	// transaction committed (RemoteConsumer only), before the batch is
	// finished on the source: what the handler counted in it is now
	// durable. It is not called for a batch skipped as already applied.
	// Default: none.
	AfterCommit func(b *pgq.Batch)
}

func (c Config) withDefaults() Config {
	if c.AcquireTimeout <= 0 {
		c.AcquireTimeout = 30 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 60 * time.Second
	}
	return c
}

// RemoteConsumer applies batches from a queue in a source database to a
// destination database exactly once, tracking the last applied batch id on
// the destination (pgq_ext.completed_batch), like Skytools' RemoteConsumer.
//
// Per batch: next_batch is committed on the source; a destination
// transaction is opened and the consumer's tracking row locked; if the
// batch is already recorded (the process died after the destination commit
// and before finish_batch) it is skipped, else the handler runs, the batch
// is recorded with set_batch_done together with its retry tags, and the
// destination commits; then retries and finish_batch commit on the source.
//
// Unlike Skytools, retry tags survive a crash in that gap: they are stored
// in pgq_go.remote_retry in the destination transaction and re-issued when
// the batch is skipped as done.
type RemoteConsumer struct {
	f *flow
}

// New returns a RemoteConsumer reading from src and applying to dst.
func New(src, dst *pgxpool.Pool, cfg Config, h Handler) (*RemoteConsumer, error) {
	f, err := newFlow("New", src, dst, cfg, h, batchTracker{})
	if err != nil {
		return nil, err
	}
	return &RemoteConsumer{f: f}, nil
}

// Consumer returns the underlying source-side consumer (admin: Register,
// Unregister, Info).
func (r *RemoteConsumer) Consumer() *consumer.Consumer { return r.f.c }

// Run installs (or verifies) the destination tracking schema and consumes
// until ctx is cancelled; see consumer.Consumer.Run for the error policy.
func (r *RemoteConsumer) Run(ctx context.Context) error { return r.f.run(ctx) }

// position is a RemoteConsumer's recorded place on the destination
// (pgq_go.remote_position): the batch it applied last and the tick that
// batch ended at.
type position struct {
	found    bool
	batchID  int64
	tickID   int64
	tickTime time.Time
}

// covers reports whether the events of batch b were applied already: b
// ends at or before the recorded tick. Tick ids restart when a queue is
// dropped and created again; such a new queue's ticks are all younger than
// the recorded one, which tells the two apart.
func (p position) covers(b pgq.BatchInfo) bool {
	return p.found && b.TickID <= p.tickID && !b.TickTime.After(p.tickTime)
}

// overlaps reports whether batch b starts before the recorded tick and
// ends after it (another instance applied a shorter batch over its first
// ticks): applying b would repeat those events.
func (p position) overlaps(b pgq.BatchInfo) bool {
	return p.found && b.PrevTickID < p.tickID && b.TickID > p.tickID && !b.PrevTickTime.After(p.tickTime)
}

const (
	sqlPosition = `select last_batch_id, last_tick_id, last_tick_time from pgq_go.remote_position
		where consumer_id = $1 and subconsumer_id = $2`
	sqlRetryTags = `select ev_id, retry_after from pgq_go.remote_retry
		where consumer_id = $1 and subconsumer_id = $2 and (tick_id = $3 or tick_id is null and batch_id = $4)`
	sqlSavePosition = `insert into pgq_go.remote_position (consumer_id, subconsumer_id, last_batch_id, last_tick_id, last_tick_time)
		values ($1, $2, $3, $4, $5)
		on conflict (consumer_id, subconsumer_id) do update
		set last_batch_id = excluded.last_batch_id, last_tick_id = excluded.last_tick_id,
		    last_tick_time = excluded.last_tick_time, updated_at = now()`
)

// BatchState is what a destination records about one batch of a
// RemoteConsumer's flow (see CheckBatch).
type BatchState struct {
	// Applied: the batch's events were applied, under its batch id
	// (pgq_ext, as Skytools records it) or under another batch id over the
	// same ticks (pgq_go.remote_position).
	Applied bool
	// Overlap: another batch id applied the first ticks of this batch, up
	// to PositionTick; applying it would repeat those events.
	Overlap bool
	// PositionTick is the tick the recorded position ends at (0: none).
	PositionTick int64
	// RetryTags are the retry tags stored with the applied batch, by
	// event id.
	RetryTags map[int64]time.Time

	byID bool
	pos  position
}

// CheckBatch reads, on dst, whether batch b of the flow tracked under
// (consumer, subconsumer) was applied there: what a RemoteConsumer checks
// before applying a batch. Tools that move a flow's events elsewhere use
// it to skip what the destination already has.
func CheckBatch(ctx context.Context, dst *pgxpool.Pool, consumer, subconsumer string, b pgq.BatchInfo) (BatchState, error) {
	pb := &pgx.Batch{}
	queueBatchCheck(pb, consumer, subconsumer, b)
	res := dst.SendBatch(ctx, pb)
	st, err := readBatchCheck(res, b)
	if cerr := res.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return st, fmt.Errorf("remote: consumer %s batch %d: check destination: %w", consumer, b.ID, err)
	}
	return st, nil
}

// queueBatchCheck queues the statements readBatchCheck reads.
func queueBatchCheck(pb *pgx.Batch, name, sub string, b pgq.BatchInfo) {
	pb.Queue("select pgq_ext.is_batch_done($1, $2, $3)", name, sub, b.ID)
	pb.Queue(sqlPosition, name, sub)
	pb.Queue(sqlRetryTags, name, sub, b.TickID, b.ID)
}

func readBatchCheck(res pgx.BatchResults, b pgq.BatchInfo) (BatchState, error) {
	var st BatchState
	if err := res.QueryRow().Scan(&st.byID); err != nil {
		return st, err
	}
	pos := &st.pos
	err := res.QueryRow().Scan(&pos.batchID, &pos.tickID, &pos.tickTime)
	pos.found = err == nil
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return st, err
	}
	rows, err := res.Query()
	if err != nil {
		return st, err
	}
	st.RetryTags = map[int64]time.Time{}
	var id int64
	var at time.Time
	if _, err := pgx.ForEachRow(rows, []any{&id, &at}, func() error { st.RetryTags[id] = at; return nil }); err != nil {
		return st, err
	}
	st.Applied = st.byID || pos.covers(b)
	st.Overlap = !st.Applied && pos.overlaps(b)
	if pos.found {
		st.PositionTick = pos.tickID
	}
	return st, nil
}

// batchTracker records the last applied batch id (pgq_ext, as Skytools
// does) and the ticks it covered (pgq_go.remote_position): PgQ may hand two
// instances two batch ids over the same ticks, so a batch counts as done
// when either is recorded.
type batchTracker struct{}

func (batchTracker) queueCheck(pb *pgx.Batch, name, sub string, b *pgq.Batch) {
	queueBatchCheck(pb, name, sub, b.Info)
}

func (batchTracker) decide(ctx context.Context, f *flow, res pgx.BatchResults, b *pgq.Batch) (bool, error) {
	name := f.cfg.Consumer.Name
	st, err := readBatchCheck(res, b.Info)
	if err != nil {
		return false, fmt.Errorf("remote: %s/%s batch %d: check destination: %w", b.Queue, name, b.ID(), err)
	}
	pos := st.pos
	switch {
	case st.Applied:
		// Applied before (a crash after the destination commit, or another
		// instance): skip it, and re-issue its retry tags so no retried
		// event is lost.
		if !st.byID && pos.batchID != b.ID() {
			f.cfg.Consumer.Logger.Info("batch already applied by another batch id over the same ticks; skipped",
				"queue", b.Queue, "consumer", name, "batch_id", b.ID(), "tick_id", b.Info.TickID, "applied_batch_id", pos.batchID, "applied_tick_id", pos.tickID)
		}
		return false, retag(ctx, b, st.RetryTags)
	case st.Overlap:
		// Another instance applied the first ticks of this batch under
		// another batch id. Move the source consumer to the applied tick
		// (this drops the open batch) and take the rest as a new batch.
		if err := pgq.RegisterConsumerAt(ctx, f.src, b.Queue, name, pos.tickID); err != nil {
			return false, fmt.Errorf("remote: %s/%s batch %d: reposition after overlap: %w", b.Queue, name, b.ID(), err)
		}
		return false, fmt.Errorf("remote: %s/%s batch %d covers ticks %d..%d, of which %d..%d were applied by batch %d of another instance; consumer moved to tick %d",
			b.Queue, name, b.ID(), b.Info.PrevTickID, b.Info.TickID, b.Info.PrevTickID, pos.tickID, pos.batchID, pos.tickID)
	}
	return true, nil
}

func (batchTracker) record(ctx context.Context, tx pgx.Tx, name, sub string, b *pgq.Batch) error {
	return markDone(ctx, tx, name, sub, b)
}

// markDone records the batch, its ticks and its retry tags in the
// destination transaction, in one round trip.
func markDone(ctx context.Context, tx pgx.Tx, name, sub string, b *pgq.Batch) error {
	retries := b.Retries()
	ids := make([]int64, len(retries))
	ats := make([]time.Time, len(retries))
	for i, e := range retries {
		ids[i] = e.ID
		ats[i], _ = e.RetryAt()
	}
	pb := &pgx.Batch{}
	pb.Queue("select pgq_ext.set_batch_done($1, $2, $3)", name, sub, b.ID())
	pb.Queue(sqlSavePosition, name, sub, b.ID(), b.Info.TickID, b.Info.TickTime)
	pb.Queue("delete from pgq_go.remote_retry where consumer_id = $1 and subconsumer_id = $2", name, sub)
	if len(ids) > 0 {
		pb.Queue(`insert into pgq_go.remote_retry (consumer_id, subconsumer_id, batch_id, tick_id, ev_id, retry_after)
			select $1, $2, $3, $4, unnest($5::bigint[]), unnest($6::timestamptz[])`, name, sub, b.ID(), b.Info.TickID, ids, ats)
	}
	res := tx.SendBatch(ctx, pb)
	defer res.Close()
	var ok bool
	if err := res.QueryRow().Scan(&ok); err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("batch %d already recorded as done", b.ID())
	}
	if err := execAll(res, len(pb.QueuedQueries)-1); err != nil {
		return err
	}
	return res.Close()
}

// retag re-applies stored retry tags to the batch's events.
func retag(ctx context.Context, b *pgq.Batch, tags map[int64]time.Time) error {
	if len(tags) == 0 {
		return nil
	}
	for ev, err := range b.Events(ctx) {
		if err != nil {
			return err
		}
		if at, ok := tags[ev.ID]; ok {
			ev.TagRetryAt(at)
		}
	}
	if n := b.RetryCount(); n != len(tags) {
		return fmt.Errorf("remote: %s/%s batch %d: %d stored retry tags but %d events found",
			b.Queue, b.Consumer, b.ID(), len(tags), n)
	}
	return nil
}
