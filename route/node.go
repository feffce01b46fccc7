// Package route addresses the targeted copy's events: node ids and their
// validation, the event format a producer writes (ev_type "copy" or
// londiste's I:/U:/D:, ev_extra1 the target node, ev_extra2 the row,
// ev_extra3 the origin), the hub shard a target belongs to, the names of
// the relay and pull consumers and per-target queues derived from node
// ids, and the Sender that writes targeted rows in the producer's own
// transaction. It is what a producer imports; the copier package reads
// what it writes.
package route

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
)

// MaxNodeLen bounds node ids, so that names derived from them (consumer
// names, per-target queue names) stay well inside PgQ's limits.
const MaxNodeLen = 63

// ErrInvalidNode is returned for a node id outside the documented set.
var ErrInvalidNode = errors.New("route: invalid node id")

// ValidateNode checks a node id: 1..63 bytes of ASCII letters, digits,
// '_', '-' and '.', starting with a letter or digit.
func ValidateNode(node string) error {
	if node == "" {
		return fmt.Errorf("%w: empty", ErrInvalidNode)
	}
	if len(node) > MaxNodeLen {
		return fmt.Errorf("%w: %q is %d bytes, limit %d", ErrInvalidNode, node, len(node), MaxNodeLen)
	}
	for i := 0; i < len(node); i++ {
		c := node[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '-' && c != '.') {
			return fmt.Errorf("%w: %q (allowed: letters, digits, '_', '-', '.'; first a letter or digit)", ErrInvalidNode, node)
		}
	}
	return nil
}

// ShardOf maps a target node to one of n hub shards with a stable hash
// (FNV-1a, 32 bit): every process of a cluster agrees without talking, and
// the mapping never depends on PostgreSQL internals. Changing the number
// of shards moves targets; drain the pull queues first.
func ShardOf(node string, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(node))
	return int(h.Sum32() % uint32(n))
}

// Consumer names derived from the node id (documented in the README):
//
//	relay: "relay.<node>" on the node's push queue for hub shard 0, and
//	       "relay.<node>.s<i>" for shard i > 0: a relay's name depends on
//	       its shard only, never on how many shards there are, so adding a
//	       hub keeps every existing relay and its position.
//	pull:  "pull.<node>" on the hub's pull queue.
//
// Tracking rows are keyed by these names plus the source (see
// TrackingKey), so flows from different queues or databases never share a
// position.
func RelayConsumerName(node string, shard int) string {
	if shard == 0 {
		return "relay." + node
	}
	return fmt.Sprintf("relay.%s.s%d", node, shard)
}

// PullConsumerName is the pull consumer's name for node.
func PullConsumerName(node string) string { return "pull." + node }

// PerTargetQueue is the hub queue of target in per-target routing:
// "<pull queue>.<target>".
func PerTargetQueue(pullQueue, target string) string { return pullQueue + "." + target }

// PullBell is the NOTIFY channel a relay rings, in the hub transaction
// that writes rows for target into the shared pull queue, so that
// target's pull looks for a batch only when it has rows (see
// consumer.Bell): "pgq_go.bell.<pull queue>.<target>", or a hash of the
// pair when that would not fit PostgreSQL's 63-byte channel names.
func PullBell(pullQueue, target string) string {
	const prefix = "pgq_go.bell."
	if ch := prefix + pullQueue + "." + target; len(ch) <= 63 {
		return ch
	}
	sum := sha256.Sum256([]byte(pullQueue + "\x00" + target))
	return prefix + "h:" + hex.EncodeToString(sum[:16])
}
