package pgq

import "context"

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
