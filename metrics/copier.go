package metrics

import (
	"github.com/pgq-go/pgq/copier"
	"github.com/prometheus/client_golang/prometheus"
)

// CopierSource is what a CopierCollector reads: *copier.TargetedCopier.
type CopierSource interface {
	Stats() copier.Stats
}

// CopierCollector is a prometheus.Collector reading a targeted copier's
// Stats on every scrape: the totals pgq_copier_relayed_total,
// pgq_copier_applied_total, pgq_copier_retried_total,
// pgq_copier_parked_total and pgq_copier_ignored_total, labelled node.
//
// Several copiers (of different nodes) can share a registry. The copier's
// relay and pull consumers report batches through consumer hooks: see
// ConsumerCollector.
type CopierCollector struct {
	src                                        CopierSource
	relayed, applied, retried, parked, ignored *prometheus.Desc
}

// NewCopierCollector returns a collector reading src, the copier of node.
func NewCopierCollector(node string, src CopierSource) *CopierCollector {
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, nil, prometheus.Labels{"node": node})
	}
	return &CopierCollector{
		src:     src,
		relayed: desc("pgq_copier_relayed_total", "Events relayed from the node's push queue to a hub."),
		applied: desc("pgq_copier_applied_total", "Rows applied on the node."),
		retried: desc("pgq_copier_retried_total", "Rows sent to the retry queue after a failed apply."),
		parked:  desc("pgq_copier_parked_total", "Rows parked for an operator (see pgqctl parked)."),
		ignored: desc("pgq_copier_ignored_total", "Events of types the copier does not apply."),
	}
}

// Describe implements prometheus.Collector.
func (c *CopierCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.relayed
	ch <- c.applied
	ch <- c.retried
	ch <- c.parked
	ch <- c.ignored
}

// Collect implements prometheus.Collector.
func (c *CopierCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.src.Stats()
	ch <- counterValue(c.relayed, s.Relayed)
	ch <- counterValue(c.applied, s.Applied)
	ch <- counterValue(c.retried, s.Retried)
	ch <- counterValue(c.parked, s.Parked)
	ch <- counterValue(c.ignored, s.Ignored)
}
