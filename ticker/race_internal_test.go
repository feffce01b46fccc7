package ticker

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

// TestForceEnded: the race watch forces a tick only on a queue one of
// whose ended watched transactions wrote an event to it. A committed
// transaction that wrote elsewhere, an aborted one that wrote to the
// queue, and one still running force nothing; the ended ones leave the
// watch, the running one stays. When the role cannot read a queue's
// event tables, every queue with an ended transaction is ticked (a tick
// too many, never events left waiting); when it cannot force them either,
// they stay watched for the next round.
func TestForceEnded(t *testing.T) {
	c, err := pgtest.Start()
	require.NoError(t, err)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := c.NewDB(t)
	for _, q := range []string{"a", "b", "c d"} {
		_, err := pgq.CreateQueue(ctx, db.Pool, q)
		require.NoError(t, err)
	}
	_, err = db.Pool.Exec(ctx, "create table other (x int)")
	require.NoError(t, err)
	txid := func(tx pgx.Tx) int64 {
		var x int64
		require.NoError(t, tx.QueryRow(ctx, "select txid_current()").Scan(&x))
		return x
	}
	// wrote: committed, an event in a. elsewhere: committed, no event.
	// aborted: an event in "c d", rolled back. running: an event in "c d",
	// still open.
	var wrote, elsewhere int64
	require.NoError(t, pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		_, err := pgq.InsertEvent(ctx, tx, "a", pgq.EventData{Type: pgq.T("t"), Data: pgq.T("x")})
		wrote = txid(tx)
		return err
	}))
	require.NoError(t, pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "insert into other values (1)")
		elsewhere = txid(tx)
		return err
	}))
	tx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	_, err = pgq.InsertEvent(ctx, tx, "c d", pgq.EventData{Type: pgq.T("t"), Data: pgq.T("x")})
	require.NoError(t, err)
	aborted := txid(tx)
	require.NoError(t, tx.Rollback(ctx))
	running, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = running.Rollback(ctx) }()
	_, err = pgq.InsertEvent(ctx, running, "c d", pgq.EventData{Type: pgq.T("t"), Data: pgq.T("x")})
	require.NoError(t, err)
	open := txid(running)

	seq := func(q string) int64 {
		var v int64
		require.NoError(t, db.Pool.QueryRow(ctx, `select coalesce(pg_sequence_last_value(queue_event_seq::regclass), 0)
			from pgq.queue where queue_name = $1`, q).Scan(&v))
		return v
	}
	forced := func(before map[string]int64) []string {
		var out []string
		for _, q := range []string{"a", "b", "c d"} {
			if seq(q)-before[q] >= 1000 { // force_tick's jump
				out = append(out, q)
			}
		}
		return out
	}
	newWorker := func() *worker {
		return &worker{st: &stats{}, log: slog.New(slog.DiscardHandler), watch: map[string][]int64{
			"a": {wrote, elsewhere}, "b": {elsewhere}, "c d": {aborted, open}, "gone": {wrote},
		}}
	}
	try := func(dsn string) (*worker, []string, error) {
		conn, err := pgx.Connect(ctx, dsn)
		require.NoError(t, err)
		defer conn.Close(ctx)
		w := newWorker()
		before := map[string]int64{"a": seq("a"), "b": seq("b"), "c d": seq("c d")}
		err = w.forceEnded(ctx, conn)
		return w, forced(before), err
	}
	run := func(dsn string) (*worker, []string) {
		w, got, err := try(dsn)
		require.NoError(t, err)
		return w, got
	}

	w, got := run(db.DSN)
	require.Equal(t, []string{"a"}, got)
	require.Equal(t, map[string][]int64{"c d": {open}}, w.watch)
	require.Equal(t, int64(1), w.st.get().RaceTicks)

	// A role that cannot read the queues' event tables.
	role := fmt.Sprintf("noread_%d", os.Getpid())
	_, err = db.Pool.Exec(ctx, "create role "+role+" login in role pgq_admin")
	require.NoError(t, err)
	defer func() {
		_, _ = db.Pool.Exec(context.Background(), "drop owned by "+role)
		_, _ = db.Pool.Exec(context.Background(), "drop role if exists "+role)
	}()
	rows, err := db.Pool.Query(ctx, "select queue_data_pfx from pgq.queue")
	require.NoError(t, err)
	pfxs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	for _, p := range pfxs {
		_, err := db.Pool.Exec(ctx, "revoke select on "+quoteQualified(p)+" from public, pgq_reader, pgq_admin")
		require.NoError(t, err)
	}
	dsn := strings.Replace(db.DSN, "user=postgres", "user="+role, 1)
	require.NotEqual(t, db.DSN, dsn)
	w, got = run(dsn)
	require.Equal(t, []string{"a", "b", "c d"}, got, "every queue with an ended transaction ticked")
	require.Equal(t, map[string][]int64{"c d": {open}}, w.watch)
	require.Equal(t, int64(3), w.st.get().RaceTicks)

	// Nor can it force a tick: the round fails, and the ended
	// transactions stay watched for the next round (only the dropped
	// queue's is let go), none forced.
	_, err = db.Pool.Exec(ctx, "revoke execute on function pgq.force_tick(text) from public, pgq_reader, pgq_admin")
	require.NoError(t, err)
	w, got, err = try(dsn)
	require.Error(t, err)
	require.Empty(t, got)
	require.Equal(t, map[string][]int64{"a": {wrote, elsewhere}, "b": {elsewhere}, "c d": {aborted, open}}, w.watch)
	require.Zero(t, w.st.get().RaceTicks)
}
