package route_test

import (
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/route"
	"github.com/pgq-go/pgq/urlenc"
	"github.com/stretchr/testify/require"
)

// sent commits f's sends and returns the events a consumer then reads.
func sent(t *testing.T, e *pgtest.Env, f func(tx pgx.Tx) (int64, error)) (int64, []*pgq.Event) {
	t.Helper()
	var n int64
	require.NoError(t, pgx.BeginFunc(e.Ctx, e.Pool, func(tx pgx.Tx) error {
		var err error
		n, err = f(tx)
		return err
	}))
	e.Tick(t)
	info, err := pgq.NextBatch(e.Ctx, e.Pool, e.Queue, e.Consumer)
	require.NoError(t, err)
	require.NotNil(t, info)
	evs, err := pgq.NewBatch(e.Pool, e.Queue, e.Consumer, *info, pgq.ReadOptions{}).All(e.Ctx)
	require.NoError(t, err)
	_, err = pgq.FinishBatch(e.Ctx, e.Pool, info.ID)
	require.NoError(t, err)
	return n, evs
}

// TestSend: one event per target, in the seed's format, counted.
func TestSend(t *testing.T) {
	t.Parallel()
	e := cluster.NewEnv(t)
	s := route.Sender{Queue: e.Queue, Origin: "n1"}
	n, evs := sent(t, e, func(tx pgx.Tx) (int64, error) {
		return s.Send(e.Ctx, tx, []string{"n2", "n3"}, urlenc.Fields{"action": "ins", "id": 7})
	})
	require.EqualValues(t, 2, n)
	require.Len(t, evs, 2)
	for i, target := range []string{"n2", "n3"} {
		require.Equal(t, pgq.EventData{Type: pgq.T("copy"), Data: pgq.T(""), Extra1: pgq.T(target),
			Extra2: pgq.T("action=ins&id=7"), Extra3: pgq.T("n1")}, evs[i].EventData)
	}

	// Type and no origin.
	s = route.Sender{Queue: e.Queue, Type: "I:id"}
	n, evs = sent(t, e, func(tx pgx.Tx) (int64, error) {
		return s.Send(e.Ctx, tx, []string{"n4"}, route.Raw("id=1"))
	})
	require.EqualValues(t, 1, n)
	require.Len(t, evs, 1)
	require.Equal(t, pgq.EventData{Type: pgq.T("I:id"), Data: pgq.T(""), Extra1: pgq.T("n4"), Extra2: pgq.T("id=1")}, evs[0].EventData)
}

// TestSendBulk: every message's targets, in order, with per-message types.
func TestSendBulk(t *testing.T) {
	t.Parallel()
	e := cluster.NewEnv(t)
	s := route.Sender{Queue: e.Queue, Origin: "n1"}
	n, evs := sent(t, e, func(tx pgx.Tx) (int64, error) {
		return s.SendBulk(e.Ctx, tx, []route.Message{
			{Targets: []string{"n2"}, Row: route.Raw("a")},
			{Targets: []string{"n3", "n4"}, Row: route.Raw("b"), Type: "U:id"},
		})
	})
	require.EqualValues(t, 3, n)
	require.Len(t, evs, 3)
	var got [][3]string
	for _, ev := range evs {
		got = append(got, [3]string{ev.Type.String, ev.Extra1.String, ev.Extra2.String})
	}
	require.Equal(t, [][3]string{{"copy", "n2", "a"}, {"U:id", "n3", "b"}, {"U:id", "n4", "b"}}, got)
}

// TestSendRefusesBeforeWriting: bad targets or payloads fail the call
// before any event is written, and the transaction stays usable.
func TestSendRefusesBeforeWriting(t *testing.T) {
	t.Parallel()
	e := cluster.NewEnv(t)
	s := route.Sender{Queue: e.Queue}
	n, evs := sent(t, e, func(tx pgx.Tx) (int64, error) {
		_, err := s.Send(e.Ctx, tx, nil, route.Raw("x"))
		require.ErrorIs(t, err, route.ErrInvalidNode)
		_, err = s.Send(e.Ctx, tx, []string{"n2", "n2"}, route.Raw("x"))
		require.ErrorIs(t, err, route.ErrInvalidNode)
		_, err = s.Send(e.Ctx, tx, []string{"bad node!"}, route.Raw("x"))
		require.ErrorIs(t, err, route.ErrInvalidNode)
		_, err = s.Send(e.Ctx, tx, []string{"n2"}, route.Raw("nul\x00"))
		require.ErrorIs(t, err, urlenc.ErrInvalid)
		_, err = s.SendBulk(e.Ctx, tx, []route.Message{{Targets: []string{"n2"}, Row: route.Raw("ok")},
			{Targets: []string{"n3"}, Row: route.Raw("\xff")}})
		require.ErrorIs(t, err, urlenc.ErrInvalid)
		require.ErrorContains(t, err, "message 1")
		_, err = s.SendBulk(e.Ctx, tx, []route.Message{{Targets: []string{"n2"}}})
		require.ErrorIs(t, err, urlenc.ErrInvalid, "no row")
		_, err = route.Sender{Queue: e.Queue, Type: "I:\x00"}.Send(e.Ctx, tx, []string{"n2"}, route.Raw("x"))
		require.ErrorIs(t, err, urlenc.ErrInvalid, "NUL in the event type")
		_, err = route.Sender{Queue: e.Queue, Origin: "\xff"}.Send(e.Ctx, tx, []string{"n2"}, route.Raw("x"))
		require.ErrorIs(t, err, urlenc.ErrInvalid, "invalid UTF-8 origin")
		return s.Send(e.Ctx, tx, []string{"n2"}, route.Raw("after"))
	})
	require.EqualValues(t, 1, n)
	require.Len(t, evs, 1, "only the valid send wrote")
	require.Equal(t, "after", evs[0].Extra2.String)
}
