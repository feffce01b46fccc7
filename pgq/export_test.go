package pgq

import (
	"context"
	"strings"
	"time"
)

// SetBeforeCopyHook installs f to run in InsertEvents between reading
// pgq.current_event_table and the COPY; the returned func removes it. Tests
// using it must not run in parallel with other inserting tests.
func SetBeforeCopyHook(f func(ctx context.Context, queue, table string)) (restore func()) {
	testHookBeforeCopy = f
	return func() { testHookBeforeCopy = nil }
}

// HeldRetryBytes is how many bytes of events the batch's retry tags keep.
func (b *Batch) HeldRetryBytes() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.heldBytes
}

// ReadPlanOf describes how a Batch would read info's events: planned is
// false when it falls back to pgq.get_batch_cursor; listed is how many
// txids the statement looks up by value, widened whether txids the start
// tick saw in progress widened the txid range.
func ReadPlanOf(info BatchInfo) (planned bool, tables, listed int, widened bool) {
	p := info.read
	if p == nil {
		return false, 0, 0, false
	}
	args := p.args(&info)
	return true, len(p.tables), len(args[5].([]int64)), args[1].(int64) < p.last.Xmax
}

// TagRetryID tags an event id for retry by id only, as a tag past
// RetryTagBudget is kept; the id need not be in the batch.
func (b *Batch) TagRetryID(id int64, at time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tagRetry(&Event{ID: id, batch: b, retryAt: at, idOnly: true})
}

// ReadTablesOf is the event tables a planned read of info reads, unquoted.
func ReadTablesOf(info BatchInfo) []string {
	if info.read == nil {
		return nil
	}
	var out []string
	for _, t := range info.read.tables {
		out = append(out, strings.ReplaceAll(t, `"`, ""))
	}
	return out
}
