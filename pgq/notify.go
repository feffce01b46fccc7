package pgq

import (
	"crypto/sha256"
	"encoding/hex"
)

// NotifyChannel is the LISTEN/NOTIFY channel on which the ticker package
// announces a new tick of queue, and on which the consumer package waits:
// "pgq_tick." followed by the queue name, or by a hash of it when the name
// would not fit PostgreSQL's 63-byte identifier limit. The payload is the
// tick id. This is the only definition of the channel name.
func NotifyChannel(queue string) string {
	const prefix = "pgq_tick."
	if len(prefix)+len(queue) <= 63 {
		return prefix + queue
	}
	sum := sha256.Sum256([]byte(queue))
	return prefix + "h:" + hex.EncodeToString(sum[:16])
}
