package copier_test

import (
	"context"
	"testing"
	"time"

	"github.com/pgq-go/pgq/apply"
	"github.com/pgq-go/pgq/copier"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/route"
	"github.com/pgq-go/pgq/urlenc"
	"github.com/stretchr/testify/require"
)

// childDDL gives node n2 a table whose rows need a parent: a child row
// whose parent has not arrived yet fails with a foreign-key violation, a
// real transient failure.
const childDDL = `create table parent (id text primary key);
create table child (id text primary key, parent text references parent, val text);`

type orderEnv struct {
	cc *copyCluster
	n2 *pgtest.DB
	c2 *copier.TargetedCopier
	ra *apply.RowApplier
}

// newOrderEnv runs nodes n1 and n2; n2 applies rows into child.
func newOrderEnv(t *testing.T, maxRetries int, pre string) *orderEnv {
	t.Helper()
	cc := newCopyCluster(t, 2, 1, copier.RoutingShared, func(int) *pgtest.Cluster { return cluster }, cluster)
	e := &orderEnv{cc: cc, n2: cc.local["n2"]}
	_, err := e.n2.Pool.Exec(cc.ctx, childDDL+pre)
	require.NoError(t, err)
	cc.setupAll()
	cc.startTicker()
	runCopier(t, cc.ctx, cc.config("n1"))
	cfg := cc.config("n2")
	e.ra, err = apply.NewRowApplier("child", []string{"id"})
	require.NoError(t, err)
	cfg.Applier, cfg.MaxRetries, cfg.RetryDelay = e.ra, maxRetries, 10*time.Millisecond
	_, e.c2 = runCopier(t, cc.ctx, cfg)
	return e
}

// send sends rows to n2 from n1, in one transaction (so one batch).
func (e *orderEnv) send(t *testing.T, rows ...urlenc.Fields) {
	t.Helper()
	var msgs []route.Message
	for _, r := range rows {
		msgs = append(msgs, route.Message{Targets: []string{"n2"}, Row: r})
	}
	tx, err := e.cc.local["n1"].Pool.Begin(e.cc.ctx)
	require.NoError(t, err)
	defer tx.Rollback(context.Background())
	_, err = route.Sender{Queue: "push_queue", Origin: "n1"}.SendBulk(e.cc.ctx, tx, msgs)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(e.cc.ctx))
}

func (e *orderEnv) exec(t *testing.T, sql string) {
	t.Helper()
	_, err := e.n2.Pool.Exec(e.cc.ctx, sql)
	require.NoError(t, err)
}

// child returns the child row k (found false when absent).
func (e *orderEnv) child(t *testing.T, k string) (parent, val string, found bool) {
	t.Helper()
	rows, err := e.n2.Pool.Query(e.cc.ctx, "select parent, val from child where id = $1", k)
	require.NoError(t, err)
	defer rows.Close()
	for rows.Next() {
		require.NoError(t, rows.Scan(&parent, &val))
		found = true
	}
	require.NoError(t, rows.Err())
	return parent, val, found
}

func (e *orderEnv) waitStats(t *testing.T, what string, cond func(copier.Stats) bool) {
	t.Helper()
	require.Eventually(t, func() bool { return cond(e.c2.Stats()) }, 90*time.Second, 20*time.Millisecond, what)
}

// orderCases are histories of one key whose first row fails until the
// test creates its parent: the end state must be the history's.
var orderCases = []struct {
	name  string
	pre   string // n2's state before
	rows  []urlenc.Fields
	fix   string // creates the missing parent
	check func(t *testing.T, e *orderEnv)
}{
	{
		name: "insert-then-delete",
		rows: []urlenc.Fields{
			{"action": "ins", "id": "k", "parent": "p", "val": "v1"},
			{"action": "del", "id": "k"},
		},
		fix: "insert into parent values ('p')",
		check: func(t *testing.T, e *orderEnv) {
			_, _, found := e.child(t, "k")
			require.False(t, found, "the row was deleted after its insert: it must be absent")
		},
	},
	{
		name: "two-updates",
		pre:  "insert into parent values ('p1'); insert into child values ('k', 'p1', 'v0');",
		rows: []urlenc.Fields{
			{"action": "upd", "id": "k", "parent": "p2", "val": "v1"},
			{"action": "upd", "id": "k", "parent": "p1", "val": "v2"},
		},
		fix: "insert into parent values ('p2')",
		check: func(t *testing.T, e *orderEnv) {
			parent, val, found := e.child(t, "k")
			require.True(t, found)
			require.Equal(t, "v2", val, "the latest update wins")
			require.Equal(t, "p1", parent)
		},
	},
}

// TestOrderKeptAcrossRetries (B4): a key's later rows wait behind its row
// that failed transiently, and follow it in order once it applies.
func TestOrderKeptAcrossRetries(t *testing.T) {
	t.Parallel()
	for _, tc := range orderCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newOrderEnv(t, 1000, tc.pre)
			e.send(t, tc.rows...)
			e.waitStats(t, "first row failed", func(s copier.Stats) bool { return s.Retried >= 1 })
			e.exec(t, tc.fix)
			e.waitStats(t, "both rows applied", func(s copier.Stats) bool { return s.Applied >= 2 })
			tc.check(t, e)
			n, err := copier.CountParked(e.cc.ctx, e.n2.Pool, "")
			require.NoError(t, err)
			require.Zero(t, n)
		})
	}
}

// TestOrderKeptAcrossParkAndReplay (B4): when the failing row is parked,
// the key's later rows are parked behind it; a replay takes them in order
// and refuses a later row while an earlier one of its key is still parked.
func TestOrderKeptAcrossParkAndReplay(t *testing.T) {
	t.Parallel()
	for _, tc := range orderCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newOrderEnv(t, 1, tc.pre)
			e.send(t, tc.rows...)
			e.waitStats(t, "first row parked, second handled", func(s copier.Stats) bool {
				return s.Parked >= 1 && s.Parked+s.Applied >= 2
			})
			e.exec(t, tc.fix)
			ctx := e.cc.ctx
			parked, err := copier.ListParked(ctx, e.n2.Pool, copier.ParkedFilter{})
			require.NoError(t, err)
			// The later row alone is refused while the earlier is parked.
			last := parked[len(parked)-1].ParkID
			res, err := copier.ReplayParked(ctx, e.n2.Pool, "n2", e.ra, copier.ParkedFilter{IDs: []int64{last}})
			require.NoError(t, err)
			require.Zero(t, res.Replayed, "a later row of a key is not replayed before an earlier one")
			require.ErrorContains(t, res.Failed[last], "earlier")

			res, err = copier.ReplayParked(ctx, e.n2.Pool, "n2", e.ra, copier.ParkedFilter{})
			require.NoError(t, err)
			require.Empty(t, res.Failed)
			tc.check(t, e)
			require.Equal(t, 2, res.Replayed)
		})
	}
}
