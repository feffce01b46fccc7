// Package backoff is the one retry policy of pgq-go's long-running
// components (consumer, remote, copier, ticker): an exponential, capped
// pause between attempts, and the wait and retry loop built on it.
package backoff

import (
	"context"
	"time"
)

// Policy is an exponential, capped pause: Initial, then times Multiplier
// per attempt, up to Max. Zero fields mean: Initial 1s, Max 20s (at least
// Initial), Multiplier 2. consumer.Backoff converts to it.
type Policy struct {
	Initial    time.Duration
	Max        time.Duration
	Multiplier float64
}

// WithDefaults fills zero fields.
func (p Policy) WithDefaults() Policy {
	if p.Initial == 0 {
		p.Initial = time.Second
	}
	if p.Max == 0 {
		p.Max = max(20*time.Second, p.Initial)
	}
	if p.Multiplier == 0 {
		p.Multiplier = 2
	}
	return p
}

// Delay returns the pause before attempt n+1 (n >= 1: after the n-th
// consecutive failure).
func (p Policy) Delay(n int) time.Duration {
	p = p.WithDefaults()
	if n < 1 {
		n = 1
	}
	d := float64(p.Initial)
	for i := 1; i < n; i++ {
		d *= p.Multiplier
		if d >= float64(p.Max) {
			return p.Max
		}
	}
	if d > float64(p.Max) {
		return p.Max
	}
	return time.Duration(d)
}

// Sleep pauses for d; it reports false if ctx ended first.
func Sleep(ctx context.Context, d time.Duration) bool { return Wait(ctx, d, nil) }

// Wait pauses for d or until wake fires (nil: never); it reports false if
// ctx ended first.
func Wait(ctx context.Context, d time.Duration, wake <-chan struct{}) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-wake:
		return true
	case <-t.C:
		return true
	}
}

// Retry calls op until it returns nil, returns an error final reports as
// one that retrying cannot fix (nil final: none is), or ctx ends. Before
// each pause it calls onRetry (for a log line; may be nil) with the error
// and the pause. It returns nil on success, the final error, or ctx's
// error.
func Retry(ctx context.Context, p Policy, op func() error, final func(error) bool, onRetry func(err error, pause time.Duration)) error {
	for n := 1; ; n++ {
		err := op()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if final != nil && final(err) {
			return err
		}
		d := p.Delay(n)
		if onRetry != nil {
			onRetry(err, d)
		}
		if !Sleep(ctx, d) {
			return ctx.Err()
		}
	}
}
