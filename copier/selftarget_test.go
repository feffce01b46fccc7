package copier_test

import (
	"testing"
	"time"

	"github.com/pgq-go/pgq/copier"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/route"
	"github.com/pgq-go/pgq/urlenc"
	"github.com/stretchr/testify/require"
)

// TestSelfTargetAndEmptyTargets: what the package doc promises. A row a
// node sends to itself goes through the hub and is applied by its own
// pull, once, next to rows for another node; an empty target list is an
// error and sends nothing.
func TestSelfTargetAndEmptyTargets(t *testing.T) {
	t.Parallel()
	cc := newCopyCluster(t, 2, 1, copier.RoutingShared, func(int) *pgtest.Cluster { return cluster }, cluster)
	cc.setupAll()
	cc.startTicker()
	for _, n := range cc.nodes {
		runCopier(t, cc.ctx, cc.config(n))
	}
	n1 := cc.local["n1"].Pool
	tx, err := n1.Begin(cc.ctx)
	require.NoError(t, err)
	defer tx.Rollback(cc.ctx)
	s := route.Sender{Queue: "push_queue", Origin: "n1"}
	_, err = s.SendBulk(cc.ctx, tx, []route.Message{{Targets: nil, Row: urlenc.Fields{"action": "ins", "id": "n1-0", "origin": "n1"}}})
	require.ErrorIs(t, err, route.ErrInvalidNode, "empty target list")
	_, err = s.SendBulk(cc.ctx, tx, []route.Message{
		{Targets: []string{"n1"}, Row: urlenc.Fields{"action": "ins", "id": "n1-1", "origin": "n1", "payload": "it's \\ a; -- row n1-1"}},
		{Targets: []string{"n1", "n2"}, Row: urlenc.Fields{"action": "ins", "id": "n1-2", "origin": "n1", "payload": "it's \\ a; -- row n1-2"}},
	})
	require.NoError(t, err)
	require.NoError(t, tx.Commit(cc.ctx))
	cc.mu.Lock()
	cc.expected["n1"]["n1-1"], cc.expected["n1"]["n1-2"], cc.expected["n2"]["n1-2"] = true, true, true
	cc.mu.Unlock()
	require.Eventually(t, cc.delivered, 60*time.Second, 20*time.Millisecond)
	cc.verify()
}
