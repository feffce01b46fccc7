package pgtest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// Background runs run(ctx) on a goroutine until the returned stop is
// called, or the test ends; stop cancels run's context and returns its
// error (or an error saying run did not return within a minute of the
// cancel). For the Run methods of consumers, copiers and tickers.
func Background(t testing.TB, ctx context.Context, run func(context.Context) error) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	var res error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case res = <-done:
			case <-time.After(time.Minute):
				res = fmt.Errorf("pgtest: Run did not return within a minute of its cancel")
			}
		})
		return res
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}
