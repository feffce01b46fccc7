package copier

// SetAfterBackfillChunk sets a hook run after each backfill chunk's
// commit (nil: none).
func SetAfterBackfillChunk(f func(chunks int)) { testHookAfterBackfillChunk = f }
