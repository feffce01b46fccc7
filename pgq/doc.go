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
// batch ([FinishBatch], [Batch.Finish]). Until then [NextBatch] returns the
// same batch again, which is how crashes are survived.
//
// # Producing
//
// Two functions insert events, both in the caller's transaction:
// [InsertEvent] writes one with pgq.insert_event and returns its id;
// [InsertEvents] writes many with one COPY from an iterator (a slice is
// slices.Values(evs)) and returns the count. [NewEvent] and [JSONEvent]
// build the [EventData]:
//
//	tx, _ := pool.Begin(ctx)
//	pgq.InsertEvent(ctx, tx, "orders", pgq.NewEvent("created", `{"id":42}`))
//	pgq.InsertEvents(ctx, tx, "orders", slices.Values(evs))
//	tx.Commit(ctx) // the events exist iff this commits
//
// # Ticks and latency
//
// [CreateQueue] makes the queue's first tick (pgq.create_queue calls
// pgq.ticker): a consumer registered right after sees every event inserted
// from then on, once a later tick covers it. Nothing is visible to
// consumers before such a tick. A ticker (the ticker package, pgqctl
// ticker or pgqd) runs pgq.ticker() every ticker period, and that call
// ticks a queue only when one of its thresholds is met: ticker_max_count
// events (default 500), events ticker_max_lag old (default 3 s), or
// ticker_idle_period (default 1 min) without a tick.
//
// Low latency therefore needs both knobs turned down: the queue's
// ticker_max_lag ([SetQueueConfig] with [QueueConfig.TickerMaxLag]), so that
// a call may tick the queue soon after an event, and the ticker's period
// (ticker.Config.TickPeriod, pgqd ticker_period, default 1 s), so that the
// call comes soon. A 50 ms max lag under a 1 s ticker period still waits up
// to a second; a 50 ms period under the default 3 s max lag waits three seconds.
//
//	pgq.SetQueueConfig(ctx, pool, "orders", pgq.QueueConfig{TickerMaxLag: pgq.Ptr(50 * time.Millisecond)})
//	ticker.New(ticker.Config{Servers: ..., TickPeriod: 50 * time.Millisecond})
//
// Tests and tools tick on demand with [Tick] (pgq.force_tick then
// pgq.ticker, in separate transactions).
//
// # Concurrency
//
// The functions are safe for concurrent use as far as the [DB] passed is (a
// pool is; one pgx.Conn or pgx.Tx serves one statement at a time). A
// [Batch] is read and finished from one goroutine at a time; tagging its
// events ([Event.TagRetry], [Event.TagDone]) is safe from any number of
// goroutines at once, so a handler may fan events out to workers.
//
// Errors carry the queue and consumer names; callers branch with errors.Is on
// [ErrNoExtension], [ErrQueueNotFound], [ErrNotRegistered], [ErrNoTicks] and
// [ErrInvalidName]. The underlying *pgconn.PgError stays reachable with
// errors.As.
package pgq
