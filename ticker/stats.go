package ticker

import (
	"log/slog"
	"sync"
	"time"
)

// State is what the ticker is doing for one database.
type State string

// States of a database.
const (
	// StateConnecting: not connected yet, or reconnecting after a recycle.
	StateConnecting State = "connecting"
	// StateTicking: this ticker holds the database's advisory lock and ticks.
	StateTicking State = "ticking"
	// StateStandby: another ticker holds the advisory lock; this one waits
	// and retries every LockRetryPeriod.
	StateStandby State = "standby"
	// StateNoPgq: the database has no pgq schema, or pgq older than 3;
	// rechecked every CheckPeriod.
	StateNoPgq State = "no-pgq"
	// StateFailing: the last attempt failed (connection refused, server
	// restarting, SQL error); retried with backoff.
	StateFailing State = "failing"
)

// DatabaseStats is the health and the counters of one database. Counters
// are totals since the database was first served by this Ticker.
type DatabaseStats struct {
	Server   string // host:port of the server (no credentials)
	Database string
	State    State
	Since    time.Time // when State was entered
	Version  string    // pgq.version(), once known

	TickRuns     int64 // ticker statements run
	Ticks        int64 // queue ticks made (one per queue that ticked)
	RaceTicks    int64 // ticks forced after a commit race (see the package doc)
	TickRequests int64 // notifications on pgq.TickRequestChannel
	Notifies     int64 // NOTIFYs sent for ticks
	RetryEvents  int64 // events moved back from the retry queue
	MaintOps     int64 // maintenance function calls and vacuums run
	Errors       int64 // failures of any kind

	ConsecutiveErrors int64  // failures since the last success
	LastError         string // "" when none yet
	LastErrorTime     time.Time
	LastSuccess       time.Time // last successful ticker run
	LastTickID        int64     // last tick id made on any queue
}

// stats is a DatabaseStats behind a mutex, updated by one worker and read
// by Snapshot and the stats logger.
type stats struct {
	mu sync.Mutex
	s  DatabaseStats
}

func (st *stats) get() DatabaseStats {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.s
}

func (st *stats) update(f func(s *DatabaseStats)) {
	st.mu.Lock()
	defer st.mu.Unlock()
	f(&st.s)
}

// setState records a state change and reports whether it was one.
func (st *stats) setState(s State) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.s.State == s {
		return false
	}
	st.s.State, st.s.Since = s, time.Now()
	return true
}

func (st *stats) fail(err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.s.Errors++
	st.s.ConsecutiveErrors++
	st.s.LastError = err.Error()
	st.s.LastErrorTime = time.Now()
}

func (s DatabaseStats) logAttrs() []any {
	attrs := []any{
		slog.String("server", s.Server), slog.String("db", s.Database), slog.String("state", string(s.State)),
		slog.Int64("tick_runs", s.TickRuns), slog.Int64("ticks", s.Ticks), slog.Int64("race_ticks", s.RaceTicks), slog.Int64("tick_requests", s.TickRequests), slog.Int64("notifies", s.Notifies),
		slog.Int64("retry_events", s.RetryEvents), slog.Int64("maint_ops", s.MaintOps),
		slog.Int64("errors", s.Errors),
	}
	if !s.LastSuccess.IsZero() {
		attrs = append(attrs, slog.Time("last_success", s.LastSuccess))
	}
	if s.ConsecutiveErrors > 0 {
		attrs = append(attrs, slog.Int64("consecutive_errors", s.ConsecutiveErrors), slog.String("last_error", s.LastError))
	}
	return attrs
}
