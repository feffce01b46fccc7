// Package job runs Skytools' generic jobs in Go, from their unchanged ini
// sections: queue_mover, queue_splitter, simple_consumer,
// simple_serial_consumer and simple_local_consumer, one or many per
// process (what Skytools' scriptmgr did).
//
// Each kind keeps the semantics of the Skytools script it replaces:
//
//   - queue_mover: a SerialConsumer (tick tracked in the destination's
//     pgq_ext, exactly once) that copies every event into dst_queue_name
//     on dst_db, keeping its payload and ev_time (MoveHandler).
//   - queue_splitter: the same, each event into the destination queue
//     named by its queue_field (default extra1) (SplitHandler).
//   - simple_serial_consumer: dst_query once per event, exactly once in
//     the destination (SerialQueryHandler).
//   - simple_consumer: dst_query once per I:/U:/D: event, at least once
//     (QueryBatch).
//   - simple_local_consumer: the same, its position in a local file
//     (local_tracking_file), as Skytools' LocalConsumer keeps it.
//
// dst_query's %(key)s placeholders are bound as parameters, never pasted
// into the text (Query).
package job
