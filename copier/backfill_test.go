package copier_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/apply"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/copier"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// bfItemsDDL is the captured table, the same on every node.
const bfItemsDDL = `create table items (id int primary key, targets text[], v text)`

// backfillEnv is three nodes and a hub: n1 holds the captured table
// items, n2 and n3 receive its rows through their copiers.
type backfillEnv struct {
	ctx   context.Context
	t     *testing.T
	hub   *pgtest.DB
	nodes map[string]*pgtest.DB
}

func newBackfillEnv(t *testing.T) *backfillEnv {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	e := &backfillEnv{ctx: ctx, t: t, hub: cluster.NewDB(t), nodes: map[string]*pgtest.DB{}}
	for _, n := range []string{"n1", "n2", "n3"} {
		db := cluster.NewDB(t)
		_, err := db.Pool.Exec(ctx, bfItemsDDL)
		require.NoError(t, err)
		e.nodes[n] = db
	}
	// The capture writes into n1's push queue, which must exist first.
	_, err := pgq.CreateQueue(ctx, e.nodes["n1"].Pool, "push_queue")
	require.NoError(t, err)
	return e
}

func (e *backfillEnv) config(node string) copier.Config {
	ra, err := apply.NewRowApplier("items", []string{"id"})
	require.NoError(e.t, err)
	return copier.Config{Node: node, Local: e.nodes[node].Pool, Hubs: []*pgxpool.Pool{e.hub.Pool}, Applier: ra,
		RetryDelay: 10 * time.Millisecond, MaxRetries: 2, PollInterval: 20 * time.Millisecond,
		ErrorBackoff: consumer.Backoff{Initial: 10 * time.Millisecond, Max: 200 * time.Millisecond}}
}

// start sets up and runs the three copiers; tick runs tickLoop on the
// hub, on n2 and n3, and on n1 too unless the test ticks n1 itself.
func (e *backfillEnv) start(tickN1 bool) {
	for _, n := range []string{"n1", "n2", "n3"} {
		tc, err := copier.New(e.config(n))
		require.NoError(e.t, err)
		require.NoError(e.t, tc.Setup(e.ctx))
	}
	pools := []*pgxpool.Pool{e.hub.Pool, e.nodes["n2"].Pool, e.nodes["n3"].Pool}
	if tickN1 {
		pools = append(pools, e.nodes["n1"].Pool)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() { tickLoop(ctx, pools...); close(done) }()
	e.t.Cleanup(func() { cancel(); <-done })
	for _, n := range []string{"n1", "n2", "n3"} {
		runCopier(e.t, e.ctx, e.config(n))
	}
}

func (e *backfillEnv) capture() {
	require.NoError(e.t, copier.AddCapture(e.ctx, e.nodes["n1"].Pool, copier.CaptureConfig{
		Table: "items", Queue: "push_queue", Origin: "n1", TargetColumn: "targets"}))
}

// want is what node must hold: n1's rows addressed to it.
func (e *backfillEnv) want(node string) []string {
	return e.items("n1", "where $1 = any(targets)", node)
}

func (e *backfillEnv) items(on, where string, args ...any) []string {
	rows, err := e.nodes[on].Pool.Query(e.ctx, "select format('%s|%s|%s', id, targets, v) from items "+where+" order by id", args...)
	require.NoError(e.t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(e.t, err)
	return out
}

// converged waits until each target holds exactly what it must.
func (e *backfillEnv) converged(nodes ...string) {
	for _, n := range nodes {
		if !assert.Eventually(e.t, func() bool { return slices.Equal(e.want(n), e.items(n, "")) }, time.Minute, 20*time.Millisecond) {
			require.Equal(e.t, e.want(n), e.items(n, ""), "node %s", n)
		}
	}
}

// TestBackfillUnderConcurrentWrites: a table with rows is captured, then
// backfilled to both targets while a writer inserts, updates (values and
// targets: rows join and leave n3) and deletes rows; at the end each
// target holds exactly n1's rows addressed to it, with their last values.
func TestBackfillUnderConcurrentWrites(t *testing.T) {
	t.Parallel()
	e := newBackfillEnv(t)
	n1 := e.nodes["n1"].Pool
	targetSets := []string{"{n2}", "{n3}", "{n2,n3}", "{}", "{n3,n2}"}
	_, err := n1.Exec(e.ctx, `insert into items select i, ($1::text[])[1 + i % 5]::text[], 'v0-' || i from generate_series(1, 600) i`,
		targetSets)
	require.NoError(t, err)
	e.capture()
	e.start(true)

	// The writer: random changes until the backfills are done, then a
	// few more.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writes int
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(1, 2))
		next := 601
		for i := 0; ; i++ {
			select {
			case <-stop:
				if i > 50 {
					writes = i
					return
				}
			default:
			}
			id := 1 + rng.IntN(next-1)
			var err error
			switch rng.IntN(5) {
			case 0:
				_, err = n1.Exec(e.ctx, "insert into items values ($1, $2, $3)", next, targetSets[rng.IntN(5)], fmt.Sprint("new-", next))
				next++
			case 1:
				_, err = n1.Exec(e.ctx, "delete from items where id = $1", id)
			case 2:
				_, err = n1.Exec(e.ctx, "update items set targets = $2 where id = $1", id, targetSets[rng.IntN(5)])
			default:
				_, err = n1.Exec(e.ctx, "update items set v = $2 where id = $1", id, fmt.Sprint("w", i))
			}
			if err != nil {
				t.Errorf("writer: %v", err)
				return
			}
		}
	}()
	var res [2]copier.BackfillResult
	for i, target := range []string{"n3", "n2"} {
		var err error
		res[i], err = copier.Backfill(e.ctx, n1, "items", target, copier.BackfillOptions{ChunkRows: 17})
		require.NoError(t, err)
		require.Positive(t, res[i].Rows)
		require.Greater(t, res[i].Chunks, 5)
		require.False(t, res[i].Resumed)
	}
	close(stop)
	wg.Wait()
	require.Positive(t, writes)
	e.converged("n2", "n3")
	var done bool
	var sent int64
	require.NoError(t, n1.QueryRow(e.ctx, "select done, rows_sent from pgq_go.capture_backfill where table_oid = 'items'::regclass and target = 'n3'").Scan(&done, &sent))
	require.True(t, done)
	require.Equal(t, res[0].Rows, sent)
}

// TestBackfillWaitsForWriter: a row updated by a transaction that has not
// committed when the backfill reaches it. The update's event is queued
// first; the backfill must send the updated row, not the one it could
// read before the commit, or its later event would put the old value
// back on the target (both commit before the next tick, so they are
// applied in event order). The source is ticked by the test.
func TestBackfillWaitsForWriter(t *testing.T) {
	t.Parallel()
	e := newBackfillEnv(t)
	n1 := e.nodes["n1"].Pool
	_, err := n1.Exec(e.ctx, `insert into items select i, '{n3}', 'old' from generate_series(1, 10) i`)
	require.NoError(t, err)
	e.capture()
	e.start(false)

	tx, err := n1.Begin(e.ctx)
	require.NoError(t, err)
	defer tx.Rollback(e.ctx)
	_, err = tx.Exec(e.ctx, "update items set v = 'new' where id = 5")
	require.NoError(t, err)

	done := make(chan error, 1)
	go func() {
		_, err := copier.Backfill(e.ctx, n1, "items", "n3", copier.BackfillOptions{})
		done <- err
	}()
	// Wait until the backfill either waits for the writer's row lock or
	// has finished (it must not, but the test is not the judge of that).
	var finished bool
	require.Eventually(t, func() bool {
		select {
		case err := <-done:
			done <- err
			finished = true
			return true
		default:
		}
		var waiting bool
		require.NoError(t, n1.QueryRow(e.ctx, `select exists (select 1 from pg_stat_activity
			where datname = current_database() and wait_event_type = 'Lock' and query like '%for share of r%')`).Scan(&waiting))
		return waiting
	}, 30*time.Second, 5*time.Millisecond)
	require.False(t, finished, "the backfill read a row a writer holds before the writer committed")
	require.NoError(t, tx.Commit(e.ctx))
	require.NoError(t, <-done)
	_, err = pgq.Tick(e.ctx, n1, "push_queue")
	require.NoError(t, err)
	e.converged("n3")
	require.Equal(t, []string{"5|{n3}|new"}, e.items("n3", "where id = 5"))
}

// TestBackfillKilledResumes: a backfill process killed (SIGKILL) after
// some chunks is continued by the next call from the last chunk it
// committed; the target ends with every row once.
func TestBackfillKilledResumes(t *testing.T) {
	t.Parallel()
	e := newBackfillEnv(t)
	n1 := e.nodes["n1"].Pool
	_, err := n1.Exec(e.ctx, `insert into items select i, '{n2,n3}', 'v' || i from generate_series(1, 200) i`)
	require.NoError(t, err)
	e.capture()
	_, err = pgq.RegisterConsumer(e.ctx, n1, "push_queue", "audit")
	require.NoError(t, err)
	e.start(true)

	cmd := exec.CommandContext(e.ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=backfill", "LOCAL_DSN="+e.nodes["n1"].DSN)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	sc := bufio.NewScanner(out)
	for sc.Scan() && sc.Text() != "CHUNK 3" {
		require.False(t, strings.HasPrefix(sc.Text(), "ERR"), sc.Text())
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	var sent int64
	var done bool
	require.NoError(t, n1.QueryRow(e.ctx, "select rows_sent, done from pgq_go.capture_backfill where target = 'n3'").Scan(&sent, &done))
	require.Equal(t, int64(3*15), sent, "three chunks of 15 committed before the kill")
	require.False(t, done)

	res, err := copier.Backfill(e.ctx, n1, "items", "n3", copier.BackfillOptions{ChunkRows: 15})
	require.NoError(t, err)
	require.True(t, res.Resumed)
	require.Equal(t, int64(200-45), res.Rows, "the rest, nothing twice")

	// Every row was queued once for n3: 45 by the killed process, 155 now.
	// n1's queue is ticked by tickLoop here (start(true)), so a tick of
	// the test's own could race it for the forced tick: wait for a tick
	// taken after the backfill committed instead.
	var last int64
	require.NoError(t, n1.QueryRow(e.ctx, "select last_tick_id from pgq.get_queue_info('push_queue')").Scan(&last))
	require.Eventually(t, func() bool {
		var now int64
		require.NoError(t, n1.QueryRow(e.ctx, "select last_tick_id from pgq.get_queue_info('push_queue')").Scan(&now))
		return now > last
	}, time.Minute, 5*time.Millisecond, "no tick on n1's push_queue after the backfill")
	ids := map[string]int{}
	for {
		info, err := pgq.NextBatch(e.ctx, n1, "push_queue", "audit")
		require.NoError(t, err)
		if info == nil {
			break
		}
		evs, err := pgq.NewBatch(n1, "push_queue", "audit", *info, pgq.ReadOptions{}).All(e.ctx)
		require.NoError(t, err)
		for _, ev := range evs {
			require.Equal(t, "n3", ev.Extra1.String)
			require.Equal(t, "I:id", ev.Type.String)
			ids[strings.SplitN(strings.TrimPrefix(ev.Extra2.String, "id="), "&", 2)[0]]++
		}
		_, err = pgq.FinishBatch(e.ctx, n1, info.ID)
		require.NoError(t, err)
	}
	require.Len(t, ids, 200)
	for id, n := range ids {
		require.Equal(t, 1, n, "row %s queued once", id)
	}
	e.converged("n3")
}

// runBackfillProcess runs a backfill of items to n3 in chunks of 15,
// printing CHUNK n after each chunk and stopping after the third until
// killed.
func runBackfillProcess(ctx context.Context) int {
	pool, err := pgxpool.New(ctx, os.Getenv("LOCAL_DSN"))
	if err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	copier.SetAfterBackfillChunk(func(n int) {
		fmt.Println("CHUNK " + strconv.Itoa(n))
		if n == 3 {
			select {} // killed here
		}
	})
	if _, err := copier.Backfill(ctx, pool, "items", "n3", copier.BackfillOptions{ChunkRows: 15}); err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	return 0
}

// TestBackfillRefusesUncapturedTable: no capture, no backfill.
func TestBackfillRefusesUncapturedTable(t *testing.T) {
	t.Parallel()
	db := cluster.NewDB(t)
	ctx := context.Background()
	_, err := db.Pool.Exec(ctx, bfItemsDDL)
	require.NoError(t, err)
	_, err = copier.Backfill(ctx, db.Pool, "items", "n3", copier.BackfillOptions{})
	require.ErrorIs(t, err, copier.ErrCaptureNotFound)
	_, err = copier.Backfill(ctx, db.Pool, "items", "bad node!", copier.BackfillOptions{})
	require.ErrorContains(t, err, "bad node!")
	_, err = copier.Backfill(ctx, db.Pool, "no_such_table", "n3", copier.BackfillOptions{})
	require.ErrorContains(t, err, "no_such_table")
}
