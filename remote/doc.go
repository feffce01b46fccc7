// Package remote applies PgQ events read from a queue in one database to
// another database exactly once, across crashes, restarts and cut
// connections.
//
// # RemoteConsumer or SerialConsumer
//
// Both run a consumer.Consumer on the source and give the handler a
// transaction on the destination in which the batch's position is recorded,
// so the apply and the record commit together or not at all.
//
//   - RemoteConsumer records the last applied batch id
//     (pgq_ext.completed_batch) and the tick that batch ended at
//     (pgq_go.remote_position). It may tag events for retry: the tags are
//     stored in the same destination transaction and re-issued if the
//     process dies between the destination commit and finish_batch on the
//     source. Pick it by default.
//   - SerialConsumer records the last applied tick id
//     (pgq_ext.completed_tick). It knows where the destination stands in the
//     queue's tick order: it detects a destination that is behind or ahead
//     of the consumer (lost position, for example after restoring a
//     backup) and can Rewind the consumer to the destination's tick. It
//     cannot use the retry queue. Pick it when the destination must apply
//     batches strictly in order and you want position checks.
//
// # Writing per event
//
// A handler that writes one statement per event should queue them with
// Pipeline(dst).Exec: they are sent many per round trip, in order with
// anything else run on dst, and at the latest before the batch is
// recorded, in the same transaction. A failed statement fails the batch.
// When the destination has a connection of its own, the pipe streams
// (PostgreSQL's pipeline mode): the destination executes one chunk of
// statements while the handler reads events and queues the next. On one
// 2-core server an INSERT per event so runs at about 0.55× a COPY of the
// same rows, 7× python-pgq's RemoteConsumer (see bench/README.md). For
// plain row copies, dst.CopyFrom is faster still.
//
// # Guarantees
//
//	event on the source queue, batch committed by next_batch
//	→ applied on the destination exactly once (handler + record in one tx)
//	→ finished on the source after the destination commit.
//
//	crash before the destination commit:   nothing applied; batch redone.
//	crash after it, before finish_batch:   batch skipped as done; retry tags re-issued.
//	source or destination restart, cut:    the step fails, backs off, redone.
//	two processes with the same name:      serialised by an advisory lock on the destination;
//	                                       see below.
//	process stalls mid-batch (network      the destination ends its transaction after
//	hang, SIGSTOP):                        Config.IdleTimeout and frees its row locks.
//	source and destination one pool:       the handler's transaction is a savepoint of the
//	                                       source transaction: one connection per batch.
//
// Any number of instances of one consumer may run, started in any order (a
// rolling deploy, a paused process that resumes). pgq's next_batch_custom
// reads the subscription without a lock, so two instances calling it at
// once can each get a batch id over the same ticks. pgq.NextBatch
// serialises the call (a transaction advisory lock per queue and
// consumer), so pgq-go instances get the same batch; against instances
// that do not (python-pgq), the destination check is by tick as well as by
// batch id: a batch whose end tick is recorded is skipped, a batch that
// overlaps the recorded tick moves the consumer to it. SerialConsumer
// tells a batch superseded by another instance (dropped quietly) from a
// real lost position (the source still offers it: Run stops).
//
// Side effects outside the destination transaction (mail, HTTP) are not
// covered: they may happen more than once.
//
// # Tracking schema
//
// Install (run by Run unless Config.SkipInstall) creates schema pgq_ext,
// compatible with Skytools pgq_ext 3.x (tables completed_batch,
// completed_tick, completed_event, partial_batch keyed by (consumer_id,
// subconsumer_id); functions is_batch_done, set_batch_done, get_last_tick,
// set_last_tick, is_event_done, set_event_done, version), so a Python
// RemoteConsumer or SerialConsumer can be replaced by ours with the same
// consumer name without re-applying or skipping anything. A pgq_ext that
// already exists is verified and used as-is. pgq-go's own tables live in
// schema pgq_go (identity, remote_position, remote_retry, migration;
// versioned migrations applied in place). The destination needs no pgq
// extension.
//
// Tracking rows are keyed by (consumer_id, subconsumer_id) and pgq_ext keys
// have no queue name: two flows into one destination under one consumer
// name (another queue, another source database) need distinct
// Config.SubConsumer values, or one takes the other's position. Identity
// returns a UUID made when pgq-go's schema is installed in a database, a
// stable name for a source; AdoptPosition moves an existing flow's
// position to a new SubConsumer.
//
// # Built on this package
//
// The copier package's TargetedCopier runs two flows per node of a
// targeted-copy cluster, each a RemoteConsumer: node → hub (relay) and hub
// → node (pull).
package remote
