package consumer

import "time"

// BatchStats describes one finished batch (Skytools per-batch stats:
// count, duration, idle, retry-events).
type BatchStats struct {
	Queue      string
	Consumer   string
	BatchID    int64
	TickID     int64 // the batch's end tick
	PrevTickID int64 // the batch's start tick
	// Events is how many events the handler read in its last full pass
	// over the batch (Skytools count); 0 if it never read to the end.
	Events int
	// Retries is how many events were sent to the retry queue (retry-events).
	Retries int
	// Attempts is how many times the batch was processed (1 when the
	// first attempt succeeded).
	Attempts int
	// Duration is the time from opening the batch to commit (duration).
	Duration time.Duration
	// Lag is the age of the batch's end tick when it was opened.
	Lag time.Duration
	// Idle is the time spent since the last batch that had events until
	// this batch was opened (Skytools idle).
	Idle time.Duration
}

// ErrorInfo describes a failed attempt.
type ErrorInfo struct {
	Queue    string
	Consumer string
	BatchID  int64 // 0 when no batch was open (e.g. next_batch failed)
	Attempt  int   // consecutive failures so far, starting at 1
	Err      error
	Backoff  time.Duration // the pause before the next attempt
	Panicked bool          // the handler panicked (Err holds the value and stack)
}

// Hooks observe a running consumer. They run on the consumer's goroutine,
// between batches: keep them quick. Nil hooks are skipped.
type Hooks struct {
	// OnBatch runs after each finished (committed) batch.
	OnBatch func(BatchStats)
	// OnError runs after each failed attempt, before the backoff pause.
	OnError func(ErrorInfo)
	// OnIdle runs each time the consumer found no batch ready and starts
	// waiting for a tick notification or the poll interval.
	OnIdle func()
}
