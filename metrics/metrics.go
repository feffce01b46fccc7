// Package metrics exposes pgq-go's components to Prometheus. The
// components keep their own numbers — a consumer reports every batch,
// error and idle wait through consumer.Hooks, a ticker.Ticker's Snapshot
// and a copier.TargetedCopier's Stats return totals — and the collectors
// here turn them into prometheus.Collectors:
//
//   - ConsumerCollector counts what consumers report through the hooks it
//     returns (pgq_consumer_*, labelled queue and consumer);
//   - TickerCollector reads a ticker's Snapshot on every scrape
//     (pgq_ticker_*, labelled server and database);
//   - CopierCollector reads a targeted copier's Stats on every scrape
//     (pgq_copier_*, labelled node).
//
// Register them like any other collector:
//
//	reg := prometheus.NewRegistry()
//	cc := metrics.NewConsumerCollector()
//	cfg.Hooks = cc.Hooks(cfg.Queue, cfg.Name, cfg.Hooks)
//	reg.MustRegister(cc, metrics.NewTickerCollector(tk))
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// Counters are the components' totals since they started (Prometheus
// treats a restart's drop to zero as a counter reset).
package metrics

import "github.com/prometheus/client_golang/prometheus"

// counterValue is a total read from a component, as a sample of desc.
func counterValue(desc *prometheus.Desc, v int64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), labels...)
}

// gaugeValue is a current value read from a component, as a sample of desc.
func gaugeValue(desc *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
}
