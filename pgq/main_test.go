package pgq_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

var cluster *pgtest.Cluster

func TestMain(m *testing.M) {
	os.Exit(pgtest.Main(m, &cluster, pgtest.ExamplesDB("pgq_examples")))
}

type env struct {
	ctx   context.Context
	db    *pgtest.DB
	pool  *pgxpool.Pool
	queue string
	cons  string
}

// setup gives a test its own database with a queue and a registered consumer.
func setup(t *testing.T) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	db := cluster.NewDB(t)
	e := &env{ctx: ctx, db: db, pool: db.Pool, queue: "q", cons: "c"}
	_, err := pgq.CreateQueue(ctx, e.pool, e.queue)
	require.NoError(t, err)
	_, err = pgq.RegisterConsumer(ctx, e.pool, e.queue, e.cons)
	require.NoError(t, err)
	return e
}

// tick forces a tick and returns its id.
func (e *env) tick(t *testing.T) int64 {
	t.Helper()
	id, err := pgq.Tick(e.ctx, e.pool, e.queue)
	require.NoError(t, err)
	return id
}

// next opens the next batch, which must exist.
func (e *env) next(t *testing.T) *pgq.BatchInfo {
	t.Helper()
	b, err := pgq.NextBatch(e.ctx, e.pool, e.queue, e.cons)
	require.NoError(t, err)
	require.NotNil(t, b, "expected a batch")
	return b
}

func (e *env) events(t *testing.T, info *pgq.BatchInfo, o pgq.ReadOptions) []*pgq.Event {
	t.Helper()
	evs, err := pgq.NewBatch(e.pool, e.queue, e.cons, *info, o).All(e.ctx)
	require.NoError(t, err)
	return evs
}
