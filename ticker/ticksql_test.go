package ticker_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/ticker"
	"github.com/stretchr/testify/require"
)

// TestTickPrecheckMatchesPgqTicker: sqlTick's plain-SQL pre-check lets
// through every queue pgq.ticker() ticks. 60 queues in random states (no
// tick, one tick, new events below and above ticker_max_count, last tick
// ages around ticker_max_lag, its half and the idle back-off, paused,
// external ticker) are ticked both ways, each in a transaction rolled
// back; the queues that got a tick must be the same.
func TestTickPrecheckMatchesPgqTicker(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(7, 8))
	ages := []string{"0", "0.1 s", "0.3 s", "0.4 s", "0.6 s", "0.99 s", "1.01 s", "1.5 s", "3 s", "30 s", "59 s", "61 s"}
	for i := range 60 {
		q := fmt.Sprintf("q%02d", i)
		_, err := db.Pool.Exec(ctx, "select pgq.create_queue($1)", q)
		require.NoError(t, err)
		// ticker_max_lag 1 s, max_count 5, idle period 60 s.
		_, err = db.Pool.Exec(ctx, `select pgq.set_queue_config($1, 'ticker_max_lag', '1 s'),
			pgq.set_queue_config($1, 'ticker_max_count', '5')`, q)
		require.NoError(t, err)
		// Up to 3 more ticks, then the tick times: ages from the newest
		// back, each older than the one after it.
		for range rng.IntN(4) {
			var id int64
			require.NoError(t, db.Pool.QueryRow(ctx, "select pgq.force_tick($1)", q).Scan(&id))
			require.NoError(t, db.Pool.QueryRow(ctx, "select pgq.ticker($1)", q).Scan(&id)) // takes the forced tick
		}
		var ids []int64
		rows, err := db.Pool.Query(ctx, `select tick_id from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue
			where q.queue_name = $1 order by tick_id desc`, q)
		require.NoError(t, err)
		ids, err = pgx.CollectRows(rows, pgx.RowTo[int64])
		require.NoError(t, err)
		age := "interval '0'"
		for k, id := range ids {
			a := ages[rng.IntN(len(ages))]
			if k == 0 { // the newest: mostly young
				a = ages[rng.IntN(6)]
			}
			age = fmt.Sprintf("%s + interval '%s'", age, a)
			_, err = db.Pool.Exec(ctx, fmt.Sprintf(`update pgq.tick set tick_time = now() - (%s)
				where tick_id = $1 and tick_queue = (select queue_id from pgq.queue where queue_name = $2)`, age), id, q)
			require.NoError(t, err)
		}
		// New events since the last tick: 0, below or at max_count.
		for range []int{0, 0, 0, 0, 1, 4, 5, 7}[rng.IntN(8)] {
			_, err = db.Pool.Exec(ctx, "select pgq.insert_event($1, 't', 'd')", q)
			require.NoError(t, err)
		}
		switch rng.IntN(12) {
		case 0:
			_, err = db.Pool.Exec(ctx, "update pgq.queue set queue_ticker_paused = true where queue_name = $1", q)
		case 1:
			_, err = db.Pool.Exec(ctx, "update pgq.queue set queue_external_ticker = true where queue_name = $1", q)
		case 2:
			_, err = db.Pool.Exec(ctx, "delete from pgq.tick where tick_queue = (select queue_id from pgq.queue where queue_name = $1)", q)
		}
		require.NoError(t, err)
	}
	// All three in one transaction: one now() for every decision; each
	// undone by a savepoint.
	tx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	ticked := func(sql string) []string {
		_, err := tx.Exec(ctx, "savepoint s")
		require.NoError(t, err)
		defer func() { _, _ = tx.Exec(ctx, "rollback to savepoint s") }()
		rows, err := tx.Query(ctx, sql)
		require.NoError(t, err)
		var out []string
		var name *string
		var id, own *int64
		var retry *float64
		dest := []any{&name, &id}
		var due *float64
		if len(rows.FieldDescriptions()) == 5 {
			dest = append(dest, &own, &retry, &due) // sqlTick's own txid, next retry, next due
		}
		_, err = pgx.ForEachRow(rows, dest, func() error {
			if name != nil && id != nil {
				out = append(out, *name)
			}
			return nil
		})
		require.NoError(t, err)
		slices.Sort(out)
		return out
	}
	want := ticked(`select queue_name, pgq.ticker(queue_name) from pgq.queue
		where not queue_external_ticker and not queue_ticker_paused`)
	got := ticked(ticker.SQLTick)
	require.Equal(t, want, got)
	// And the pre-check alone lets through no more than those: idle
	// queues cost no pgq.ticker call.
	due := ticked(strings.Replace(ticker.SQLTick, "pgq.ticker(queue_name)", "0::int8", 1))
	require.Equal(t, want, due)
	var eligible int
	require.NoError(t, tx.QueryRow(ctx, "select count(*) from pgq.queue where not queue_external_ticker and not queue_ticker_paused").Scan(&eligible))
	t.Logf("%d of %d eligible queues tick", len(want), eligible)
	require.Greater(t, len(want), 5, "some queues tick")
	require.Less(t, len(want), eligible-5, "some do not")
}
