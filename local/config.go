package local

import (
	"context"
	"errors"

	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/pgq"
)

// Config configures a Consumer.
type Config struct {
	// Consumer configures the queue side: queue (Skytools queue_name),
	// consumer name (consumer_name), fetch size, filter, polling, backoff,
	// logger and hooks; see consumer.Config for each field and its
	// default. Consumer.Register is not needed: Run always registers a
	// consumer that is not registered, as Skytools' LocalConsumer does (at
	// the tracking file's tick, or at the queue's latest tick when there
	// is no file).
	Consumer consumer.Config

	// TrackingFile is the file that holds the last applied tick id
	// (Skytools local_tracking_file, whose config template suggests
	// ~/state/<job_name>.tick). Required: there is no job name to derive a
	// default from. A leading "~/" is the home directory, as in Skytools;
	// a relative name is made absolute when New is called. Its directory
	// must exist. The file is written through TrackingFile+".new" (the
	// temporary name Skytools uses), and its format is Skytools': the tick
	// id in decimal, no newline; a Python LocalConsumer and this one can
	// take turns on the same file.
	TrackingFile string
}

// Handler applies one batch (Skytools process_local_batch). Events are
// read with b.Events(ctx) or b.All(ctx).
//
// Apply the whole batch at once, for example in one transaction of the
// destination: a batch that fails, or whose process dies before the
// tracking file is written, is applied again from its first event. An
// error (or a panic) leaves the tracking file and the queue where they
// were; the batch is processed again after a backoff. Wrap an error with
// consumer.Fatal to stop Run instead.
//
// The retry queue cannot be used: tagging an event with Event.TagRetry
// stops Run with ErrRetryQueue, without recording the batch.
type Handler interface {
	ProcessLocalBatch(ctx context.Context, b *pgq.Batch) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, b *pgq.Batch) error

// ProcessLocalBatch calls f(ctx, b).
func (f HandlerFunc) ProcessLocalBatch(ctx context.Context, b *pgq.Batch) error { return f(ctx, b) }

// Events adapts a per-event handler (Skytools process_local_event) to a
// Handler: h is called for each event of the batch in ev_id order, and
// the first error fails the batch.
func Events(h consumer.EventHandler) Handler {
	return HandlerFunc(consumer.Events(h).ProcessBatch)
}

// validate checks what New checks before building the queue side.
func (c Config) validate() error {
	var errs []error
	if c.TrackingFile == "" {
		errs = append(errs, errors.New("local: Config.TrackingFile is empty (Skytools local_tracking_file, e.g. ~/state/<job>.tick)"))
	}
	return errors.Join(errs...)
}
