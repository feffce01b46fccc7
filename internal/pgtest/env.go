package pgtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/pgq"
)

// Env is what most integration tests start from: a database of their own
// with pgq, a pool on it, a queue with a registered consumer, and a context
// that ends with the test (or after two minutes).
type Env struct {
	Ctx      context.Context
	DB       *DB
	Pool     *pgxpool.Pool // DB.Pool
	Queue    string        // "q"
	Consumer string        // "c", registered on Queue
}

// NewEnv creates a fresh database with pgq (dropped when the test ends),
// queue "q" and consumer "c" registered on it.
func (c *Cluster) NewEnv(t testing.TB) *Env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	db := c.NewDB(t)
	e := &Env{Ctx: ctx, DB: db, Pool: db.Pool, Queue: "q", Consumer: "c"}
	if _, err := pgq.CreateQueue(ctx, e.Pool, e.Queue); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if _, err := pgq.RegisterConsumer(ctx, e.Pool, e.Queue, e.Consumer); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return e
}

// Tick forces a tick on the queue (pgq.force_tick and pgq.ticker() in
// separate transactions, see pgq.Tick) and returns its id.
func (e *Env) Tick(t testing.TB) int64 {
	t.Helper()
	id, err := pgq.Tick(e.Ctx, e.Pool, e.Queue)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return id
}

// Info returns the consumer's pgq.get_consumer_info row.
func (e *Env) Info(t testing.TB) pgq.ConsumerInfo {
	t.Helper()
	ci, err := pgq.GetConsumerInfo(e.Ctx, e.Pool, e.Queue, e.Consumer)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return ci
}

// Produce inserts n events into the queue in one transaction and returns
// their ids. mk makes event i; nil makes type "t" with data i in decimal.
func (e *Env) Produce(t testing.TB, n int, mk func(i int) pgq.EventData) []int64 {
	t.Helper()
	ids, err := e.TryProduce(n, mk)
	if err != nil {
		t.Fatalf("pgtest: produce: %v", err)
	}
	return ids
}

// TryProduce is Produce that returns the error, for tests that expect one
// or that produce from a goroutine other than the test's.
func (e *Env) TryProduce(n int, mk func(i int) pgq.EventData) ([]int64, error) {
	if mk == nil {
		mk = func(i int) pgq.EventData { return pgq.EventData{Type: pgq.T("t"), Data: pgq.T(fmt.Sprint(i))} }
	}
	var ids []int64
	err := pgx.BeginFunc(e.Ctx, e.Pool, func(tx pgx.Tx) error {
		ids = make([]int64, n)
		for i := range n {
			id, err := pgq.InsertEvent(e.Ctx, tx, e.Queue, mk(i))
			if err != nil {
				return err
			}
			ids[i] = id
		}
		return nil
	})
	return ids, err
}
