// Package consumer runs a PgQ consumer: the loop that Skytools' Python
// pgq.Consumer runs, with Go ergonomics.
//
// A Consumer reads one queue as one registered consumer. For each batch it
//
//  1. opens the batch with pgq.next_batch_custom in its own, committed
//     statement (so a failure later gets the same batch id back, never a
//     new id for the same events);
//  2. gives the handler a *pgq.Batch in a transaction that begins with
//     its first statement (Batch.DB): the events are read with one
//     prepared statement, streamed one at a time (or through a cursor,
//     LazyFetch rows per fetch, when the handler buffers fetches);
//  3. when the handler returns nil, sends in one round trip the retry of
//     every event tagged with Event.TagRetry (pgq.event_retry_raw: O(1)
//     each), pgq.finish_batch and the commit, and, unless a Bell decides
//     when to look, step 1 for the next batch (in a transaction of its
//     own, after the commit) and the read of that batch's events
//     (pgq.Batch.QueuePrefetch), which the next handler then reads from the
//     same connection.
//
// A batch so costs one round trip beside its events when batches wait
// (two for the first one, or after a failure: the read, with the
// transaction's begin, and the finish). While a handler streams the
// events, the connection is busy with them: a statement through
// Batch.DB then fails (pgq.ErrPrefetchReading, or pgx's "conn busy");
// read the events first (Batch.All), or buffer fetches. A statement
// through Batch.DB before the events are read is fine: the events sent
// ahead are dropped and read again when asked for.
//
// Every event is done by default. A handler error or panic rolls back, is
// logged with queue, consumer and batch_id, and after an exponential,
// capped backoff the same batch is processed again, as a fresh *pgq.Batch
// (earlier retry tags are gone). Database errors — a connection cut, a
// PostgreSQL restart — are handled the same way: nothing is finished that
// was not processed, so no event is lost or skipped (delivery is
// at-least-once; see the remote package for exactly-once into another
// database). A handler error wrapped with Fatal stops Run instead.
//
// When no batch is ready the consumer waits for a tick notification on
// pgq.NotifyChannel(queue), sent by the ticker package after each tick, or
// for PollInterval, whichever comes first. Notifications only shorten the
// wait: a consumer whose ticks come from pgqd, which does not notify,
// simply polls.
//
// A queue that many consumers share, each wanting a few of its events
// through a Filter, costs the server a batch per consumer per tick. With
// Config.Bell a consumer instead looks only when a producer rang it
// (NOTIFY on the bell's channel with the producer's txid, in the producer's
// transaction), then takes every ready tick in one batch; see Bell.
//
// Cancelling the context given to Run stops the consumer. A batch being
// processed is finished if the handler still returns nil, and left
// untouched otherwise (it is delivered again on the next run). Run returns
// only after every goroutine it started has ended.
//
// # Coming from Skytools
//
// Every python-pgq consumer setting and behaviour, and its counterpart here:
//
//	Skytools (pgq.Consumer)              consumer package
//	-----------------------------------  --------------------------------------------------
//	queue_name                           Config.Queue
//	consumer_name (default: job_name)    Config.Name
//	pgq_lazy_fetch = 300 (0 = all)       Config.LazyFetch (default 300); Config.NoLazyFetch
//	pgq_autocommit                       not needed: a batch is read and finished in one
//	                                     transaction, begun with its first statement
//	pgq_batch_collect_events             Config.MinCount
//	pgq_batch_collect_interval           Config.MinInterval
//	pgq_keep_lag                         Config.KeepLag
//	table_filter = orders, s.t           Config.Filter = pgq.TableIn("orders", "s.t"):
//	  (ev_extra1 in (fq_name(...)))        bare names get "public." as with fq_name, so
//	                                     "orders" matches the "public.orders" that
//	                                     trigger producers write (pgq.In(FieldExtra1,
//	                                     ...) compares literally); any typed pgq.Filter
//	                                     is evaluated by the server
//	loop_delay = 1.0                     Config.PollInterval (default 1s), shortened by
//	                                     LISTEN wake-ups (Config.DisableListen turns off)
//	exception_sleep = 20                 Config.ErrorBackoff (1s, doubling, capped at 20s)
//	connection_lifetime = 1200           the pool's pgxpool.Config.MaxConnLifetime
//	keepalive_stats = 300                Hooks.OnBatch runs for every batch, empty ones
//	                                     included (the ticker makes one per idle period)
//	stats: count, duration, idle,        BatchStats.Events, .Duration, .Idle, .Retries
//	  retry-events                         (+ .Lag, .Attempts, tick ids)
//	--register                           Config.Register (on start) or Consumer.Register
//	--unregister                         Consumer.Unregister
//	--rewind / --reset to a tick         Consumer.RegisterAt(ctx, tickID)
//	status (lag, last seen, pending)     Consumer.Info
//	process_batch(db, batch_id, evs)     BatchHandler.ProcessBatch(ctx, *pgq.Batch)
//	process_event(db, ev)                Events(EventHandler): EventHandler.ProcessEvent
//	self.batch_info                      Batch.Info (pgq.BatchInfo: ids, tick ids/times)
//	ev.tag_retry(60)                     ev.TagRetry(time.Minute); ev.TagRetryAt(t)
//	ev.tag_done()                        ev.TagDone() (undoes TagRetry; done is default)
//	ev.retry                             ev.Retry (ev_retry: earlier delivery attempts)
//	exception -> sleep, same batch       error or panic -> backoff, same batch
//	"Not subscriber to queue" (consumer  Run logs and returns pgq.ErrNotRegistered; with
//	  not registered): logged, retried     Config.Register it registers at start only, never
//	  every exception_sleep forever        again while running (that would skip events)
//	same message for a missing queue,    Run logs "the queue does not exist" and returns
//	  retried forever                      pgq.ErrQueueNotFound (at start, with Register
//	                                       too, or when the queue is dropped while running)
//	SIGINT / SIGTERM                     cancel the context given to Run
//
// Three behaviours differ on purpose. A consumer that is not registered,
// or whose queue is missing, ends Run with an error naming queue and
// consumer instead of retrying forever: neither heals without an operator,
// and a supervisor shows a stopped process where a retry loop only logs
// (nothing is lost: the consumer's position stays where it was). Retries
// use pgq.event_retry_raw (one cheap insert per retried event, pipelined
// with finish_batch) instead of pgq.event_retry, which rescans the batch
// for every retried event. And the filter is built from typed, quoted
// values, never from SQL text.
package consumer
