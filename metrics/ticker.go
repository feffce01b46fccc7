package metrics

import (
	"github.com/pgq-go/pgq/ticker"
	"github.com/prometheus/client_golang/prometheus"
)

// TickerSource is what a TickerCollector reads: *ticker.Ticker.
type TickerSource interface {
	Snapshot() []ticker.DatabaseStats
}

var tickerLabels = []string{"server", "database"}

// tickerCounters are the totals of ticker.DatabaseStats, in the order of
// tickerCounterValues.
var tickerCounters = []*prometheus.Desc{
	prometheus.NewDesc("pgq_ticker_tick_runs_total", "pgq.ticker() runs.", tickerLabels, nil),
	prometheus.NewDesc("pgq_ticker_ticks_total", "Queue ticks made.", tickerLabels, nil),
	prometheus.NewDesc("pgq_ticker_notifies_total", "Tick notifications sent.", tickerLabels, nil),
	prometheus.NewDesc("pgq_ticker_retry_events_total", "Events moved back from the retry queue.", tickerLabels, nil),
	prometheus.NewDesc("pgq_ticker_maint_ops_total", "Maintenance operations run (rotation steps, vacuums, ...).", tickerLabels, nil),
	prometheus.NewDesc("pgq_ticker_errors_total", "Ticker failures of any kind.", tickerLabels, nil),
}

func tickerCounterValues(s ticker.DatabaseStats) []int64 {
	return []int64{s.TickRuns, s.Ticks, s.Notifies, s.RetryEvents, s.MaintOps, s.Errors}
}

var (
	tickerConsecutiveErrors = prometheus.NewDesc("pgq_ticker_consecutive_errors",
		"Ticker failures since the last success (0 when healthy).", tickerLabels, nil)
	tickerLastSuccess = prometheus.NewDesc("pgq_ticker_last_success_timestamp_seconds",
		"Unix time of the last successful pgq.ticker() run.", tickerLabels, nil)
	tickerLastTickID = prometheus.NewDesc("pgq_ticker_last_tick_id",
		"Last tick id made on any queue of the database.", tickerLabels, nil)
	tickerState = prometheus.NewDesc("pgq_ticker_state",
		"1 for the state the ticker is in for the database (ticking, standby, connecting, no-pgq, failing), 0 for the others.",
		[]string{"server", "database", "state"}, nil)
)

// tickerStates are the states reported by pgq_ticker_state.
var tickerStates = []ticker.State{
	ticker.StateConnecting, ticker.StateTicking, ticker.StateStandby, ticker.StateNoPgq, ticker.StateFailing,
}

// TickerCollector is a prometheus.Collector reading a ticker's Snapshot
// on every scrape: per database (labels server and database) the totals
// pgq_ticker_tick_runs_total, pgq_ticker_ticks_total,
// pgq_ticker_notifies_total, pgq_ticker_retry_events_total,
// pgq_ticker_maint_ops_total and pgq_ticker_errors_total, and the gauges
// pgq_ticker_consecutive_errors, pgq_ticker_last_success_timestamp_seconds
// (once a run succeeded), pgq_ticker_last_tick_id and pgq_ticker_state
// (one series per state, 1 for the current one).
//
// Its metrics have fixed names: register one TickerCollector per registry.
type TickerCollector struct {
	src TickerSource
}

// NewTickerCollector returns a collector reading src (a *ticker.Ticker).
func NewTickerCollector(src TickerSource) *TickerCollector {
	return &TickerCollector{src: src}
}

// Describe implements prometheus.Collector.
func (c *TickerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range tickerCounters {
		ch <- d
	}
	ch <- tickerConsecutiveErrors
	ch <- tickerLastSuccess
	ch <- tickerLastTickID
	ch <- tickerState
}

// Collect implements prometheus.Collector.
func (c *TickerCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.src.Snapshot() {
		for i, v := range tickerCounterValues(s) {
			ch <- counterValue(tickerCounters[i], v, s.Server, s.Database)
		}
		ch <- gaugeValue(tickerConsecutiveErrors, float64(s.ConsecutiveErrors), s.Server, s.Database)
		if !s.LastSuccess.IsZero() {
			ch <- gaugeValue(tickerLastSuccess, float64(s.LastSuccess.UnixNano())/1e9, s.Server, s.Database)
		}
		ch <- gaugeValue(tickerLastTickID, float64(s.LastTickID), s.Server, s.Database)
		for _, state := range tickerStates {
			v := 0.0
			if s.State == state {
				v = 1
			}
			ch <- gaugeValue(tickerState, v, s.Server, s.Database, string(state))
		}
	}
}
