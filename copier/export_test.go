package copier

// RelayBufferStats returns, over the copier's relays, how many COPY
// flushes they made and the most COPY data (bytes) one of them held
// buffered at once.
func RelayBufferStats(tc *TargetedCopier) (flushes, maxBuffered int64) {
	for _, r := range tc.movers {
		flushes += r.flushes.Load()
		maxBuffered = max(maxBuffered, r.maxBuffered.Load())
	}
	return flushes, maxBuffered
}

// SetRelayQueueHook rewrites the hub queue names relays write to (nil:
// off), to reach what config validation keeps out.
func SetRelayQueueHook(f func(queue string) string) { testHookRelayQueue = f }

// RelayFlushBytes is the relay's COPY buffer bound in bytes.
const RelayFlushBytes = relayFlushBytes

// MaxRegistrationConns bounds the registration connections per hub.
const MaxRegistrationConns = maxRegistrationConns
