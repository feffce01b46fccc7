package pgq_test

import (
	"testing"

	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

func TestInsertTickConsume(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id, err := pgq.InsertEvent(e.ctx, e.pool, e.queue, pgq.EventData{Type: pgq.T("t"), Data: pgq.T("d"), Extra1: pgq.T("")})
	require.NoError(t, err)
	e.tick(t)
	info := e.next(t)
	for _, fetch := range []int{0, 1, 300} {
		evs := e.events(t, info, pgq.ReadOptions{FetchSize: fetch})
		require.Len(t, evs, 1)
		require.Equal(t, id, evs[0].ID)
		require.Equal(t, pgq.T("d"), evs[0].Data)
		require.Equal(t, pgq.T(""), evs[0].Extra1)
		require.Equal(t, pgq.Null, evs[0].Extra2)
	}
	ok, err := pgq.FinishBatch(e.ctx, e.pool, info.ID)
	require.NoError(t, err)
	require.True(t, ok)
}
