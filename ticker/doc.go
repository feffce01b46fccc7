// Package ticker is a pgqd replacement as a library: for every database it
// serves it runs the PgQ ticker, moves due retry events back into their
// queues and runs pgq.maint_operations() (event table rotation, extra
// maintenance functions, vacuum), each database on its own goroutine and
// connection, with the schedule and the ini names of pgqd (ticker_period,
// retry_period, maint_period, check_period, stats_period,
// connection_lifetime). cmd/pgqctl's "ticker" command runs it as a daemon
// that reads pgqd.ini.
//
// # One ticker per database
//
// PgQ breaks if pgq.ticker() runs twice in parallel on one database. Before
// ticking, a Ticker takes the session-level advisory lock
// pg_try_advisory_lock(LockKey) on its ticking connection and keeps it for
// the connection's life. A second Ticker on the same database (an HA
// standby) finds the lock taken, reports StateStandby and tries again every
// LockRetryPeriod; it takes over within that period once the first one
// stops or its connection dies (the server releases a session lock when
// the session ends). Retry and maintenance run on the same connection, so
// they too run only under the lock.
//
// pgqd does not take this lock. When switching from pgqd, stop pgqd first:
// a pgqd left running would tick in parallel. The lock needs a real
// session: do not point the ticker at a transaction-pooling pgbouncer.
// While it ticks, a Ticker looks every ten TickPeriods (at least every
// second) for ticks of its queues that it did not make; when it finds
// some, it logs a warning naming the database, the queues and the other
// sessions seen calling pgq.ticker, once until ten minutes pass without
// such ticks.
//
// # Ticks and wake-ups
//
// Every TickPeriod, one statement ticks each queue that pgq.ticker() would
// tick (not paused, no external ticker), applying the queue's
// ticker_max_count, ticker_max_lag and ticker_idle_period exactly as
// pgq.ticker() does: the same thresholds, in plain SQL, pick the queues
// pgq.ticker() is then called for, so an idle database costs one cheap
// statement per round. The next round comes a TickPeriod after this
// round's tick statement (pgqd waits a period after each round; a fixed
// grid made a queue whose ticker_max_lag equals the period skip a third of
// the rounds), and sooner when a queue holding new events will reach its
// ticker_max_lag before that: the round statement says when. For each queue that got a tick, the Ticker then sends
// NOTIFY on pgq.NotifyChannel(queue) with the tick id as payload, which
// the consumer package listens on: consumers wake within milliseconds of a
// tick instead of polling. Config.DisableNotify turns this off.
//
// # Events that commit after a tick counted them
//
// PgQ counts new events by the queue's event sequence, which moves at
// insert time. A tick taken while an inserting transaction is still open
// counts its events but cannot see them; once it commits the sequence does
// not move again, and pgq.ticker() (and pgqd) leave the events waiting for
// the next insert or the idle period (ticker_idle_period, a minute by
// default). The Ticker remembers, per queue, the transactions such a tick
// could not see (those its snapshot lists in progress, and those at or
// above its xmax, which a snapshot does not list) and, on the first round
// after one of them ends, looks its events up in the queue's event tables
// (by pgq's ev_txid index) and, if it wrote any, forces a tick
// (pgq.force_tick), so those events reach consumers within two tick
// periods of their commit. Transactions of other databases, which a
// snapshot lists too, find no events and force nothing. If the ticker's
// role cannot read the event tables, every queue with an ended transaction
// is ticked. DatabaseStats.RaceTicks counts these ticks.
//
// # Tick requests
//
// The Ticker also LISTENs on pgq.TickRequestChannel in every database it
// ticks: a producer that sends it (pgq.RequestTick, route.Sender's
// RequestTick, the copier's relays) gets a round within about 25 ms
// instead of at the next TickPeriod. The round applies the queues'
// thresholds as any other (a request cannot make a queue tick that
// pgq.ticker() would not); requests arriving together share one round.
// DatabaseStats.TickRequests counts them.
//
// # Failures
//
// A database without pgq (or with pgq older than 3) is reported
// (StateNoPgq) and checked again every CheckPeriod. Connection loss, server
// restarts and SQL errors are retried with exponential backoff (MinBackoff
// to MaxBackoff, StateFailing); the Ticker never gives up on a database.
// A failed maintenance step is logged and counted, and ticking goes on.
// Snapshot reports every database's state and counters; they are logged
// every StatsPeriod.
package ticker
