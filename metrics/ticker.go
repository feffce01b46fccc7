package metrics

import (
	"sync"

	"github.com/pgq-go/pgq/ticker"
)

// TickerSource is what TickerCollector reads: *ticker.Ticker.
type TickerSource interface {
	Snapshot() []ticker.DatabaseStats
}

// tickerStates are the states reported by the TickerState gauge.
var tickerStates = []ticker.State{
	ticker.StateConnecting, ticker.StateTicking, ticker.StateStandby, ticker.StateNoPgq, ticker.StateFailing,
}

// TickerCollector reports a ticker's per-database stats (the Ticker*
// metrics, labelled server and database). The ticker keeps totals; the
// collector sends their increase since its previous Collect, so one
// collector must feed one sink.
type TickerCollector struct {
	src  TickerSource
	mu   sync.Mutex
	last map[[2]string][6]int64
}

// NewTickerCollector returns a collector reading src (a *ticker.Ticker).
func NewTickerCollector(src TickerSource) *TickerCollector {
	return &TickerCollector{src: src, last: map[[2]string][6]int64{}}
}

// Collect sends the current stats to s.
func (c *TickerCollector) Collect(s Sink) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.src.Snapshot() {
		labels := Labels{"server": st.Server, "database": st.Database}
		key := [2]string{st.Server, st.Database}
		cur := [6]int64{st.TickRuns, st.Ticks, st.Notifies, st.RetryEvents, st.MaintOps, st.Errors}
		prev, seen := c.last[key]
		for i, name := range []string{TickerTickRuns, TickerTicks, TickerNotifies, TickerRetryEvents, TickerMaintOps, TickerErrors} {
			// Always Add, even 0, so every counter exists from the start.
			d := cur[i] - prev[i]
			if !seen || d < 0 {
				d = cur[i]
			}
			s.Add(name, float64(d), labels)
		}
		c.last[key] = cur
		s.Set(TickerConsecutiveErrors, float64(st.ConsecutiveErrors), labels)
		if !st.LastSuccess.IsZero() {
			s.Set(TickerLastSuccess, float64(st.LastSuccess.UnixNano())/1e9, labels)
		}
		s.Set(TickerLastTickID, float64(st.LastTickID), labels)
		for _, state := range tickerStates {
			v := 0.0
			if st.State == state {
				v = 1
			}
			s.Set(TickerState, v, Labels{"server": st.Server, "database": st.Database, "state": string(state)})
		}
	}
}
