package copier_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/copier"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/route"
	"github.com/pgq-go/pgq/urlenc"
	"github.com/stretchr/testify/require"
)

// queueEvents counts every event a hub queue holds (all its event tables).
func queueEvents(t *testing.T, ctx context.Context, hub *pgxpool.Pool, queue string) int {
	t.Helper()
	var pfx *string
	err := hub.QueryRow(ctx, "select queue_data_pfx from pgq.queue where queue_name = $1", queue).Scan(&pfx)
	if err == pgx.ErrNoRows {
		return 0
	}
	require.NoError(t, err)
	var n int
	require.NoError(t, hub.QueryRow(ctx, "select count(*) from "+pgx.Identifier(strings.Split(*pfx, ".")).Sanitize()).Scan(&n))
	return n
}

// shardTargets returns target names covering every one of n shards.
func shardTargets(n int) []string {
	var out []string
	seen := map[int]bool{}
	for i := 0; len(seen) < n; i++ {
		tg := fmt.Sprintf("t%d", i)
		if s := route.ShardOf(tg, n); !seen[s] {
			seen[s] = true
			out = append(out, tg)
		}
	}
	return out
}

// TestRelayParksInvalidTargetOnce: an event whose target is no node id is
// seen by every hub shard's relay; it must be parked once, not once per
// shard (B7).
func TestRelayParksInvalidTargetOnce(t *testing.T) {
	t.Parallel()
	for _, hubs := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d-hubs", hubs), func(t *testing.T) {
			t.Parallel()
			cc := newCopyCluster(t, 1, hubs, copier.RoutingShared, func(int) *pgtest.Cluster { return cluster }, cluster)
			cc.setupAll()
			cc.startTicker()
			_, c1 := runCopier(t, cc.ctx, cc.config("n1"))

			n1 := cc.local["n1"].Pool
			_, err := pgq.InsertEvent(cc.ctx, n1, "push_queue", pgq.EventData{Type: pgq.T("copy"),
				Extra1: pgq.T("no such node!"), Extra2: pgq.T("action=ins&id=x")})
			require.NoError(t, err)
			// Then one row for a target on every shard: when each has reached
			// its hub, every relay is past the bad event.
			targets := shardTargets(hubs)
			tx, err := n1.Begin(cc.ctx)
			require.NoError(t, err)
			defer tx.Rollback(context.Background())
			_, err = route.Sender{Queue: "push_queue"}.Send(cc.ctx, tx, targets, urlenc.Fields{"action": "ins", "id": "a", "origin": "n1"})
			require.NoError(t, err)
			require.NoError(t, tx.Commit(cc.ctx))
			require.Eventually(t, func() bool {
				for _, h := range cc.hubs {
					if queueEvents(t, cc.ctx, h.Pool, "pull_queue") == 0 {
						return false
					}
				}
				return true
			}, 60*time.Second, 20*time.Millisecond)

			var total int64
			for i, h := range cc.hubs {
				n, err := copier.CountParked(cc.ctx, h.Pool, "")
				require.NoError(t, err)
				t.Logf("hub %d: %d parked", i, n)
				total += n
			}
			require.EqualValues(t, 1, total, "the bad event is parked once over all hub shards")
			require.EqualValues(t, 1, c1.Stats().Parked)
		})
	}
}

// TestCopierRejectsLongPerTargetPrefix: with per-target routing, the pull
// queue is a prefix of "<prefix>.<node>"; a prefix that leaves no room for
// a node id of MaxNodeLen bytes must fail validation, naming the field
// (C4b), instead of stalling the relay on the first such target.
func TestCopierRejectsLongPerTargetPrefix(t *testing.T) {
	t.Parallel()
	cc := newCopyCluster(t, 1, 1, copier.RoutingPerTarget, func(int) *pgtest.Cluster { return cluster }, cluster)
	cfg := cc.config("n1")
	cfg.PullQueue = strings.Repeat("q", pgq.MaxNameLen-route.MaxNodeLen)
	_, err := copier.New(cfg)
	require.ErrorContains(t, err, "PullQueue")
	require.ErrorIs(t, err, pgq.ErrInvalidName)

	// The longest prefix that fits is accepted, and shared routing keeps
	// the plain queue-name limit.
	cfg.PullQueue = strings.Repeat("q", pgq.MaxNameLen-route.MaxNodeLen-1)
	_, err = copier.New(cfg)
	require.NoError(t, err)
	cfg.Routing, cfg.PullQueue = copier.RoutingShared, strings.Repeat("q", pgq.MaxNameLen)
	_, err = copier.New(cfg)
	require.NoError(t, err)
}

// TestRelayParksEventForInvalidQueue: should a target still yield an
// invalid per-target queue name, the relay parks the event once with a
// clear error and carries on, instead of failing its batch forever (C4b).
func TestRelayParksEventForInvalidQueue(t *testing.T) { // not parallel: a package-wide hook
	cc := newCopyCluster(t, 1, 2, copier.RoutingPerTarget, func(int) *pgtest.Cluster { return cluster }, cluster)
	cc.setupAll()
	cc.startTicker()
	cfg := cc.config("n1")
	cfg.NoTargetRegistration = true
	copier.SetRelayQueueHook(func(q string) string { return q + strings.Repeat("q", pgq.MaxNameLen) })
	t.Cleanup(func() { copier.SetRelayQueueHook(nil) })
	runCopier(t, cc.ctx, cfg)

	n1 := cc.local["n1"].Pool
	for i, tg := range []string{"t0", "t1", "t2"} {
		sendOne(t, cc.ctx, n1, []string{tg}, urlenc.Fields{"action": "ins", "id": fmt.Sprint(i), "origin": "n1"})
	}
	var parked []copier.ParkedEvent
	require.Eventually(t, func() bool {
		parked = parked[:0]
		for _, h := range cc.hubs {
			ps, err := copier.ListParked(cc.ctx, h.Pool, copier.ParkedFilter{})
			if err != nil {
				return false
			}
			parked = append(parked, ps...)
		}
		return len(parked) >= 3
	}, 60*time.Second, 20*time.Millisecond)
	require.Len(t, parked, 3, "each event parked once")
	for _, p := range parked {
		require.Contains(t, p.Error, "queue name")
		require.Contains(t, p.Error, p.Event.Extra1.String)
	}
}

// sendOne sends row to targets from db in a transaction of its own.
func sendOne(t *testing.T, ctx context.Context, db *pgxpool.Pool, targets []string, row route.Payload) {
	t.Helper()
	tx, err := db.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(context.Background())
	_, err = route.Sender{Queue: "push_queue"}.Send(ctx, tx, targets, row)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
}

// TestRelayFlushesByBytes: a relay batch of large events is written to the
// hub in COPYs bounded in bytes, not only in events, and everything
// arrives (C3).
func TestRelayFlushesByBytes(t *testing.T) {
	t.Parallel()
	cc := newCopyCluster(t, 2, 1, copier.RoutingShared, func(int) *pgtest.Cluster { return cluster }, cluster)
	cc.setupAll()
	cc.startTicker()
	_, c1 := runCopier(t, cc.ctx, cc.config("n1"))
	runCopier(t, cc.ctx, cc.config("n2"))

	const events, size = 24, 900 << 10 // ~21 MiB in one relay batch
	big := strings.Repeat("x", size)
	var msgs []route.Message
	for i := range events {
		id := fmt.Sprintf("big-%d", i)
		cc.expected["n2"][id] = true
		msgs = append(msgs, route.Message{Targets: []string{"n2"},
			Row: urlenc.Fields{"action": "ins", "id": id, "origin": "n1", "payload": big}})
	}
	tx, err := cc.local["n1"].Pool.Begin(cc.ctx)
	require.NoError(t, err)
	defer tx.Rollback(context.Background())
	_, err = route.Sender{Queue: "push_queue", Origin: "n1"}.SendBulk(cc.ctx, tx, msgs)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(cc.ctx))

	require.Eventually(t, func() bool {
		var n int
		return cc.local["n2"].Pool.QueryRow(cc.ctx, "select count(*) from rows where length(payload) = $1", size).Scan(&n) == nil &&
			n == events
	}, 120*time.Second, 50*time.Millisecond)
	flushes, maxBuf := copier.RelayBufferStats(c1)
	t.Logf("%d flushes, at most %d bytes buffered", flushes, maxBuf)
	require.LessOrEqual(t, maxBuf, int64(copier.RelayFlushBytes+size+1000), "buffer bounded in bytes")
	require.GreaterOrEqual(t, flushes, int64(events*size/copier.RelayFlushBytes))
}
