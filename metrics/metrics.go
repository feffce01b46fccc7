// Package metrics is the one small interface through which every pgq-go
// component reports its numbers: events, batches, retries, errors, lag and
// durations. A Sink receives counters, gauges and observations by name;
// adapters turn each component's own stats into those calls:
//
//   - ConsumerHooks wraps consumer.Hooks (also usable for the consumers
//     inside remote.RemoteConsumer and remote.TargetedCopier);
//   - TickerCollector reads a ticker.Ticker's Snapshot;
//   - CopierCollector reads a remote.TargetedCopier's Stats.
//
// Collectors are pulled: a pull-based sink (the Prometheus adapter in
// metrics/prom) runs them on every scrape; for a push-based sink, Poll runs
// them periodically.
//
// The package depends on no metrics library. Descs lists every metric the
// adapters emit, with its kind, help text and label names, so that an
// adapter for any system can declare them up front.
package metrics

import (
	"context"
	"time"
)

// Labels are the label names and values of one observation.
type Labels map[string]string

// Sink receives metrics. Implementations must be safe for concurrent use,
// quick (they run on the components' goroutines) and must not fail: a
// sink drops what it cannot record.
type Sink interface {
	// Add adds delta (non-negative) to the counter name.
	Add(name string, delta float64, labels Labels)
	// Set sets the gauge name.
	Set(name string, value float64, labels Labels)
	// Observe records one value of the distribution name (a histogram);
	// durations are in seconds.
	Observe(name string, value float64, labels Labels)
}

// Collector pushes the current state of a component into a sink. Collect
// is called by a pull-based sink on every scrape, or by Poll.
type Collector interface {
	Collect(s Sink)
}

// CollectorFunc adapts a function to Collector.
type CollectorFunc func(s Sink)

// Collect calls f(s).
func (f CollectorFunc) Collect(s Sink) { f(s) }

// Poll runs every collector into s now and then every period until ctx is
// done; it returns when ctx is done. For sinks that do not pull.
func Poll(ctx context.Context, s Sink, period time.Duration, cs ...Collector) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		for _, c := range cs {
			c.Collect(s)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Discard is a Sink that records nothing.
var Discard Sink = discard{}

type discard struct{}

func (discard) Add(string, float64, Labels)     {}
func (discard) Set(string, float64, Labels)     {}
func (discard) Observe(string, float64, Labels) {}

// Kind is the type of a metric.
type Kind int

// Metric kinds.
const (
	KindCounter   Kind = iota + 1 // only goes up; Sink.Add
	KindGauge                     // goes up and down; Sink.Set
	KindHistogram                 // a distribution; Sink.Observe
)

func (k Kind) String() string {
	switch k {
	case KindCounter:
		return "counter"
	case KindGauge:
		return "gauge"
	case KindHistogram:
		return "histogram"
	}
	return "unknown"
}

// Desc describes a metric emitted by this package's adapters.
type Desc struct {
	Name   string
	Kind   Kind
	Help   string
	Labels []string // label names, in order
}

// Metric names emitted by ConsumerHooks; labels queue and consumer.
const (
	ConsumerBatches       = "pgq_consumer_batches_total"
	ConsumerEvents        = "pgq_consumer_events_total"
	ConsumerRetries       = "pgq_consumer_retries_total"
	ConsumerErrors        = "pgq_consumer_errors_total"
	ConsumerIdle          = "pgq_consumer_idle_total"
	ConsumerBatchDuration = "pgq_consumer_batch_duration_seconds"
	ConsumerBatchEvents   = "pgq_consumer_batch_events"
	ConsumerLag           = "pgq_consumer_lag_seconds"
	ConsumerLastBatch     = "pgq_consumer_last_batch_timestamp_seconds"
	ConsumerFailing       = "pgq_consumer_consecutive_errors"
)

// Metric names emitted by TickerCollector; labels server and database
// (and state for TickerState).
const (
	TickerTickRuns          = "pgq_ticker_tick_runs_total"
	TickerTicks             = "pgq_ticker_ticks_total"
	TickerNotifies          = "pgq_ticker_notifies_total"
	TickerRetryEvents       = "pgq_ticker_retry_events_total"
	TickerMaintOps          = "pgq_ticker_maint_ops_total"
	TickerErrors            = "pgq_ticker_errors_total"
	TickerConsecutiveErrors = "pgq_ticker_consecutive_errors"
	TickerLastSuccess       = "pgq_ticker_last_success_timestamp_seconds"
	TickerLastTickID        = "pgq_ticker_last_tick_id"
	TickerState             = "pgq_ticker_state"
)

// Metric names emitted by CopierCollector; label node.
const (
	CopierRelayed = "pgq_copier_relayed_total"
	CopierApplied = "pgq_copier_applied_total"
	CopierRetried = "pgq_copier_retried_total"
	CopierParked  = "pgq_copier_parked_total"
	CopierIgnored = "pgq_copier_ignored_total"
)

var (
	consumerLabels = []string{"queue", "consumer"}
	tickerLabels   = []string{"server", "database"}
	copierLabels   = []string{"node"}
)

var descs = []Desc{
	{ConsumerBatches, KindCounter, "Batches finished by the consumer, empty ones included.", consumerLabels},
	{ConsumerEvents, KindCounter, "Events processed (read in the batch's last full pass).", consumerLabels},
	{ConsumerRetries, KindCounter, "Events sent to the retry queue.", consumerLabels},
	{ConsumerErrors, KindCounter, "Failed batch attempts (handler errors, panics, database errors).", consumerLabels},
	{ConsumerIdle, KindCounter, "Times the consumer found no batch ready and waited.", consumerLabels},
	{ConsumerBatchDuration, KindHistogram, "Time from opening a batch to its commit, in seconds.", consumerLabels},
	{ConsumerBatchEvents, KindHistogram, "Events per finished batch.", consumerLabels},
	{ConsumerLag, KindGauge, "Age of the last batch's end tick when it was opened, in seconds.", consumerLabels},
	{ConsumerLastBatch, KindGauge, "Unix time of the last finished batch.", consumerLabels},
	{ConsumerFailing, KindGauge, "Failed attempts since the last finished batch (0 when healthy).", consumerLabels},

	{TickerTickRuns, KindCounter, "pgq.ticker() runs.", tickerLabels},
	{TickerTicks, KindCounter, "Queue ticks made.", tickerLabels},
	{TickerNotifies, KindCounter, "Tick notifications sent.", tickerLabels},
	{TickerRetryEvents, KindCounter, "Events moved back from the retry queue.", tickerLabels},
	{TickerMaintOps, KindCounter, "Maintenance operations run (rotation steps, vacuums, ...).", tickerLabels},
	{TickerErrors, KindCounter, "Ticker failures of any kind.", tickerLabels},
	{TickerConsecutiveErrors, KindGauge, "Ticker failures since the last success (0 when healthy).", tickerLabels},
	{TickerLastSuccess, KindGauge, "Unix time of the last successful pgq.ticker() run.", tickerLabels},
	{TickerLastTickID, KindGauge, "Last tick id made on any queue of the database.", tickerLabels},
	{TickerState, KindGauge, "1 for the state the ticker is in for the database (ticking, standby, connecting, no-pgq, failing), 0 for the others.", []string{"server", "database", "state"}},

	{CopierRelayed, KindCounter, "Events relayed from the node's push queue to a hub.", copierLabels},
	{CopierApplied, KindCounter, "Rows applied on the node.", copierLabels},
	{CopierRetried, KindCounter, "Rows sent to the retry queue after a failed apply.", copierLabels},
	{CopierParked, KindCounter, "Rows parked for an operator (see pgqctl parked).", copierLabels},
	{CopierIgnored, KindCounter, "Events of types the copier does not apply.", copierLabels},
}

// Descs returns every metric this package's adapters emit.
func Descs() []Desc {
	out := make([]Desc, len(descs))
	copy(out, descs)
	return out
}

// Lookup returns the Desc of a metric this package emits.
func Lookup(name string) (Desc, bool) {
	for _, d := range descs {
		if d.Name == name {
			return d, true
		}
	}
	return Desc{}, false
}
