package consumer

import (
	"strconv"
	"testing"
	"time"

	"github.com/pgq-go/pgq/pgq"
)

// TestBellStateSettle: every ring is settled by a snapshot that sees it,
// whatever the order of txids; rings beyond maxBellNeed are settled by a
// snapshot whose xmin is above them; the horizon by xmin.
func TestBellStateSettle(t *testing.T) {
	b := newBellState(&Bell{Every: time.Hour}, time.Second)
	b.ring("20")
	b.ring("10")
	b.setHorizon(5)
	// Sees 20, not 10 (in progress).
	if !b.settle(&pgq.Snapshot{Xmin: 10, Xmax: 30, Xip: []int64{10}}, false) {
		t.Fatal("ring 10 settled by a snapshot that has it in progress")
	}
	if _, ok := b.need[20]; ok {
		t.Fatal("ring 20 kept after a snapshot that sees it")
	}
	if b.horizon != 0 {
		t.Fatal("horizon 5 kept after a snapshot with xmin 10")
	}
	if b.settle(&pgq.Snapshot{Xmin: 31, Xmax: 31}, false) {
		t.Fatal("left after a snapshot that sees every ring")
	}

	for i := range maxBellNeed + 10 {
		b.ring(strconv.Itoa(100 + i))
	}
	if len(b.need) != maxBellNeed || b.over != 100+maxBellNeed+9 {
		t.Fatalf("need %d txids, over %d", len(b.need), b.over)
	}
	// Sees every txid but with xmin not above over: over is left.
	top := int64(100 + maxBellNeed + 9)
	if !b.settle(&pgq.Snapshot{Xmin: top, Xmax: top + 1}, true) {
		t.Fatal("over settled by a snapshot whose xmin is not above it")
	}
	if !b.awaitTick {
		t.Fatal("an empty look with rings left waits for the next tick")
	}
	if b.settle(&pgq.Snapshot{Xmin: top + 1, Xmax: top + 1}, true) {
		t.Fatal("left after a snapshot above every ring")
	}
	b.ring("500")
	if b.settle(nil, true) {
		t.Fatal("nil snapshot (consumer gone) leaves rings")
	}
}

// TestBellStateTickDuringEmptyLook: a tick notification heard while a look
// runs (after its next_batch found nothing, before it settled) must not be
// waited for again: the consumer looks at once. It used to wait for the
// next tick, up to PollInterval (TestBellRingsOutOfOrder failed that way
// under load, with PollInterval an hour).
func TestBellStateTickDuringEmptyLook(t *testing.T) {
	notSeen := &pgq.Snapshot{Xmin: 10, Xmax: 30, Xip: []int64{10}}
	b := newBellState(&Bell{Every: time.Hour}, time.Hour)
	b.ring("10")
	b.tick("1")
	b.taking(time.Now())
	b.tick("2") // during the look
	if !b.settle(notSeen, true) {
		t.Fatal("ring 10 settled by a snapshot that has it in progress")
	}
	if ok, wait := b.wanted(time.Now()); !ok {
		t.Fatalf("waits %v for a tick already heard", wait)
	}

	// Without a tick during the look, it waits for the next one.
	b = newBellState(&Bell{Every: time.Hour}, time.Hour)
	b.ring("10")
	b.tick("1")
	b.taking(time.Now())
	b.settle(notSeen, true)
	if ok, _ := b.wanted(time.Now()); ok {
		t.Fatal("looks again before the next tick")
	}
	b.tick("2")
	if ok, _ := b.wanted(time.Now()); !ok {
		t.Fatal("does not look after the next tick")
	}
}
