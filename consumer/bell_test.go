package consumer_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

// TestBell: a belled consumer of a shared queue takes no batch on ticks it
// was not rung for, catches up in one batch when rung, and keeps looking
// until the ringing transaction is consumed even when the ring arrives
// after the tick that missed it.
//
// Not parallel: at start the consumer reads every tick until it has
// consumed all that was committed before it heard the channel, which a
// transaction left open by a concurrent test would stretch.
func TestBell(t *testing.T) {
	e := setup(t)
	const channel = "bell_test_a"
	lastTick := func(name string) int64 {
		var id int64
		require.NoError(t, e.Pool.QueryRow(e.Ctx, `select s.sub_last_tick from pgq.subscription s
			join pgq.consumer c on c.co_id = s.sub_consumer where c.co_name = $1`, name).Scan(&id))
		return id
	}
	// tick ticks the queue and announces it, as the ticker package does.
	tick := func() int64 {
		id := e.Tick(t)
		_, err := e.Pool.Exec(e.Ctx, "select pg_notify($1, $2::bigint::text)", pgq.NotifyChannel(e.Queue), id)
		require.NoError(t, err)
		return id
	}
	event := func(target string) pgq.EventData {
		return pgq.EventData{Type: pgq.T("t"), Data: pgq.T("d"), Extra1: pgq.T(target)}
	}
	// produce inserts an event for target and, if ring, rings in the same
	// transaction; commit false leaves the transaction open.
	produce := func(target string, ring bool) (int64, pgx.Tx) {
		tx, err := e.Pool.Begin(e.Ctx)
		require.NoError(t, err)
		id, err := pgq.InsertEvent(e.Ctx, tx, e.Queue, event(target))
		require.NoError(t, err)
		if ring {
			_, err = tx.Exec(e.Ctx, "select pg_notify($1, txid_current()::text)", channel)
			require.NoError(t, err)
		}
		return id, tx
	}
	commit := func(tx pgx.Tx) { require.NoError(t, tx.Commit(e.Ctx)) }

	// The witness reads every tick, as consumers without a bell do.
	_, err := pgq.RegisterConsumer(e.Ctx, e.Pool, e.Queue, "witness")
	require.NoError(t, err)
	wcfg := e.cfg(t)
	wcfg.Name = "witness"
	e.start(t, wcfg, &collector{})

	var looks counter
	col := &collector{}
	cfg := e.cfg(t)
	cfg.Filter = pgq.Eq(pgq.FieldExtra1, "a")
	cfg.Bell = &consumer.Bell{Channel: channel, Every: time.Hour}
	cfg.Hooks.OnIdle = looks.inc
	e.start(t, cfg, col)
	looks.waitAbove(t, 0) // it looks once it hears the channel
	// It reads the next tick: it holds what was committed before.
	settled := tick()
	// The batch up to that tick covers the horizon (its snapshot's xmin):
	// no empty look is needed after it.
	require.Eventually(t, func() bool { return lastTick(e.Consumer) == settled }, 30*time.Second, 5*time.Millisecond)
	start := lastTick(e.Consumer)
	looksAtStart := looks.get()
	_, bs := col.snapshot()
	batchesAtStart := len(bs)

	// Ticks with rows for others only: the bell stays silent.
	var last int64
	for range 3 {
		_, tx := produce("b", false)
		commit(tx)
		last = tick()
	}
	require.Eventually(t, func() bool { return lastTick("witness") == last }, 30*time.Second, 5*time.Millisecond)
	require.Equal(t, start, lastTick(e.Consumer), "no batch taken on ticks it was not rung for")
	require.Equal(t, looksAtStart, looks.get(), "no look on ticks it was not rung for")

	// Rung: one batch catches up over every silent tick (the ring may come
	// before the tick holding its event: then a second batch has it).
	silent := last
	id, tx := produce("a", true)
	commit(tx)
	tick()
	col.waitIDs(t, []int64{id}, 30*time.Second)
	_, bs = col.snapshot()
	bs = bs[batchesAtStart:]
	require.NotEmpty(t, bs)
	require.LessOrEqual(t, len(bs), 2, "%+v", bs)
	require.Equal(t, start, bs[0].PrevTickID)
	require.GreaterOrEqual(t, bs[0].TickID, silent, "one batch from its last tick over every silent tick")

	// The ringing transaction commits after a tick taken while it was
	// open: the batch up to that tick misses it, and the consumer keeps
	// looking (on the next tick) instead of waiting for Every.
	id2, tx := produce("a", true)
	missed := tick()
	commit(tx)
	require.Eventually(t, func() bool { return lastTick(e.Consumer) == missed }, 30*time.Second, 5*time.Millisecond)
	require.NotContains(t, col.ids(), id2)
	tick()
	col.waitIDs(t, []int64{id2}, 30*time.Second)
}

// TestBellCoveredByBatch: when the batch a ring made the consumer take
// ends at a tick whose snapshot sees the ringing transaction, the consumer
// goes back to waiting at once, without the empty look (next_batch plus
// the coverage query) that would tell it so. Not parallel: a transaction
// of another test open across the first tick keeps the start horizon
// uncovered (see Bell), and the consumer rightly looks again.
func TestBellCoveredByBatch(t *testing.T) {
	e := setup(t)
	const channel = "bell_test_covered"
	var idle counter
	col := &collector{}
	cfg := e.cfg(t)
	cfg.PollInterval = time.Hour // ticks come by notification only
	cfg.Bell = &consumer.Bell{Channel: channel, Every: time.Hour}
	cfg.Hooks.OnIdle = idle.inc
	e.start(t, cfg, col)
	idle.waitAbove(t, 0) // the first look, once the channel is heard
	// ringTick commits an event that rings the bell, then ticks and
	// announces the tick.
	ringTick := func() int64 {
		var id int64
		_, err := pgxBegin(e, func(ctx context.Context, tx pgqTx) error {
			var err error
			if id, err = pgq.InsertEvent(ctx, tx, e.Queue, pgq.EventData{Type: pgq.T("t"), Data: pgq.T("d")}); err != nil {
				return err
			}
			_, err = tx.Exec(ctx, "select pg_notify($1, txid_current()::text)", channel)
			return err
		})
		require.NoError(t, err)
		tick := e.Tick(t)
		_, err = e.Pool.Exec(e.Ctx, "select pg_notify($1, $2::bigint::text)", pgq.NotifyChannel(e.Queue), tick)
		require.NoError(t, err)
		return id
	}
	first := ringTick()
	col.waitIDs(t, []int64{first}, 30*time.Second)
	// The horizon read at start is covered by the same batch.
	before := idle.get()
	// The loop does whatever follows the first batch (an empty look, or
	// nothing) before it takes the second.
	second := ringTick()
	col.waitIDs(t, []int64{first, second}, 30*time.Second)
	require.Equal(t, before, idle.get(), "empty looks after batches that covered their ring")
	_, bs := col.snapshot()
	for _, b := range bs {
		require.NotZero(t, b.Snapshot.Xmax, "batch %d carries its end tick's snapshot", b.ID)
	}
}

// TestBellRingsOutOfOrder: transactions commit in another order than
// their txids. Here B (the higher txid) commits and rings before a tick,
// and A (the lower) rings and commits after it; both rings are heard
// before the consumer looks. The batch up to that tick sees B but not A:
// the consumer must look again on the next tick for A's event, not take
// the highest ringing txid as standing for every ring (it then waited for
// Every: 30 s stalls in the copier bench).
func TestBellRingsOutOfOrder(t *testing.T) {
	e := setup(t)
	const channel = "bell_test_order"
	col := &collector{}
	cfg := e.cfg(t)
	cfg.PollInterval = time.Hour // looks come from notifications only
	cfg.Bell = &consumer.Bell{Channel: channel, Every: time.Hour}
	var idle counter
	cfg.Hooks.OnIdle = idle.inc
	e.start(t, cfg, col)
	idle.waitAbove(t, 0) // the channel is heard
	announce := func(tick int64) {
		_, err := e.Pool.Exec(e.Ctx, "select pg_notify($1, $2::bigint::text)", pgq.NotifyChannel(e.Queue), tick)
		require.NoError(t, err)
	}
	// Settle the start horizon first: the consumer takes the next tick.
	settled := e.Tick(t)
	announce(settled)
	require.Eventually(t, func() bool {
		var last int64
		require.NoError(t, e.Pool.QueryRow(e.Ctx, `select s.sub_last_tick from pgq.subscription s
			join pgq.consumer c on c.co_id = s.sub_consumer where c.co_name = $1`, e.Consumer).Scan(&last))
		return last == settled
	}, 30*time.Second, 5*time.Millisecond)

	begin := func() (pgx.Tx, int64) {
		tx, err := e.Pool.Begin(e.Ctx)
		require.NoError(t, err)
		t.Cleanup(func() { _ = tx.Rollback(context.WithoutCancel(e.Ctx)) })
		var txid int64
		require.NoError(t, tx.QueryRow(e.Ctx, "select txid_current()").Scan(&txid))
		return tx, txid
	}
	ringCommit := func(tx pgx.Tx) int64 {
		id, err := pgq.InsertEvent(e.Ctx, tx, e.Queue, pgq.EventData{Type: pgq.T("t"), Data: pgq.T("d")})
		require.NoError(t, err)
		_, err = tx.Exec(e.Ctx, "select pg_notify($1, txid_current()::text)", channel)
		require.NoError(t, err)
		require.NoError(t, tx.Commit(e.Ctx))
		return id
	}
	a, txA := begin()
	b, txB := begin()
	require.Less(t, txA, txB)
	evB := ringCommit(b)
	tick := e.Tick(t) // sees B, not A (still open)
	evA := ringCommit(a)
	announce(tick)
	col.waitIDs(t, []int64{evB}, 30*time.Second)
	require.NotContains(t, col.ids(), evA)
	announce(e.Tick(t))
	col.waitIDs(t, []int64{evB, evA}, 30*time.Second)
}

// TestBellEvery: a ring that never comes (lost, or never sent) delays the
// events by at most Every.
func TestBellEvery(t *testing.T) {
	t.Parallel()
	e := setup(t)
	col := &collector{}
	cfg := e.cfg(t)
	cfg.Bell = &consumer.Bell{Channel: "bell_test_every", Every: 200 * time.Millisecond}
	e.start(t, cfg, col)
	ids := e.Produce(t, 2, nil)
	e.Tick(t) // not announced, and nobody rings
	col.waitIDs(t, ids, 30*time.Second)
}

func TestBellConfig(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for name, mod := range map[string]func(*consumer.Config){
		"no channel":     func(c *consumer.Config) { c.Bell = &consumer.Bell{} },
		"long channel":   func(c *consumer.Config) { c.Bell = &consumer.Bell{Channel: string(make([]byte, 64))} },
		"negative every": func(c *consumer.Config) { c.Bell = &consumer.Bell{Channel: "x", Every: -1} },
		"no listen":      func(c *consumer.Config) { c.Bell = &consumer.Bell{Channel: "x"}; c.DisableListen = true },
		"min count":      func(c *consumer.Config) { c.Bell = &consumer.Bell{Channel: "x"}; c.MinCount = 10 },
	} {
		cfg := e.cfg(t)
		mod(&cfg)
		_, err := consumer.New(e.Pool, cfg, &collector{})
		require.Error(t, err, name)
		require.ErrorContains(t, err, "Bell", name)
	}
}

// TestBellRingBeforeStart: a ring sent before the consumer listened is
// lost, yet its events are consumed once ticked: the consumer looks until
// it has consumed everything committed before it heard the channel.
func TestBellRingBeforeStart(t *testing.T) {
	t.Parallel()
	e := setup(t)
	const channel = "bell_test_early"
	ids := e.Produce(t, 1, nil)
	_, err := e.Pool.Exec(e.Ctx, "select pg_notify($1, txid_current()::text)", channel) // nobody listens yet
	require.NoError(t, err)

	var looks counter
	col := &collector{}
	cfg := e.cfg(t)
	cfg.Bell = &consumer.Bell{Channel: channel, Every: time.Hour}
	cfg.Hooks.OnIdle = looks.inc
	e.start(t, cfg, col)
	looks.waitAbove(t, 0) // looked: no tick holds the event yet
	require.Empty(t, col.ids())
	id := e.Tick(t)
	_, err = e.Pool.Exec(e.Ctx, "select pg_notify($1, $2::bigint::text)", pgq.NotifyChannel(e.Queue), id)
	require.NoError(t, err)
	col.waitIDs(t, ids, 30*time.Second)
}
