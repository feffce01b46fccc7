package consumer

import "time"

// statsLog gathers what a Skytools consumer reports in its stats lines
// and logs one line per Config.StatsPeriod.
type statsLog struct {
	period   time.Duration
	start    time.Time // of the current period
	events   int
	batches  int
	retries  int
	busy     time.Duration
	lastLag  time.Duration
	lastBusy time.Time // end of the last batch with events (idle since)
}

func newStatsLog(period time.Duration, now time.Time) *statsLog {
	return &statsLog{period: period, start: now, lastBusy: now}
}

// batch counts a finished batch.
func (s *statsLog) batch(st BatchStats, end time.Time) {
	s.batches++
	s.events += st.Events
	s.retries += st.Retries
	s.busy += st.Duration
	s.lastLag = st.Lag
	if st.Events > 0 {
		s.lastBusy = end
	}
}

// due reports whether the period has passed at now.
func (s *statsLog) due(now time.Time) bool {
	return s.period > 0 && now.Sub(s.start) >= s.period
}

// flush logs the period's line and starts the next period.
func (s *statsLog) flush(c *Consumer, now time.Time) {
	c.log.Info("stats", "count", s.events, "batches", s.batches, "duration", s.busy,
		"idle", now.Sub(s.lastBusy), "retry-events", s.retries, "lag", s.lastLag, "period", now.Sub(s.start))
	s.start = now
	s.events, s.batches, s.retries, s.busy = 0, 0, 0, 0
}
