package metrics

import (
	"time"

	"github.com/pgq-go/pgq/consumer"
)

// ConsumerHooks returns hooks that report a consumer's batches, events,
// retries, errors, idle waits, lag and durations to s (the Consumer*
// metrics, labelled queue and consumer), then call next's hooks:
//
//	cfg.Hooks = metrics.ConsumerHooks(sink, cfg.Queue, cfg.Name, cfg.Hooks)
//
// Batches and errors are labelled with the queue and consumer they report
// (so one set of hooks can serve the relay and pull consumers of a
// remote.TargetedCopier); queue and name label idle waits, which carry no
// names, and stand in when a report has none.
func ConsumerHooks(s Sink, queue, name string, next consumer.Hooks) consumer.Hooks {
	def := Labels{"queue": queue, "consumer": name}
	labelsOf := func(q, c string) Labels {
		if q == "" && c == "" || q == queue && c == name {
			return def
		}
		return Labels{"queue": q, "consumer": c}
	}
	return consumer.Hooks{
		OnBatch: func(b consumer.BatchStats) {
			labels := labelsOf(b.Queue, b.Consumer)
			s.Add(ConsumerBatches, 1, labels)
			s.Add(ConsumerEvents, float64(b.Events), labels)
			s.Add(ConsumerRetries, float64(b.Retries), labels)
			s.Observe(ConsumerBatchDuration, b.Duration.Seconds(), labels)
			s.Observe(ConsumerBatchEvents, float64(b.Events), labels)
			s.Set(ConsumerLag, b.Lag.Seconds(), labels)
			s.Set(ConsumerLastBatch, float64(time.Now().UnixNano())/1e9, labels)
			s.Set(ConsumerFailing, 0, labels)
			if next.OnBatch != nil {
				next.OnBatch(b)
			}
		},
		OnError: func(e consumer.ErrorInfo) {
			labels := labelsOf(e.Queue, e.Consumer)
			s.Add(ConsumerErrors, 1, labels)
			s.Set(ConsumerFailing, float64(e.Attempt), labels)
			if next.OnError != nil {
				next.OnError(e)
			}
		},
		OnIdle: func() {
			s.Add(ConsumerIdle, 1, def)
			if next.OnIdle != nil {
				next.OnIdle()
			}
		},
	}
}
