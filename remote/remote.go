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
	// (pgq_ext consumer_id): it must be unique per destination database.
	Consumer consumer.Config
	// SubConsumer is pgq_ext's subconsumer_id. Default "".
	SubConsumer string
	// SkipInstall leaves the destination tracking schema alone on Run;
	// Run then only verifies it. Default false: Run installs it (Install).
	SkipInstall bool
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
	src, dst *pgxpool.Pool
	cfg      Config
	h        Handler
	c        *consumer.Consumer
}

// New returns a RemoteConsumer reading from src and applying to dst.
func New(src, dst *pgxpool.Pool, cfg Config, h Handler) (*RemoteConsumer, error) {
	if src == nil || dst == nil {
		return nil, errors.New("remote: New needs both a source and a destination pool")
	}
	if h == nil {
		return nil, errors.New("remote: New needs a Handler")
	}
	r := &RemoteConsumer{src: src, dst: dst, cfg: cfg, h: h}
	c, err := consumer.New(src, cfg.Consumer, consumer.BatchHandlerFunc(r.processBatch))
	if err != nil {
		return nil, fmt.Errorf("remote: %w", err)
	}
	r.c = c
	r.cfg.Consumer = c.Config()
	return r, nil
}

// Consumer returns the underlying source-side consumer (admin: Register,
// Unregister, Info).
func (r *RemoteConsumer) Consumer() *consumer.Consumer { return r.c }

// Run installs (or verifies) the destination tracking schema and consumes
// until ctx is cancelled; see consumer.Consumer.Run for the error policy.
func (r *RemoteConsumer) Run(ctx context.Context) error {
	if err := prepareDst(ctx, r.dst, r.cfg); err != nil {
		return err
	}
	return r.c.Run(ctx)
}

func prepareDst(ctx context.Context, dst *pgxpool.Pool, cfg Config) error {
	logf := cfg.Consumer.Logger
	for n := 1; ; n++ {
		var err error
		if cfg.SkipInstall {
			err = verify(ctx, dst)
		} else {
			err = Install(ctx, dst)
		}
		if err == nil || errors.Is(err, ErrTrackingSchema) {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		d := cfg.Consumer.ErrorBackoff.Delay(n)
		logf.Error("destination tracking schema not ready; retrying", "queue", cfg.Consumer.Queue,
			"consumer", cfg.Consumer.Name, "err", err, "backoff", d)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// lockKeySQL takes a transaction lock that serialises every process
// applying the same (consumer, subconsumer) to this destination, so two
// instances can never both see a batch as not done.
const lockKeySQL = "select pg_advisory_xact_lock(hashtextextended('pgq_go.remote:' || $1 || '/' || $2, 0))"

func (r *RemoteConsumer) processBatch(ctx context.Context, b *pgq.Batch) error {
	name, sub := r.cfg.Consumer.Name, r.cfg.SubConsumer
	tx, err := r.dst.Begin(ctx)
	if err != nil {
		return fmt.Errorf("remote: %s/%s batch %d: begin destination: %w", b.Queue, name, b.ID(), err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	pb := &pgx.Batch{}
	pb.Queue(lockKeySQL, name, sub)
	pb.Queue("select pgq_ext.is_batch_done($1, $2, $3)", name, sub, b.ID())
	pb.Queue(`select ev_id, retry_after from pgq_go.remote_retry
		where consumer_id = $1 and subconsumer_id = $2 and batch_id = $3`, name, sub, b.ID())
	res := tx.SendBatch(ctx, pb)
	var done bool
	_, err = res.Exec()
	if err == nil {
		err = res.QueryRow().Scan(&done)
	}
	var tags map[int64]time.Time
	if err == nil {
		var rows pgx.Rows
		rows, err = res.Query()
		if err == nil {
			tags = map[int64]time.Time{}
			var id int64
			var at time.Time
			_, err = pgx.ForEachRow(rows, []any{&id, &at}, func() error { tags[id] = at; return nil })
		}
	}
	if cerr := res.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("remote: %s/%s batch %d: check destination: %w", b.Queue, name, b.ID(), err)
	}
	if done {
		// Applied before a crash, not finished on the source: skip it, and
		// re-issue its retry tags so no retried event is lost.
		return retag(ctx, b, tags)
	}

	if err := r.h.ProcessRemoteBatch(ctx, b, tx); err != nil {
		return err
	}
	// The handler succeeded: record and commit even if ctx is cancelled
	// meanwhile, so a stop does not leave the destination ahead of the source.
	fctx, cancel := finishCtx(ctx)
	defer cancel()
	if err := markDone(fctx, tx, name, sub, b); err != nil {
		return fmt.Errorf("remote: %s/%s batch %d: record on destination: %w", b.Queue, name, b.ID(), err)
	}
	if err := tx.Commit(fctx); err != nil {
		return fmt.Errorf("remote: %s/%s batch %d: commit destination: %w", b.Queue, name, b.ID(), err)
	}
	if afterDstCommit != nil {
		afterDstCommit(b.ID())
	}
	return nil
}

// finishTimeout bounds the destination's record + commit after a handler
// succeeded; they run even when the caller's context is cancelled.
const finishTimeout = 30 * time.Second

func finishCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
}

// afterDstCommit is a test hook (see export_test.go).
var afterDstCommit func(batchID int64)

// markDone records the batch and its retry tags in the destination
// transaction, in one round trip.
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
	pb.Queue("delete from pgq_go.remote_retry where consumer_id = $1 and subconsumer_id = $2", name, sub)
	if len(ids) > 0 {
		pb.Queue(`insert into pgq_go.remote_retry (consumer_id, subconsumer_id, batch_id, ev_id, retry_after)
			select $1, $2, $3, unnest($4::bigint[]), unnest($5::timestamptz[])`, name, sub, b.ID(), ids, ats)
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
	for range len(pb.QueuedQueries) - 1 {
		if _, err := res.Exec(); err != nil {
			return err
		}
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
