package pgq_test

import (
	"testing"
	"time"

	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

// TestRegisterConsumerNameRace: two first registrations of one consumer
// name on different queues race inside pgq.register_consumer (look up the
// name, then insert it); the loser's insert fails on the name's unique
// index once the winner commits. RegisterConsumer tries once more, which
// finds the name. The race is made deterministic by holding the winner's
// transaction open until the loser waits on it.
func TestRegisterConsumerNameRace(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, q := range []string{"qa", "qb"} {
		_, err := pgq.CreateQueue(e.ctx, e.pool, q)
		require.NoError(t, err)
	}
	const name = "racing_name"
	winner, err := e.pool.Begin(e.ctx)
	require.NoError(t, err)
	defer func() { _ = winner.Rollback(e.ctx) }()
	_, err = pgq.RegisterConsumer(e.ctx, winner, "qa", name)
	require.NoError(t, err)

	done := make(chan error, 1)
	go func() {
		_, err := pgq.RegisterConsumer(e.ctx, e.pool, "qb", name)
		done <- err
	}()
	// The loser waits for the winner's transaction on the name's index.
	require.Eventually(t, func() bool {
		var waiting bool
		require.NoError(t, e.pool.QueryRow(e.ctx, `select exists (select 1 from pg_stat_activity
			where datname = current_database() and wait_event_type = 'Lock' and query like '%register_consumer%')`).Scan(&waiting))
		return waiting
	}, 30*time.Second, 5*time.Millisecond)
	require.NoError(t, winner.Commit(e.ctx))
	require.NoError(t, <-done)
	for _, q := range []string{"qa", "qb"} {
		_, err := pgq.GetConsumerInfo(e.ctx, e.pool, q, name)
		require.NoError(t, err, q)
	}
}
