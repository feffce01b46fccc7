package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

func TestQueueAdmin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := cluster.NewDB(t)

	// create with settings: flags before or after the name.
	code, out, errOut := pgqctl(t, "queue", "create", "orders", "--dsn", db.DSN, "--ticker-max-lag", "0.5", "--ticker-max-count", "50")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "created queue orders")
	require.Contains(t, out, "ticker_max_count    50")
	q, err := pgq.GetQueueInfo(ctx, db.Pool, "orders")
	require.NoError(t, err)
	require.Equal(t, 500*time.Millisecond, q.TickerMaxLag)
	require.Equal(t, 50, q.TickerMaxCount)
	require.NotZero(t, q.LastTickID, "created with its first tick")

	code, out, _ = pgqctl(t, "queue", "create", "--dsn", db.DSN, "orders")
	require.Equal(t, 0, code)
	require.Contains(t, out, "queue orders already exists")

	// config changes exactly the given settings.
	code, out, errOut = pgqctl(t, "queue", "config", "orders", "--dsn", db.DSN, "--json",
		"--ticker-idle-period", "10s", "--rotation-period", "1h", "--ticker-paused")
	require.Equal(t, 0, code, errOut)
	var c queueConfigJSON
	require.NoError(t, json.Unmarshal([]byte(out), &c), out)
	require.Equal(t, queueConfigJSON{
		Name: "orders", TickerMaxCount: 50, TickerMaxLag: seconds(500 * time.Millisecond),
		TickerIdlePeriod: seconds(10 * time.Second), TickerPaused: true, RotationPeriod: seconds(time.Hour),
	}, c)
	q, err = pgq.GetQueueInfo(ctx, db.Pool, "orders")
	require.NoError(t, err)
	require.Equal(t, 10*time.Second, q.TickerIdlePeriod)
	require.Equal(t, time.Hour, q.RotationPeriod)
	require.True(t, q.TickerPaused)

	code, _, errOut = pgqctl(t, "queue", "config", "orders", "--dsn", db.DSN,
		"--ticker-paused=false", "--ticker-max-lag", "0", "--external-ticker")
	require.Equal(t, 0, code, errOut)
	q, err = pgq.GetQueueInfo(ctx, db.Pool, "orders")
	require.NoError(t, err)
	require.False(t, q.TickerPaused)
	require.True(t, q.ExternalTicker)
	require.Zero(t, q.TickerMaxLag)
	require.Equal(t, 10*time.Second, q.TickerIdlePeriod, "unchanged")

	// config without flags only prints.
	code, out, _ = pgqctl(t, "queue", "config", "orders", "--dsn", db.DSN)
	require.Equal(t, 0, code)
	require.Regexp(t, `ticker_idle_period\s+10s`, out)

	code, _, errOut = pgqctl(t, "queue", "config", "nope", "--dsn", db.DSN)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "queue not found")

	// drop refuses while consumers are registered, unless --force.
	_, err = pgq.RegisterConsumer(ctx, db.Pool, "orders", "billing")
	require.NoError(t, err)
	code, _, errOut = pgqctl(t, "queue", "drop", "orders", "--dsn", db.DSN)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "[billing]")
	_, err = pgq.GetQueueInfo(ctx, db.Pool, "orders")
	require.NoError(t, err, "still there")
	code, out, errOut = pgqctl(t, "queue", "drop", "orders", "--force", "--dsn", db.DSN)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "dropped queue orders")
	_, err = pgq.GetQueueInfo(ctx, db.Pool, "orders")
	require.ErrorIs(t, err, pgq.ErrQueueNotFound)

	code, _, errOut = pgqctl(t, "queue", "drop", "orders", "--dsn", db.DSN)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "pgqctl queue drop:")
}

func TestConsumerAdmin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := cluster.NewDB(t)
	_, err := pgq.CreateQueue(ctx, db.Pool, "q")
	require.NoError(t, err)
	first, err := pgq.GetQueueInfo(ctx, db.Pool, "q")
	require.NoError(t, err)

	code, out, errOut := pgqctl(t, "consumer", "register", "--dsn", db.DSN, "q", "c")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "registered c on q at tick")
	info, err := pgq.GetConsumerInfo(ctx, db.Pool, "q", "c")
	require.NoError(t, err)
	require.Equal(t, first.LastTickID, info.LastTick)

	// Two more ticks with events; c consumes them.
	for range 2 {
		_, err = pgq.InsertEvent(ctx, db.Pool, "q", pgq.EventData{Data: pgq.T("x")})
		require.NoError(t, err)
		_, err = pgq.Tick(ctx, db.Pool, "q")
		require.NoError(t, err)
	}
	for {
		b, err := pgq.NextBatch(ctx, db.Pool, "q", "c")
		require.NoError(t, err)
		if b == nil {
			break
		}
		_, err = pgq.FinishBatch(ctx, db.Pool, b.ID)
		require.NoError(t, err)
	}
	info, err = pgq.GetConsumerInfo(ctx, db.Pool, "q", "c")
	require.NoError(t, err)
	require.Greater(t, info.LastTick, first.LastTickID)

	code, out, _ = pgqctl(t, "consumer", "register", "--dsn", db.DSN, "q", "c")
	require.Equal(t, 0, code)
	require.Contains(t, out, "c was already registered on q (position kept")

	// rewind to the first tick: both events come back.
	code, out, errOut = pgqctl(t, "consumer", "rewind", "q", "c", "--tick", itoa(first.LastTickID), "--dsn", db.DSN)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "moved c on q to tick "+itoa(first.LastTickID)+" (was tick "+itoa(info.LastTick)+")")
	info, err = pgq.GetConsumerInfo(ctx, db.Pool, "q", "c")
	require.NoError(t, err)
	require.Equal(t, first.LastTickID, info.LastTick)
	var got int
	for {
		b, err := pgq.NextBatch(ctx, db.Pool, "q", "c")
		require.NoError(t, err)
		if b == nil {
			break
		}
		evs, err := pgq.GetBatchEvents(ctx, db.Pool, b.ID)
		require.NoError(t, err)
		got += len(evs)
		_, err = pgq.FinishBatch(ctx, db.Pool, b.ID)
		require.NoError(t, err)
	}
	require.Equal(t, 2, got)

	code, _, errOut = pgqctl(t, "consumer", "rewind", "q", "c", "--tick", "999999", "--dsn", db.DSN)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "pgqctl consumer rewind:")

	code, out, errOut = pgqctl(t, "consumer", "unregister", "--dsn", db.DSN, "q", "c")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "unregistered c from q")
	_, err = pgq.GetConsumerInfo(ctx, db.Pool, "q", "c")
	require.ErrorIs(t, err, pgq.ErrNotRegistered)
	code, out, _ = pgqctl(t, "consumer", "unregister", "--dsn", db.DSN, "q", "c")
	require.Equal(t, 0, code)
	require.Contains(t, out, "c was not registered on q")

	code, _, errOut = pgqctl(t, "consumer", "register", "--dsn", db.DSN, "nope", "c")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "not found")
}

// TestUsageErrors: bad command lines exit 2 with a message, never a stack
// trace, and never reach the database (the DSN points nowhere).
func TestUsageErrors(t *testing.T) {
	t.Parallel()
	const dsn = "postgres://nobody@127.0.0.1:1/none"
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"status", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"status", "--dsn", dsn, "extra"}, `unexpected argument "extra"`},
		{[]string{"status", "--dsn", dsn, "--max-ticker-lag", "soon"}, `invalid value "soon" for flag -max-ticker-lag`},
		{[]string{"status", "--dsn", "host=x port=notaport"}, "invalid connection string"},
		{[]string{"queue"}, "usage: pgqctl queue"},
		{[]string{"queue", "rename"}, `unknown subcommand "rename"`},
		{[]string{"queue", "create", "--dsn", dsn}, "missing queue"},
		{[]string{"queue", "create", "--dsn", dsn, "a", "b"}, `unexpected argument "b"`},
		{[]string{"queue", "create", "--dsn", dsn, "bad\nname"}, "invalid name"},
		{[]string{"queue", "config", "--dsn", dsn, "q", "--ticker-max-lag", "-1"}, "non-negative"},
		{[]string{"queue", "config", "--dsn", dsn, "q", "--ticker-max-count", "0"}, "at least 1"},
		{[]string{"queue", "config", "--dsn", dsn, "q", "--ticker-paused=maybe"}, "want true or false"},
		{[]string{"queue", "drop", "--dsn", dsn, "--force=2", "q"}, "invalid boolean"},
		{[]string{"consumer"}, "usage: pgqctl consumer"},
		{[]string{"consumer", "register", "--dsn", dsn, "q"}, "want QUEUE and CONSUMER"},
		{[]string{"consumer", "rewind", "--dsn", dsn, "q", "c"}, "--tick N is required"},
		{[]string{"consumer", "rewind", "--dsn", dsn, "q", "c", "--tick", "x"}, "invalid value"},
	} {
		code, _, errOut := pgqctl(t, tc.args...)
		require.Equal(t, exitUsage, code, "%q: %s", tc.args, errOut)
		require.Contains(t, errOut, tc.msg, "%q", tc.args)
	}
	// --help is not an error.
	for _, args := range [][]string{{"status", "--help"}, {"queue", "--help"}, {"queue", "config", "-h"}, {"consumer", "help"}, {"help", "status"}} {
		code, out, errOut := pgqctl(t, args...)
		require.Equal(t, 0, code, "%q", args)
		require.Contains(t, out+errOut, "usage: pgqctl", "%q", args)
	}
}

// TestNoDSN: without --dsn, DATABASE_URL is used; without either, a usage
// error. (Not parallel: it sets the environment.)
func TestNoDSN(t *testing.T) {
	db := cluster.NewDB(t)
	t.Setenv("DATABASE_URL", "")
	code, _, errOut := pgqctl(t, "status")
	require.Equal(t, exitUsage, code)
	require.Contains(t, errOut, "no database: give --dsn or set DATABASE_URL")
	code, _, errOut = pgqctl(t, "queue", "create", "q")
	require.Equal(t, exitUsage, code)
	require.Contains(t, errOut, "no database")

	t.Setenv("DATABASE_URL", db.DSN)
	code, out, errOut := pgqctl(t, "queue", "create", "q")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "created queue q")
	code, _, _ = pgqctl(t, "status")
	require.Equal(t, 0, code)
}

// TestQueueConfigRefusesNonsense: values PgQ would take but that make no
// sense (or that it would refuse halfway) are refused before anything is
// changed.
func TestQueueConfigRefusesNonsense(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := cluster.NewDB(t)
	code, _, errOut := pgqctl(t, "queue", "create", "orders", "--dsn", db.DSN, "--ticker-max-lag", "0.5")
	require.Equal(t, 0, code, errOut)
	settings := func() pgq.QueueInfo {
		q, err := pgq.GetQueueInfo(ctx, db.Pool, "orders")
		require.NoError(t, err)
		// the settings only, not the figures that move with time
		return pgq.QueueInfo{Name: q.Name, RotationPeriod: q.RotationPeriod, ExternalTicker: q.ExternalTicker,
			TickerPaused: q.TickerPaused, TickerMaxCount: q.TickerMaxCount, TickerMaxLag: q.TickerMaxLag,
			TickerIdlePeriod: q.TickerIdlePeriod}
	}
	before := settings()
	require.Equal(t, 500*time.Millisecond, before.TickerMaxLag)

	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--rotation-period", "0s"}, "--rotation-period 0s: rotation_period must be at least 1s"},
		{[]string{"--rotation-period", "0"}, "rotation_period must be at least 1s"},
		{[]string{"--rotation-period", "0.5"}, "--rotation-period 500ms: rotation_period must be at least 1s"},
		{[]string{"--rotation-period", "-2h"}, `"-2h" is negative`},
		{[]string{"--ticker-idle-period", "0"}, "--ticker-idle-period 0s: ticker_idle_period must be at least 1ms"},
		{[]string{"--ticker-max-lag", "-1"}, "non-negative"},
		{[]string{"--ticker-max-lag", "-1s"}, `"-1s" is negative`},
		{[]string{"--ticker-max-count", "0"}, "--ticker-max-count 0: ticker_max_count must be at least 1"},
		{[]string{"--ticker-max-count", "-5"}, "ticker_max_count must be at least 1"},
		{[]string{"--ticker-max-count", "3000000000"}, "ticker_max_count must be at most 2147483647"},
		// One bad value refuses the good ones given with it.
		{[]string{"--ticker-max-lag", "2", "--ticker-paused", "--rotation-period", "0"}, "rotation_period must be at least 1s"},
	} {
		args := append([]string{"queue", "config", "orders", "--dsn", db.DSN}, tc.args...)
		code, out, errOut := pgqctl(t, args...)
		require.Equal(t, exitUsage, code, "%q: %s%s", tc.args, out, errOut)
		require.Contains(t, errOut, tc.msg, "%q", tc.args)
		if !strings.Contains(errOut, "invalid value") { // refused by the flag itself: no queue yet
			require.Contains(t, errOut, "pgqctl queue config: queue orders not changed: ", "%q", tc.args)
		}
		require.Equal(t, before, settings(), "%q: nothing changed", tc.args)
	}

	// create with a bad setting creates nothing.
	code, _, errOut = pgqctl(t, "queue", "create", "other", "--dsn", db.DSN, "--rotation-period", "0")
	require.Equal(t, exitUsage, code, errOut)
	require.Contains(t, errOut, "pgqctl queue create: queue other not created: --rotation-period 0s: rotation_period must be at least 1s")
	_, err := pgq.GetQueueInfo(ctx, db.Pool, "other")
	require.ErrorIs(t, err, pgq.ErrQueueNotFound)

	// The smallest sensible values are taken.
	code, _, errOut = pgqctl(t, "queue", "config", "orders", "--dsn", db.DSN,
		"--rotation-period", "1s", "--ticker-idle-period", "1ms", "--ticker-max-count", "1", "--ticker-max-lag", "0")
	require.Equal(t, 0, code, errOut)
	after := settings()
	require.Equal(t, time.Second, after.RotationPeriod)
	require.Equal(t, time.Millisecond, after.TickerIdlePeriod)
	require.Equal(t, 1, after.TickerMaxCount)
	require.Zero(t, after.TickerMaxLag)
}
