package pgq_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

// evKey is what two reads of a batch must agree on.
type evKey struct {
	ID    int64
	Retry int
	Data  string
	Ex1   string
}

func keys(evs []*pgq.Event) []evKey {
	out := make([]evKey, 0, len(evs))
	for _, e := range evs {
		out = append(out, evKey{ID: e.ID, Retry: int(e.Retry), Data: e.Data.String, Ex1: e.Extra1.String})
	}
	return out
}

// TestPlannedReadMatchesPgq: a batch read with the prepared statement
// (NextBatch's read plan) yields exactly the events pgq.get_batch_events
// does, in the same order, for two consumers, through transactions open
// across ticks (range widened and txids looked up by value), table
// rotations, retried events owned by one consumer, and a filter.
//
// In "held", a transaction of another database stays open from before
// the queue exists over the twelve rounds, as other tests' transactions
// on this shared cluster may: every tick's snapshot xmin stays at or
// below the queue's step 2, so no rotation happens and no batch reads
// the current table only in them (CI once failed that way); the rounds
// after them must still see every case.
func TestPlannedReadMatchesPgq(t *testing.T) {
	t.Parallel()
	for _, held := range []bool{false, true} {
		t.Run(map[bool]string{false: "alone", true: "held"}[held], func(t *testing.T) {
			t.Parallel()
			plannedReadMatchesPgq(t, held)
		})
	}
}

func plannedReadMatchesPgq(t *testing.T, held bool) {
	other := cluster.NewPlainDB(t)
	hold, err := other.Pool.Begin(context.Background())
	require.NoError(t, err)
	t.Cleanup(func() { _ = hold.Rollback(context.Background()) })
	_, err = hold.Exec(context.Background(), "select txid_current()")
	require.NoError(t, err)
	if !held {
		require.NoError(t, hold.Commit(context.Background()))
	}
	e := setup(t)
	ctx := e.ctx
	_, err = pgq.RegisterConsumer(ctx, e.pool, e.queue, "c2")
	require.NoError(t, err)
	require.NoError(t, pgq.SetQueueConfig(ctx, e.pool, e.queue, pgq.QueueConfig{RotationPeriod: pgq.Ptr(time.Millisecond)}))

	insert := func(db pgq.DB, round, n int) {
		for i := range n {
			ex := "a"
			if i%3 == 0 {
				ex = "b"
			}
			_, err := pgq.InsertEvent(ctx, db, e.queue, pgq.EventData{Type: pgq.T("t"),
				Data: pgq.T(fmt.Sprintf("r%d-%d", round, i)), Extra1: pgq.T(ex)})
			require.NoError(t, err)
		}
	}
	burnTxids := func(n int) {
		for range n {
			_, err := e.pool.Exec(ctx, "select txid_current()")
			require.NoError(t, err)
		}
	}
	begin := func() pgx.Tx {
		tx, err := e.pool.Begin(ctx)
		require.NoError(t, err)
		t.Cleanup(func() { _ = tx.Rollback(context.WithoutCancel(ctx)) })
		return tx
	}

	var batches, rotations int
	var sawListed, sawWidened, sawTwoTables, sawCurOnly, sawPrevOnly bool
	var total [2]int
	consume := func(round int) {
		for ci, cons := range []string{e.cons, "c2"} {
			for {
				info, err := pgq.NextBatch(ctx, e.pool, e.queue, cons)
				require.NoError(t, err)
				if info == nil {
					break
				}
				rp, err := pgq.ReadPlanOf(ctx, e.pool, e.queue, cons, *info)
				require.NoError(t, err)
				require.True(t, rp.Planned, "batch %d has a read plan", info.ID)
				require.Equal(t, info.ID, rp.Batch, "the read finds the open batch")
				sawListed = sawListed || rp.Listed > 0
				sawWidened = sawWidened || rp.Widened
				sawTwoTables = sawTwoTables || len(rp.Tables) == 2
				// The tables are pgq.batch_event_tables' (asked now, with
				// the queue's rotation state as the read sees it).
				var wantTables []string
				require.NoError(t, e.pool.QueryRow(ctx, "select array(select pgq.batch_event_tables($1))", info.ID).Scan(&wantTables))
				require.Equal(t, wantTables, rp.Tables, "batch %d's event tables", info.ID)
				var cur string
				require.NoError(t, e.pool.QueryRow(ctx, "select queue_data_pfx || '_' || queue_cur_table from pgq.queue where queue_name = $1", e.queue).Scan(&cur))
				switch {
				case len(wantTables) == 2:
				case wantTables[0] == cur:
					sawCurOnly = true
				default:
					sawPrevOnly = true
				}
				want, err := pgq.GetBatchEvents(ctx, e.pool, info.ID)
				require.NoError(t, err)
				// Naming any set of the queue's tables, the read returns
				// the batch's events if the set holds every table the
				// batch spans, and says so otherwise.
				var ntables int
				require.NoError(t, e.pool.QueryRow(ctx, "select queue_ntables from pgq.queue where queue_name = $1", e.queue).Scan(&ntables))
				pfx := rp.Tables[0][:strings.LastIndex(rp.Tables[0], "_")]
				for set := 1; set < 1<<ntables; set++ {
					var named []int
					holds := true
					for i := range ntables {
						name := fmt.Sprintf("%s_%d", pfx, i)
						if set&(1<<i) != 0 {
							named = append(named, i)
						} else if slices.Contains(rp.Tables, name) {
							holds = false
						}
					}
					evs, missing, err := pgq.ReadNaming(ctx, e.pool, e.queue, cons, *info, named)
					require.NoError(t, err)
					require.Equal(t, !holds, missing, "batch %d spans %v, read naming %v", info.ID, rp.Tables, named)
					if !missing {
						require.Equal(t, keys(want), keys(evs), "batch %d naming %v", info.ID, named)
					}
				}
				b := pgq.NewBatch(e.pool, e.queue, cons, *info, pgq.ReadOptions{})
				got, err := b.All(ctx)
				require.NoError(t, err)
				require.Equal(t, keys(want), keys(got), "round %d, %s, batch %d", round, cons, info.ID)
				streamed, err := pgq.NewBatch(e.pool, e.queue, cons, *info, pgq.ReadOptions{FetchSize: 7}).All(ctx)
				require.NoError(t, err)
				require.Equal(t, keys(want), keys(streamed), "streamed")
				filtered, err := pgq.NewBatch(e.pool, e.queue, cons, *info,
					pgq.ReadOptions{Filter: pgq.Eq(pgq.FieldExtra1, "b")}).All(ctx)
				require.NoError(t, err)
				wantB := slices.DeleteFunc(slices.Clone(want), func(ev *pgq.Event) bool { return ev.Extra1.String != "b" })
				require.Equal(t, keys(wantB), keys(filtered), "filtered")
				total[ci] += len(want)
				// The first consumer sends the first event of every third
				// batch back for retry: only it must see it again.
				tx := begin()
				if ci == 0 && len(want) > 0 && batches%3 == 0 {
					require.NoError(t, pgq.RetryEventRaw(ctx, tx, e.queue, cons, want[0], time.Now()))
				}
				_, err = pgq.FinishBatch(ctx, tx, info.ID)
				require.NoError(t, err)
				require.NoError(t, tx.Commit(ctx))
				batches++
			}
		}
	}
	// rotate runs rotation step 1 and, when it rotated, step 2 (its own
	// transaction, as pgqd runs it) after the next round's consumption:
	// batches see both steps' states.
	step2 := false
	rotate := func() {
		var before int
		require.NoError(t, e.pool.QueryRow(ctx, "select queue_cur_table from pgq.queue where queue_name = $1", e.queue).Scan(&before))
		_, err := e.pool.Exec(ctx, "select pgq.maint_rotate_tables_step1($1)", e.queue)
		require.NoError(t, err)
		var after int
		require.NoError(t, e.pool.QueryRow(ctx, "select queue_cur_table from pgq.queue where queue_name = $1", e.queue).Scan(&after))
		if after != before {
			rotations++
			step2 = true
		}
	}

	var long, short, late pgx.Tx
	for round := range 12 {
		switch round {
		case 1: // open across many ticks; ends > 100 txids behind
			long = begin()
			insert(long, round, 3)
		case 2:
			burnTxids(150)
		case 3: // open across one tick; ends close behind
			short = begin()
			insert(short, round, 2)
		case 4:
			require.NoError(t, short.Commit(ctx))
		case 6:
			require.NoError(t, long.Commit(ctx))
		case 7: // > 100 txids behind by round 9's batch; commits after its end tick, before it is read
			late = begin()
			insert(late, round, 2)
		case 8:
			burnTxids(150)
		}
		insert(e.pool, round, 5)
		if round%4 == 3 {
			_, err := pgq.MaintRetryEvents(ctx, e.pool)
			require.NoError(t, err)
		}
		e.tick(t)
		if round%3 == 2 {
			rotate() // between the tick and the batch
		}
		if round == 9 {
			// Committed now, its events are visible to the read's own
			// snapshot, but not to the batch's end tick: they belong to
			// the next batch only.
			require.NoError(t, late.Commit(ctx))
		}
		consume(round)
		if step2 && round%3 == 0 {
			_, err := e.pool.Exec(ctx, "select pgq.maint_rotate_tables_step2()")
			require.NoError(t, err)
			step2 = false
		}
	}
	if held {
		require.Zero(t, rotations, "no rotation while the xmin was held")
		require.False(t, sawCurOnly, "no batch read the current table only while the xmin was held")
		require.NoError(t, hold.Commit(ctx))
	}
	// Other tests' transactions may hold the xmin low for a while yet.
	// Go on in cycles of four rounds until each case has been seen: step 1
	// between the first round's tick and its batches (they read the
	// previous table only), step 2 after them; the next round's batches
	// read both tables, and the round after's the current one only, as
	// soon as their start tick's xmin is past step 2.
	deadline := time.Now().Add(time.Minute)
	extra := 0
	for round := 12; !(sawCurOnly && sawPrevOnly && sawTwoTables); round++ {
		require.True(t, time.Now().Before(deadline),
			"every rotation case within a minute: cur-only %v, prev-only %v, both %v after %d rounds",
			sawCurOnly, sawPrevOnly, sawTwoTables, round)
		insert(e.pool, round, 5)
		extra += 5
		e.tick(t)
		if round%4 == 0 {
			rotate()
		}
		consume(round)
		if step2 {
			_, err := e.pool.Exec(ctx, "select pgq.maint_rotate_tables_step2()")
			require.NoError(t, err)
			step2 = false
		}
	}
	_, err = pgq.MaintRetryEvents(ctx, e.pool)
	require.NoError(t, err)
	e.tick(t)
	consume(99)
	require.True(t, sawListed, "some batch looked txids up by value")
	require.True(t, sawWidened, "some batch widened its txid range")
	require.True(t, sawTwoTables, "some batch read two tables")
	require.True(t, sawCurOnly, "some batch read the current table only")
	require.True(t, sawPrevOnly, "some batch read the previous table only")
	require.Greater(t, total[0], total[1], "the retried events came back to their consumer only")
	require.Equal(t, 12*5+3+2+2+extra, total[1])
}

// A batch that is no longer open is not read: its tables may have been
// rotated away meanwhile.
func TestPlannedReadRefusesClosedBatch(t *testing.T) {
	t.Parallel()
	e := setup(t)
	_, err := pgq.InsertEvent(e.ctx, e.pool, e.queue, pgq.EventData{Data: pgq.T("x")})
	require.NoError(t, err)
	e.tick(t)
	info := e.next(t)
	rp, err := pgq.ReadPlanOf(e.ctx, e.pool, e.queue, e.cons, *info)
	require.NoError(t, err)
	require.True(t, rp.Planned)
	_, err = pgq.FinishBatch(e.ctx, e.pool, info.ID)
	require.NoError(t, err)
	for _, o := range []pgq.ReadOptions{{}, {FetchSize: 10}} {
		_, err = pgq.NewBatch(e.pool, e.queue, e.cons, *info, o).All(e.ctx)
		require.ErrorIs(t, err, pgq.ErrBatchNotFound)
	}
}
