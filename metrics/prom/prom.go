// Package prom is the Prometheus adapter of package metrics: a
// metrics.Sink that records into a Prometheus registry and serves it on
// /metrics.
//
//	sink := prom.New(nil)
//	cfg.Hooks = metrics.ConsumerHooks(sink, cfg.Queue, cfg.Name, cfg.Hooks)
//	sink.AddCollector(metrics.NewTickerCollector(tk))
//	http.Handle("/metrics", sink.Handler())
//
// Metrics are created on first use. Those listed by metrics.Descs get
// their help text and label names from there; others take the label names
// of their first observation. Histograms use prometheus.DefBuckets
// (seconds), or ExponentialBuckets(1, 4, 8) for the events-per-batch one.
package prom

import (
	"errors"
	"net/http"
	"sort"
	"sync"

	"github.com/pgq-go/pgq/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// Sink is a metrics.Sink backed by a Prometheus registry. It is also a
// prometheus.Gatherer that runs its collectors before gathering.
type Sink struct {
	reg *prometheus.Registry

	mu         sync.Mutex
	vecs       map[string]*vec
	collectors []metrics.Collector
	dropped    prometheus.Counter
}

type vec struct {
	kind      metrics.Kind
	labels    []string
	counter   *prometheus.CounterVec
	gauge     *prometheus.GaugeVec
	histogram *prometheus.HistogramVec
}

// New returns a sink recording into reg, or into a new registry when reg
// is nil.
func New(reg *prometheus.Registry) *Sink {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s := &Sink{reg: reg, vecs: map[string]*vec{}}
	s.dropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pgq_metrics_dropped_total",
		Help: "Observations the pgq-go Prometheus sink could not record (a name reused with another kind, or a registration conflict).",
	})
	_ = reg.Register(s.dropped) // a second Sink on reg shares the first one's counter
	return s
}

// Registry returns the registry the sink records into.
func (s *Sink) Registry() *prometheus.Registry { return s.reg }

// AddCollector makes every Gather (every scrape) run c first.
func (s *Sink) AddCollector(c metrics.Collector) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.collectors = append(s.collectors, c)
}

// Gather runs the collectors, then gathers the registry.
func (s *Sink) Gather() ([]*dto.MetricFamily, error) {
	s.mu.Lock()
	cs := append([]metrics.Collector(nil), s.collectors...)
	s.mu.Unlock()
	for _, c := range cs {
		c.Collect(s)
	}
	return s.reg.Gather()
}

// Handler serves the metrics in the Prometheus exposition format.
func (s *Sink) Handler() http.Handler {
	return promhttp.HandlerFor(s, promhttp.HandlerOpts{})
}

// Add implements metrics.Sink.
func (s *Sink) Add(name string, delta float64, labels metrics.Labels) {
	if v := s.get(name, metrics.KindCounter, labels); v != nil && delta >= 0 {
		if c, err := v.counter.GetMetricWith(v.values(labels)); err == nil {
			c.Add(delta)
			return
		}
	}
	s.dropped.Inc()
}

// Set implements metrics.Sink.
func (s *Sink) Set(name string, value float64, labels metrics.Labels) {
	if v := s.get(name, metrics.KindGauge, labels); v != nil {
		if g, err := v.gauge.GetMetricWith(v.values(labels)); err == nil {
			g.Set(value)
			return
		}
	}
	s.dropped.Inc()
}

// Observe implements metrics.Sink.
func (s *Sink) Observe(name string, value float64, labels metrics.Labels) {
	if v := s.get(name, metrics.KindHistogram, labels); v != nil {
		if h, err := v.histogram.GetMetricWith(v.values(labels)); err == nil {
			h.Observe(value)
			return
		}
	}
	s.dropped.Inc()
}

// values maps labels onto the vec's label names; missing ones are "",
// extra ones are ignored.
func (v *vec) values(labels metrics.Labels) prometheus.Labels {
	out := make(prometheus.Labels, len(v.labels))
	for _, n := range v.labels {
		out[n] = labels[n]
	}
	return out
}

// get returns the vec for name, creating and registering it on first use;
// nil when name is already used with another kind or cannot be registered.
func (s *Sink) get(name string, kind metrics.Kind, labels metrics.Labels) *vec {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.vecs[name]; ok {
		if v.kind != kind {
			return nil
		}
		return v
	}
	help := "pgq-go metric " + name + "."
	var names []string
	if d, ok := metrics.Lookup(name); ok && d.Kind == kind {
		help, names = d.Help, d.Labels
	} else {
		for n := range labels {
			names = append(names, n)
		}
		sort.Strings(names)
	}
	v := &vec{kind: kind, labels: names}
	var c prometheus.Collector
	switch kind {
	case metrics.KindCounter:
		v.counter = prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, names)
		c = v.counter
	case metrics.KindGauge:
		v.gauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, names)
		c = v.gauge
	case metrics.KindHistogram:
		buckets := prometheus.DefBuckets
		if name == metrics.ConsumerBatchEvents {
			buckets = prometheus.ExponentialBuckets(1, 4, 8)
		}
		v.histogram = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, names)
		c = v.histogram
	}
	if err := s.reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			s.vecs[name] = &vec{} // remember the failure: drop quickly
			return nil
		}
		// Another Sink on the same registry made it: share it.
		switch kind {
		case metrics.KindCounter:
			cv, ok := are.ExistingCollector.(*prometheus.CounterVec)
			if !ok {
				s.vecs[name] = &vec{}
				return nil
			}
			v.counter = cv
		case metrics.KindGauge:
			gv, ok := are.ExistingCollector.(*prometheus.GaugeVec)
			if !ok {
				s.vecs[name] = &vec{}
				return nil
			}
			v.gauge = gv
		case metrics.KindHistogram:
			hv, ok := are.ExistingCollector.(*prometheus.HistogramVec)
			if !ok {
				s.vecs[name] = &vec{}
				return nil
			}
			v.histogram = hv
		}
	}
	s.vecs[name] = v
	return v
}
