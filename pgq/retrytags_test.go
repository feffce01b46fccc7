package pgq_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

// TestRetryTagsBoundedInBytes tags more event bytes for retry than the
// budget: the tags keep at most the budget of event data, and every tagged
// event still comes back exactly once, intact, with its retry count.
func TestRetryTagsBoundedInBytes(t *testing.T) {
	t.Parallel()
	e := setup(t)
	const big = 1 << 20
	n := pgq.RetryTagBudget/big + 8 // well past the budget
	want := map[int64]pgq.EventData{}
	var in []pgq.EventData
	for i := range n {
		in = append(in, pgq.EventData{Type: pgq.T("big"), Data: pgq.T(fmt.Sprintf("%03d", i) + strings.Repeat(string(rune('a'+i%26)), big)),
			Extra1: pgq.T(fmt.Sprint(i)), Extra4: pgq.Null})
		in = append(in, pgq.EventData{Type: pgq.T("small"), Data: pgq.T(fmt.Sprint(i))})
	}
	tx, err := e.pool.Begin(e.ctx)
	require.NoError(t, err)
	_, err = pgq.InsertEvents(e.ctx, tx, e.queue, slices.Values(in))
	require.NoError(t, err)
	require.NoError(t, tx.Commit(e.ctx))
	e.tick(t)
	info := e.next(t)

	b := pgq.NewBatch(e.pool, e.queue, e.cons, *info, pgq.ReadOptions{FetchSize: 3})
	var order []int64
	maxHeld := 0
	for ev, err := range b.Events(e.ctx) {
		require.NoError(t, err)
		ev.TagRetry(0)
		if len(order)%5 == 1 { // untag and tag again: still one retry
			ev.TagDone()
			ev.TagRetry(0)
		}
		order = append(order, ev.ID)
		want[ev.ID] = ev.EventData
		maxHeld = max(maxHeld, b.HeldRetryBytes())
	}
	require.Len(t, order, 2*n)
	require.LessOrEqual(t, maxHeld, pgq.RetryTagBudget, "retry tags hold more than the budget")
	require.Greater(t, maxHeld, pgq.RetryTagBudget/2, "the budget is used")
	require.Equal(t, 2*n, b.RetryCount())
	var tagged, viaTags []int64
	var whole, idOnly []*pgq.Event
	for _, ev := range b.Retries() {
		at, ok := ev.RetryAt()
		require.True(t, ok)
		require.False(t, at.IsZero())
		tagged = append(tagged, ev.ID)
		if ev.Type.Valid {
			whole = append(whole, ev)
		} else {
			idOnly = append(idOnly, ev)
		}
	}
	require.Equal(t, order, tagged, "Retries: every tag once, in tagging order")
	require.NotEmpty(t, whole, "events kept whole within the budget")
	require.NotEmpty(t, idOnly, "events kept by id past the budget")
	for id := range b.RetryTags() {
		viaTags = append(viaTags, id)
	}
	require.Equal(t, order, viaTags)

	// Untagging and retagging an id-only event keeps it id-only and
	// counted once; the bytes held do not move.
	held := b.HeldRetryBytes()
	idOnly[0].TagDone()
	require.Equal(t, 2*n-1, b.RetryCount())
	idOnly[0].TagRetry(0)
	require.Equal(t, 2*n, b.RetryCount())
	require.Equal(t, held, b.HeldRetryBytes())
	// Untagging a whole event frees its bytes.
	whole[0].TagDone()
	require.Less(t, b.HeldRetryBytes(), held)
	whole[0].TagRetry(0)
	require.LessOrEqual(t, b.HeldRetryBytes(), pgq.RetryTagBudget)
	require.Equal(t, 2*n, b.RetryCount())

	tx, err = e.pool.Begin(e.ctx)
	require.NoError(t, err)
	ok, err := b.Finish(e.ctx, tx)
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, tx.Commit(e.ctx))

	moved, err := pgq.MaintRetryEvents(e.ctx, e.pool)
	require.NoError(t, err)
	require.EqualValues(t, 2*n, moved)
	e.tick(t)
	back := e.events(t, e.next(t), pgq.ReadOptions{FetchSize: 4})
	require.Len(t, back, 2*n)
	seen := map[int64]bool{}
	for _, ev := range back {
		require.False(t, seen[ev.ID], "event %d delivered twice", ev.ID)
		seen[ev.ID] = true
		w, ok := want[ev.ID]
		require.True(t, ok, "unexpected event %d", ev.ID)
		require.Equal(t, w, ev.EventData, "event %d intact", ev.ID)
		require.EqualValues(t, 1, ev.Retry)
	}
}

// TestTagRetryConcurrent tags and untags the events of one batch from
// several goroutines at once (each owning some events, all of them tagging
// one shared event), while others read the tags; run with -race. Exactly
// the events left tagged come back, once each, with their retry count.
func TestTagRetryConcurrent(t *testing.T) {
	t.Parallel()
	e := setup(t)
	const n, workers = 400, 8
	evs := make([]pgq.EventData, n)
	for i := range evs {
		evs[i] = pgq.NewEvent("t", fmt.Sprint(i))
	}
	tx, err := e.pool.Begin(e.ctx)
	require.NoError(t, err)
	_, err = pgq.InsertEvents(e.ctx, tx, e.queue, slices.Values(evs))
	require.NoError(t, err)
	require.NoError(t, tx.Commit(e.ctx))
	e.tick(t)
	b := pgq.NewBatch(e.pool, e.queue, e.cons, *e.next(t), pgq.ReadOptions{FetchSize: 50})
	got, err := b.All(e.ctx)
	require.NoError(t, err)
	require.Len(t, got, n)

	// Event i stays tagged unless i%3 == 0; event 1 is tagged by everyone.
	want := map[int64]bool{}
	for i, ev := range got {
		if i%3 != 0 {
			want[ev.ID] = true
		}
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				ev := got[i]
				ev.TagRetry(0)
				got[1].TagRetryAt(time.Now())
				if _, ok := ev.RetryAt(); !ok {
					t.Errorf("event %d: RetryAt reports no tag after TagRetry", ev.ID)
				}
				if i%3 == 0 {
					ev.TagDone()
				}
			}
		})
		wg.Go(func() { // readers
			for range n / workers {
				_ = b.RetryCount()
				for id := range b.RetryTags() {
					_ = id
				}
				_ = b.Retries()
			}
		})
	}
	wg.Wait()
	require.Equal(t, len(want), b.RetryCount())
	for id := range b.RetryTags() {
		require.True(t, want[id], "event %d tagged", id)
	}

	tx, err = e.pool.Begin(e.ctx)
	require.NoError(t, err)
	ok, err := b.Finish(e.ctx, tx)
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, tx.Commit(e.ctx))
	moved, err := pgq.MaintRetryEvents(e.ctx, e.pool)
	require.NoError(t, err)
	require.EqualValues(t, len(want), moved)
	e.tick(t)
	back := e.events(t, e.next(t), pgq.ReadOptions{})
	require.Len(t, back, len(want))
	for _, ev := range back {
		require.True(t, want[ev.ID], "event %d came back", ev.ID)
		delete(want, ev.ID)
		require.EqualValues(t, 1, ev.Retry)
	}
}
