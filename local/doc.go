// Package local applies PgQ batches to something that cannot record a
// queue position itself (files, a search index, a mail gateway, a
// database without pgq_ext) and keeps the position, the last applied tick
// id, in a local file: Skytools' pgq.LocalConsumer, on which the
// simple_local_consumer job is built.
//
// A Consumer runs a consumer.Consumer on the queue. For each batch it
//
//  1. reads the tracking file: a batch that starts at the file's tick (or
//     any batch when there is no file) is applied; a batch that ends at it
//     was applied before a crash and is finished without processing;
//  2. calls the Handler with the whole batch (no retry queue: tagging an
//     event for retry stops Run with ErrRetryQueue);
//  3. writes the batch's end tick to the file, atomically and durably
//     (TrackingFile+".new", fsync, rename, fsync of the directory);
//  4. finishes the batch on the queue.
//
// A skipped batch is finished like any other: consumer.Hooks.OnBatch sees
// it, with no events.
//
// On start, Run reconciles the queue with the file as Skytools does: an
// unregistered consumer is registered at the file's tick, a consumer
// elsewhere on the queue is moved to it (events are delivered again when
// the file is behind, skipped when it is ahead), and a missing file gets
// the queue's tick.
//
// # Guarantees
//
// The file is the position: what it records was applied, what comes after
// it was not.
//
//	crash before the handler's apply is durable:  nothing recorded; the batch is applied again.
//	crash after the apply, before the file write: the batch is applied again (the one window
//	                                              where a batch repeats: keep it short, or make
//	                                              the apply idempotent; a destination that can
//	                                              record the tick in the apply's transaction
//	                                              wants remote.SerialConsumer instead).
//	crash after the file write, before finish:    the batch is finished without processing.
//	database restored, queue behind the file:     the consumer is moved forward to the file's tick.
//	file restored from a backup, behind:          the consumer is rewound; later events come again.
//	two pgq-go instances on one file:             serialised by an advisory lock per queue and
//	                                              consumer; the second skips what the first applied.
//
// A file's tick that the queue no longer has (rotated away) stops Run with
// ErrLostPosition: Reset removes the file and Run then continues from the
// queue's position.
//
// # Coming from Skytools
//
// The tracking file is byte-compatible with Python's LocalConsumer (the
// tick id in decimal, no newline, written through the same ".new" name),
// so a job can move between the Python and the Go implementation, either
// way, with the same file, even after a crash of either.
//
//	Skytools (pgq.LocalConsumer)          local package
//	------------------------------------  -----------------------------------------------
//	local_tracking_file                   Config.TrackingFile (required; "~/" expanded)
//	  (template: ~/state/%(job_name)s.tick)
//	"path does not exist" (UsageError)    New and Run fail: the directory does not exist
//	queue_name, consumer_name, ...        Config.Consumer (consumer.Config)
//	process_local_batch(db, id, evs)      Handler.ProcessLocalBatch(ctx, *pgq.Batch)
//	process_local_event(db, id, ev)       Events(consumer.EventHandler)
//	check_queue() at startup              Run, before the first batch
//	is_batch_done(): "Lost position"      the consumer is moved to the file's tick and the
//	  (check_queue after the exception)     step fails (logged, retried after the backoff)
//	--rewind                              Consumer.Rewind
//	--reset                               Consumer.Reset
//	--register (removes the file if new)  Consumer.Register
//	--unregister (removes the file)       Consumer.Unregister
//	must not use the retry queue          Run stops with ErrRetryQueue
//
// Differences on purpose. When the process died after writing the file and
// before finish_batch, Skytools moves the consumer to the file's tick,
// dropping the open batch; here the batch is finished without processing
// (same position, no "out of sync" warning for a normal crash). A consumer
// unregistered while Run goes on stops Run with pgq.ErrNotRegistered
// instead of being registered again (see consumer.Consumer.Run). A failed
// save of the tick, or a retry tag, stops Run instead of processing the
// batch again, which would apply it again on every attempt. Concurrent
// pgq-go instances are serialised by an advisory lock (Skytools relies on
// its pidfile); a Python instance running at the same time as a Go one on
// one file is not.
//
// Each batch costs one round trip more than a plain consumer.Consumer: the
// advisory lock, taken in the batch's transaction with its begin.
package local
