// Package copier runs the push-pull targeted copy: every node of a
// PostgreSQL cluster sends rows to chosen other nodes through a hub queue,
// each row applied on exactly its targets, exactly once, with O(N)
// processes for N nodes instead of N².
//
//	node A db                          hub db                          node B db
//	push_queue ──relay(A)──▶ pull_queue (ev_extra1 = target) ──pull(B)──▶ Applier
//
// A TargetedCopier runs one node: its relay (a remote.RemoteConsumer from
// the node's push queue into the hub, tracked on the hub) and its pull (a
// RemoteConsumer from the hub into the node, reading only the events
// addressed to the node, selected server-side, applied by an
// apply.Applier, tracked on the node). Producers write targeted rows into
// their node's push queue in their own transaction with route.Sender. Rows
// that cannot be applied are retried, then parked in pgq_go.parked_event
// (ListParked, ReplayParked, PurgeParked); a change of the number of hub
// shards goes through Reshard.
//
// # Checklist
//
//   - Every database the copier touches needs the pgq extension (create
//     extension pgq): the nodes (their push queue) and the hubs (the pull
//     queues). Setup installs the tracking schema (remote.Install) and the
//     copier's tables (Install) in each.
//   - One ticker must tick every node and every hub (the ticker package,
//     pgqctl ticker, or pgqd): without ticks no batch is ever made. For low
//     latency set the queues' ticker_max_lag (Config.QueueConfig) near the
//     ticker's period; PgQ's default lag is 3 s.
//   - Every node lists the same hubs in the same order and uses the same
//     Routing and queue names.
//   - Run Setup (Run does) on a node before producing on it, so its relay
//     is registered and sees the rows; a target's pull consumer is
//     registered on the hub by the first relay that sends to it (see
//     Config.NoTargetRegistration), so rows for a node that never ran yet
//     wait for it.
//   - Several copiers (several nodes, or the same node in several
//     clusters) can run in one process: build one TargetedCopier per node
//     and run them, and a ticker if the process ticks, in an
//     errgroup.Group (golang.org/x/sync/errgroup). Appliers are safe for
//     concurrent use and may be shared between copiers.
//   - A node may target itself: the row goes through the hub and is
//     applied by its own pull like any other. An empty target list is an
//     error (route.ErrInvalidNode); send nothing instead.
//
// # Cost at scale
//
// In the default shared routing the hub holds one queue for every target.
// Two things keep a node's pull from paying for the other N-1 nodes' rows:
// the relay that writes rows for a target rings that target's pull
// (pg_notify on route.PullBell, in the hub transaction that writes them),
// and a pull takes batches only when rung, each spanning every tick since
// its last (consumer.Bell; an idle pull looks every 30 s, and when its held
// rows are due); and its batch query reads the node's rows through an
// index on (ev_extra1, ev_txid) of the queue's event tables, which Setup
// creates when its role owns them (else it logs a warning: run
// IndexHubQueue, pgqctl copy hub-index, as their owner).
//
// # Guarantees
//
// Each flow is a remote.RemoteConsumer, so every row is applied on its
// target exactly once across crashes of any process, restarts of any
// database, cut connections and several copies of one node running at
// once; tracking keys name the source database and queue (TrackingKey),
// so the flows into one database never share a position.
//
// # Per-key order
//
// The pull applies the rows addressed to its node in the
// order of their events on the node's pull queue: batch by batch, by event
// id within a batch. Rows sent by one origin node reach the hub in the
// order of its push queue, so for writes to one row made by transactions
// that send their event after writing the row (holding its lock), that is
// the origin's commit order. Rows of one key sent by different origin
// nodes travel through different relays and have no defined order.
//
// A failure keeps that order per order key (Config.OrderKey;
// RowApplier: table + key columns; default for other appliers: one key
// for the whole node). When a row fails it is held on the node in
// pgq_go.held_event, and every later row with the same key is held behind
// it in arrival order, in the node transaction that records the batch
// (exactly once across crashes). At the start of each pull batch the keys
// whose first row is due are tried again: when it applies, the rows
// behind it follow in order until one fails (which then heads the key);
// when it exhausts MaxRetries (or fails with ErrBadPayload) it is parked
// in pgq_go.parked_event with every row behind it, and rows of that key
// arriving later are parked behind them too, until the key has no parked
// row left. ReplayParked applies a key's parked rows in park order and
// refuses a row while an earlier row of its key is still parked or held.
// Rows of other keys never wait. So for every key the rows applied on
// the node are a prefix of its history, in order; none is applied after
// a later one. A row whose key cannot be read (OrderKey fails: an
// undecodable payload) is parked at once with no key and never holds
// others back.
package copier
