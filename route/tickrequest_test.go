package route_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/route"
	"github.com/pgq-go/pgq/urlenc"
	"github.com/stretchr/testify/require"
)

// TestSenderRequestTick: with RequestTick every send path notifies the
// ticker's request channel, at commit; without it none does.
func TestSenderRequestTick(t *testing.T) {
	t.Parallel()
	e := cluster.NewEnv(t)
	listener, err := pgx.Connect(e.Ctx, e.DB.DSN)
	require.NoError(t, err)
	defer listener.Close(e.Ctx)
	_, err = listener.Exec(e.Ctx, `listen "`+pgq.TickRequestChannel+`"`)
	require.NoError(t, err)
	// A sentinel notification after each send tells "none came" from "not
	// yet": notifications arrive in commit order.
	next := func() string {
		t.Helper()
		_, err := e.Pool.Exec(e.Ctx, "select pg_notify($1, 'sentinel')", pgq.TickRequestChannel)
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(e.Ctx, 30*time.Second)
		defer cancel()
		n, err := listener.WaitForNotification(ctx)
		require.NoError(t, err)
		if n.Payload != "sentinel" {
			s, err := listener.WaitForNotification(ctx)
			require.NoError(t, err)
			require.Equal(t, "sentinel", s.Payload)
		}
		return n.Payload
	}
	msgs := []route.Message{{Targets: []string{"n2"}, Row: urlenc.Fields{"id": "1"}}}
	for _, request := range []bool{false, true} {
		s := route.Sender{Queue: e.Queue, RequestTick: request}
		want := "sentinel"
		if request {
			want = e.Queue
		}
		for name, send := range map[string]func(tx pgx.Tx) error{
			"Send": func(tx pgx.Tx) error {
				_, err := s.Send(e.Ctx, tx, []string{"n2"}, urlenc.Fields{"id": "1"})
				return err
			},
			"SendBulk": func(tx pgx.Tx) error { _, err := s.SendBulk(e.Ctx, tx, msgs); return err },
			"AddToBatch": func(tx pgx.Tx) error {
				b := &pgx.Batch{}
				require.NoError(t, s.AddToBatch(b, msgs...))
				return tx.SendBatch(e.Ctx, b).Close()
			},
		} {
			require.NoError(t, pgx.BeginFunc(e.Ctx, e.Pool, send), name)
			require.Equal(t, want, next(), "%s RequestTick=%v", name, request)
		}
	}
}
