// Package pgq is a typed Go client for the PgQ 3.x SQL API: the
// snapshot-based event queue that lives inside PostgreSQL (Skytools).
//
// Every operation is a plain function taking a [DB] — a *pgxpool.Pool,
// *pgx.Conn or pgx.Tx — so each call can run in the caller's transaction:
// an event inserted with [InsertEvent] inside a transaction exists if and
// only if that transaction commits.
//
// The life of an event: a producer inserts it ([InsertEvent], [InsertEvents]);
// the ticker ([Ticker], or the ticker package) records a tick, a snapshot of
// committed transactions; a registered consumer ([RegisterConsumer]) opens a
// batch, the events between two ticks ([NextBatch]), reads them
// ([Batch.Events]), tags some for retry ([Event.TagRetry]) and finishes the
// batch ([FinishBatch]). Until then [NextBatch] returns the same batch again,
// which is how crashes are survived.
//
// Errors carry the queue and consumer names; callers branch with errors.Is on
// [ErrNoExtension], [ErrQueueNotFound], [ErrNotRegistered], [ErrNoTicks] and
// [ErrInvalidName]. The underlying *pgconn.PgError stays reachable with
// errors.As.
package pgq
