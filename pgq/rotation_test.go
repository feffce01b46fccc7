package pgq_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

// drain reads and finishes every ready batch, returning the events seen.
func (e *env) drain(t *testing.T) []*pgq.Event {
	t.Helper()
	var out []*pgq.Event
	for {
		info, err := pgq.NextBatch(e.ctx, e.pool, e.queue, e.cons)
		require.NoError(t, err)
		if info == nil {
			return out
		}
		out = append(out, e.events(t, info, pgq.ReadOptions{})...)
		_, err = pgq.FinishBatch(e.ctx, e.pool, info.ID)
		require.NoError(t, err)
	}
}

func (e *env) curTable(t *testing.T) int {
	t.Helper()
	var n int
	require.NoError(t, e.pool.QueryRow(e.ctx, "select queue_cur_table from pgq.queue where queue_name = $1", e.queue).Scan(&n))
	return n
}

// TestBulkInsertDuringRotationLosesNothing rotates the queue's event
// tables (step1 commit, then step2 commit, on another connection) after a
// bulk insert has read pgq.current_event_table and before its COPY, and
// moves the consumer past a tick taken after step2. Every event must still
// be delivered. Not parallel: it installs a package-wide test hook.
func TestBulkInsertDuringRotationLosesNothing(t *testing.T) {
	e := setup(t)
	require.NoError(t, pgq.SetQueueConfig(e.ctx, e.pool, e.queue, pgq.QueueConfig{RotationPeriod: pgq.Ptr(time.Millisecond)}))
	e.tick(t)
	require.Empty(t, e.drain(t))

	rotated := false
	var early []*pgq.Event
	t.Cleanup(pgq.SetBeforeCopyHook(func(ctx context.Context, queue, table string) {
		if queue != e.queue || rotated {
			return
		}
		rotated = true
		before := e.curTable(t)
		// Step1 is skipped while the slowest consumer's last tick may
		// still need the previous table: keep the consumer caught up.
		require.Eventually(t, func() bool {
			e.tick(t)
			early = append(early, e.drain(t)...)
			_, err := e.pool.Exec(ctx, "select pgq.maint_rotate_tables_step1($1)", e.queue)
			require.NoError(t, err)
			return e.curTable(t) != before
		}, time.Minute, 10*time.Millisecond, "rotation step1 never ran")
		_, err := e.pool.Exec(ctx, "select pgq.maint_rotate_tables_step2()")
		require.NoError(t, err)
		// The consumer's position is now a tick taken after step2.
		e.tick(t)
		early = append(early, e.drain(t)...)
	}))

	const n = 50
	evs := make([]pgq.EventData, n)
	for i := range evs {
		evs[i] = pgq.EventData{Type: pgq.T("bulk"), Data: pgq.T(fmt.Sprint(i))}
	}
	tx, err := e.pool.Begin(e.ctx)
	require.NoError(t, err)
	defer tx.Rollback(e.ctx)
	got, err := pgq.InsertEvents(e.ctx, tx, e.queue, slices.Values(evs))
	require.NoError(t, err)
	require.EqualValues(t, n, got)
	require.True(t, rotated, "the hook did not run")
	require.NoError(t, tx.Commit(e.ctx))
	require.Empty(t, early, "events seen before their transaction committed")

	var delivered []*pgq.Event
	for range 3 {
		e.tick(t)
		delivered = append(delivered, e.drain(t)...)
	}
	require.Len(t, delivered, n, "committed events not delivered")
	for i, ev := range delivered {
		require.Equal(t, pgq.T(fmt.Sprint(i)), ev.Data)
	}
}

// TestBulkInsertRefusesRepeatableRead: under REPEATABLE READ the event
// table would be read from a snapshot older than the transaction's id, so
// the bulk insert refuses before writing.
func TestBulkInsertRefusesRepeatableRead(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, iso := range []pgx.TxIsoLevel{pgx.RepeatableRead, pgx.Serializable} {
		tx, err := e.pool.BeginTx(e.ctx, pgx.TxOptions{IsoLevel: iso})
		require.NoError(t, err)
		_, err = pgq.InsertEvents(e.ctx, tx, e.queue, slices.Values([]pgq.EventData{{Data: pgq.T("x")}}))
		require.ErrorIs(t, err, pgq.ErrInvalidArgument, "isolation %s", iso)
		require.ErrorContains(t, err, "read committed")
		require.NoError(t, tx.Rollback(e.ctx))
	}
	tx, err := e.pool.BeginTx(e.ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	require.NoError(t, err)
	_, err = pgq.InsertEvents(e.ctx, tx, e.queue, slices.Values([]pgq.EventData{{Data: pgq.T("x")}}))
	require.NoError(t, err)
	require.NoError(t, tx.Commit(e.ctx))
}
