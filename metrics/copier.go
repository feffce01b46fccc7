package metrics

import (
	"sync"

	"github.com/pgq-go/pgq/remote"
)

// CopierSource is what CopierCollector reads: *remote.TargetedCopier.
type CopierSource interface {
	Stats() remote.CopierStats
}

// CopierCollector reports a targeted copier's counters (the Copier*
// metrics, labelled node). Like TickerCollector it sends increases since
// its previous Collect, so one collector must feed one sink.
type CopierCollector struct {
	node string
	src  CopierSource
	mu   sync.Mutex
	last *remote.CopierStats
}

// NewCopierCollector returns a collector reading src, the copier of node.
func NewCopierCollector(node string, src CopierSource) *CopierCollector {
	return &CopierCollector{node: node, src: src}
}

// Collect sends the counters' increase to s.
func (c *CopierCollector) Collect(s Sink) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := c.src.Stats()
	var prev remote.CopierStats
	if c.last != nil {
		prev = *c.last
	}
	labels := Labels{"node": c.node}
	for _, m := range []struct {
		name      string
		cur, prev int64
	}{
		{CopierRelayed, cur.Relayed, prev.Relayed},
		{CopierApplied, cur.Applied, prev.Applied},
		{CopierRetried, cur.Retried, prev.Retried},
		{CopierParked, cur.Parked, prev.Parked},
		{CopierIgnored, cur.Ignored, prev.Ignored},
	} {
		d := m.cur - m.prev
		if d < 0 {
			d = m.cur
		}
		s.Add(m.name, float64(d), labels)
	}
	c.last = &cur
}
