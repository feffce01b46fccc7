package backoff

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	p := Policy{Initial: time.Second, Max: 5 * time.Second, Multiplier: 2}
	for n, want := range map[int]time.Duration{0: time.Second, 1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 5 * time.Second, 60: 5 * time.Second} {
		if got := p.Delay(n); got != want {
			t.Errorf("Delay(%d) = %v, want %v", n, got, want)
		}
	}
	if got := (Policy{}).Delay(10); got != 20*time.Second {
		t.Errorf("zero policy caps at %v, want 20s", got)
	}
	if got := (Policy{Initial: time.Minute}).Delay(1); got != time.Minute {
		t.Errorf("Max defaults to at least Initial: %v", got)
	}
}

func TestRetry(t *testing.T) {
	ctx := context.Background()
	p := Policy{Initial: time.Nanosecond, Max: time.Nanosecond}
	calls, logged := 0, 0
	transient, final := errors.New("transient"), errors.New("final")
	err := Retry(ctx, p, func() error {
		calls++
		if calls < 3 {
			return transient
		}
		return nil
	}, nil, func(err error, _ time.Duration) { logged++ })
	if err != nil || calls != 3 || logged != 2 {
		t.Fatalf("success after retries: err %v, calls %d, logged %d", err, calls, logged)
	}
	calls = 0
	err = Retry(ctx, p, func() error { calls++; return final }, func(err error) bool { return errors.Is(err, final) }, nil)
	if !errors.Is(err, final) || calls != 1 {
		t.Fatalf("final error: err %v after %d calls", err, calls)
	}
	cctx, cancel := context.WithCancel(ctx)
	err = Retry(cctx, Policy{Initial: time.Hour}, func() error { cancel(); return transient }, nil, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestWait(t *testing.T) {
	wake := make(chan struct{}, 1)
	wake <- struct{}{}
	if !Wait(context.Background(), time.Hour, wake) {
		t.Fatal("a wake-up ends the wait with true")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Wait(ctx, time.Hour, nil) || Sleep(ctx, 0) {
		t.Fatal("a done context reports false")
	}
}
