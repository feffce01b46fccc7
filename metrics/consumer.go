package metrics

import (
	"time"

	"github.com/pgq-go/pgq/consumer"
	"github.com/prometheus/client_golang/prometheus"
)

// ConsumerCollector is a prometheus.Collector of what consumers report
// through their hooks: batches, events, retries, errors, idle waits, lag
// and durations, labelled queue and consumer. One collector serves any
// number of consumers (each gets its hooks from Hooks); register it once.
//
// Metrics: pgq_consumer_batches_total, pgq_consumer_events_total,
// pgq_consumer_retries_total, pgq_consumer_errors_total,
// pgq_consumer_idle_total (counters); pgq_consumer_batch_duration_seconds,
// pgq_consumer_batch_events (histograms); pgq_consumer_lag_seconds,
// pgq_consumer_last_batch_timestamp_seconds,
// pgq_consumer_consecutive_errors (gauges).
type ConsumerCollector struct {
	batches, events, retries, errors, idle *prometheus.CounterVec
	duration, batchEvents                  *prometheus.HistogramVec
	lag, lastBatch, failing                *prometheus.GaugeVec
}

// NewConsumerCollector returns a collector with no consumers yet.
func NewConsumerCollector() *ConsumerCollector {
	labels := []string{"queue", "consumer"}
	counter := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	gauge := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	}
	histogram := func(name, help string, buckets []float64) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
	}
	return &ConsumerCollector{
		batches: counter("pgq_consumer_batches_total", "Batches finished by the consumer, empty ones included."),
		events:  counter("pgq_consumer_events_total", "Events processed (read in the batch's last full pass)."),
		retries: counter("pgq_consumer_retries_total", "Events sent to the retry queue."),
		errors:  counter("pgq_consumer_errors_total", "Failed batch attempts (handler errors, panics, database errors)."),
		idle:    counter("pgq_consumer_idle_total", "Times the consumer found no batch ready and waited."),
		duration: histogram("pgq_consumer_batch_duration_seconds",
			"Time from opening a batch to its commit, in seconds.", prometheus.DefBuckets),
		batchEvents: histogram("pgq_consumer_batch_events",
			"Events per finished batch.", prometheus.ExponentialBuckets(1, 4, 8)),
		lag:       gauge("pgq_consumer_lag_seconds", "Age of the last batch's end tick when it was opened, in seconds."),
		lastBatch: gauge("pgq_consumer_last_batch_timestamp_seconds", "Unix time of the last finished batch."),
		failing:   gauge("pgq_consumer_consecutive_errors", "Failed attempts since the last finished batch (0 when healthy)."),
	}
}

// Hooks returns hooks that count a consumer's reports, then call next's
// (nil ones are skipped):
//
//	cfg.Hooks = cc.Hooks(cfg.Queue, cfg.Name, cfg.Hooks)
//
// Batches and errors are labelled with the queue and consumer they name,
// so one set of hooks can serve the relay and pull consumers of a
// copier.TargetedCopier; queue and name label the idle waits (which name
// no consumer) and reports naming none. With both queue and name given,
// the consumer's counters exist from the start, at 0.
func (c *ConsumerCollector) Hooks(queue, name string, next consumer.Hooks) consumer.Hooks {
	labelsOf := func(q, n string) prometheus.Labels {
		if q == "" && n == "" {
			q, n = queue, name
		}
		return prometheus.Labels{"queue": q, "consumer": n}
	}
	if queue != "" && name != "" {
		l := labelsOf(queue, name)
		for _, v := range []*prometheus.CounterVec{c.batches, c.events, c.retries, c.errors, c.idle} {
			v.With(l)
		}
	}
	return consumer.Hooks{
		OnBatch: func(b consumer.BatchStats) {
			l := labelsOf(b.Queue, b.Consumer)
			c.batches.With(l).Inc()
			c.events.With(l).Add(float64(b.Events))
			c.retries.With(l).Add(float64(b.Retries))
			c.duration.With(l).Observe(b.Duration.Seconds())
			c.batchEvents.With(l).Observe(float64(b.Events))
			c.lag.With(l).Set(b.Lag.Seconds())
			c.lastBatch.With(l).Set(float64(time.Now().UnixNano()) / 1e9)
			c.failing.With(l).Set(0)
			if next.OnBatch != nil {
				next.OnBatch(b)
			}
		},
		OnError: func(e consumer.ErrorInfo) {
			l := labelsOf(e.Queue, e.Consumer)
			c.errors.With(l).Inc()
			c.failing.With(l).Set(float64(e.Attempt))
			if next.OnError != nil {
				next.OnError(e)
			}
		},
		OnIdle: func() {
			c.idle.With(labelsOf("", "")).Inc()
			if next.OnIdle != nil {
				next.OnIdle()
			}
		},
	}
}

func (c *ConsumerCollector) collectors() []prometheus.Collector {
	return []prometheus.Collector{c.batches, c.events, c.retries, c.errors, c.idle,
		c.duration, c.batchEvents, c.lag, c.lastBatch, c.failing}
}

// Describe implements prometheus.Collector.
func (c *ConsumerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, v := range c.collectors() {
		v.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (c *ConsumerCollector) Collect(ch chan<- prometheus.Metric) {
	for _, v := range c.collectors() {
		v.Collect(ch)
	}
}
