package main

import (
	"context"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/pgq"
)

func init() {
	register("consumer", "register, unregister and rewind consumers", runConsumer)
}

const consumerUsage = `usage: pgqctl consumer <register|unregister|rewind> [flags] QUEUE CONSUMER

  register QUEUE CONSUMER          subscribe at the queue's latest tick (it sees
                                   only events ticked after this); an existing
                                   consumer keeps its position
  unregister QUEUE CONSUMER        remove the consumer and its retry events
  rewind QUEUE CONSUMER --tick N   reposition a registered consumer at tick N,
                                   dropping its open batch; it gets every event
                                   after N again (Skytools --rewind / --reset).
                                   An unknown consumer is an error: only
                                   register registers

Every subcommand takes --dsn (default $DATABASE_URL).
`

func runConsumer(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return subcommands(ctx, "consumer", consumerUsage, map[string]runFunc{
		"register":   runConsumerRegister,
		"unregister": runConsumerUnregister,
		"rewind":     runConsumerRewind,
	}, args, stdout, stderr)
}

// queueAndConsumer parses args and returns the two positional names.
func queueAndConsumer(f *cmdFlags, args []string) (queue, consumer string, code int, ok bool) {
	pos, err := f.parse(args)
	if err != nil {
		return "", "", parseFailure(err), false
	}
	switch {
	case len(pos) < 2:
		return "", "", f.fail(usagef("want QUEUE and CONSUMER")), false
	case len(pos) > 2:
		return "", "", f.fail(usagef("unexpected argument %q", pos[2])), false
	}
	if err := pgq.ValidateName("queue", pos[0]); err != nil {
		return "", "", f.fail(usagef("%v", err)), false
	}
	if err := pgq.ValidateName("consumer", pos[1]); err != nil {
		return "", "", f.fail(usagef("%v", err)), false
	}
	if err := f.needDSN(); err != nil {
		return "", "", f.fail(err), false
	}
	return pos[0], pos[1], 0, true
}

func runConsumerRegister(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newCmdFlags("consumer register", "usage: pgqctl consumer register [flags] QUEUE CONSUMER\n\nSubscribes CONSUMER to QUEUE at its latest tick.", stderr)
	f.dsnFlag()
	q, c, code, ok := queueAndConsumer(f, args)
	if !ok {
		return code
	}
	conn, err := connect(ctx, f.dsn)
	if err != nil {
		return f.fail(err)
	}
	defer conn.Close(context.Background())
	created, err := pgq.RegisterConsumer(ctx, conn, q, c)
	if err != nil {
		return f.fail(err)
	}
	info, err := pgq.GetConsumerInfo(ctx, conn, q, c)
	if err != nil {
		return f.fail(err)
	}
	if created {
		fmt.Fprintf(stdout, "registered %s on %s at tick %d\n", c, q, info.LastTick)
	} else {
		fmt.Fprintf(stdout, "%s was already registered on %s (position kept: tick %d)\n", c, q, info.LastTick)
	}
	return 0
}

func runConsumerUnregister(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newCmdFlags("consumer unregister", "usage: pgqctl consumer unregister [flags] QUEUE CONSUMER\n\nRemoves CONSUMER from QUEUE, with its retry events.", stderr)
	f.dsnFlag()
	q, c, code, ok := queueAndConsumer(f, args)
	if !ok {
		return code
	}
	conn, err := connect(ctx, f.dsn)
	if err != nil {
		return f.fail(err)
	}
	defer conn.Close(context.Background())
	removed, err := pgq.UnregisterConsumer(ctx, conn, q, c)
	if err != nil {
		return f.fail(err)
	}
	if !removed {
		// pgq.unregister_consumer answers 0 for a missing queue too: a
		// typo there would look like success while the real consumer
		// goes on pinning its queue.
		var exists bool
		if err := conn.QueryRow(ctx, sqlQueueExists, q).Scan(&exists); err != nil {
			return f.fail(err)
		}
		if !exists {
			return f.fail(fmt.Errorf("queue %s not found (consumer %s not unregistered): %w", q, c, pgq.ErrQueueNotFound))
		}
		fmt.Fprintf(stdout, "%s was not registered on %s\n", c, q)
		return 0
	}
	fmt.Fprintf(stdout, "unregistered %s from %s\n", c, q)
	return 0
}

func runConsumerRewind(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newCmdFlags("consumer rewind", "usage: pgqctl consumer rewind --tick N [flags] QUEUE CONSUMER\n\nPositions CONSUMER, registered on QUEUE, at tick N and drops its open\nbatch: it next receives the events after tick N. An unknown queue or\nconsumer is an error (pgqctl consumer register registers).", stderr)
	f.dsnFlag()
	tick := f.Int64("tick", 0, "tick id to position the consumer at (required; see last_tick in 'pgqctl status --json')")
	q, c, code, ok := queueAndConsumer(f, args)
	if !ok {
		return code
	}
	if *tick <= 0 {
		return f.fail(usagef("--tick N is required (a positive tick id)"))
	}
	conn, err := connect(ctx, f.dsn)
	if err != nil {
		return f.fail(err)
	}
	defer conn.Close(context.Background())
	was, err := rewindConsumer(ctx, conn, q, c, *tick)
	if err != nil {
		return f.fail(err)
	}
	fmt.Fprintf(stdout, "moved %s on %s to tick %d (was %s)\n", c, q, *tick, was)
	return 0
}

const sqlQueueExists = "select exists (select 1 from pgq.queue where queue_name = $1)"

// sqlSubscription says whether queue $1 exists, whether consumer $2 is
// subscribed to it, and at which tick.
const sqlSubscription = `select exists (select 1 from pgq.queue where queue_name = $1),
	s.sub_id is not null, s.sub_last_tick
	from (select 1) one
	left join (pgq.subscription s
		join pgq.queue q on q.queue_id = s.sub_queue
		join pgq.consumer c on c.co_id = s.sub_consumer)
	on q.queue_name = $1 and c.co_name = $2`

// sqlRegisterAt is pgq.register_consumer_at: it repositions a subscribed
// consumer (returns 0) and registers an unknown one (returns 1).
const sqlRegisterAt = "select pgq.register_consumer_at($1, $2, $3)"

// errNotRegistered names the queue and consumer a rewind did not touch.
func errNotRegistered(queue, consumer string) error {
	return fmt.Errorf("consumer %s is not registered on queue %s: nothing changed (only 'pgqctl consumer register' registers): %w",
		consumer, queue, pgq.ErrNotRegistered)
}

// rewindConsumer repositions a registered consumer at tick and returns
// where it was ("tick N"). It never registers one: pgq.register_consumer_at
// registers whatever it is given, so the check and the call share one
// transaction, which is rolled back when the call reports a registration
// (an unregister committed after the check). A row lock (select ... for
// update) would do too, but needs UPDATE rights on pgq.subscription, which
// pgq grants to no role.
func rewindConsumer(ctx context.Context, conn *pgx.Conn, queue, consumer string, tick int64) (string, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return "", err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var queueExists, subscribed bool
	var last *int64
	if err := tx.QueryRow(ctx, sqlSubscription, queue, consumer).Scan(&queueExists, &subscribed, &last); err != nil {
		return "", fmt.Errorf("read subscription %s/%s: %w", queue, consumer, err)
	}
	switch {
	case !queueExists:
		return "", fmt.Errorf("queue %s not found (consumer %s not rewound): %w", queue, consumer, pgq.ErrQueueNotFound)
	case !subscribed:
		return "", errNotRegistered(queue, consumer)
	}
	was := "no tick"
	if last != nil {
		was = fmt.Sprintf("tick %d", *last)
	}
	var created int
	if err := tx.QueryRow(ctx, sqlRegisterAt, queue, consumer, tick).Scan(&created); err != nil {
		return "", fmt.Errorf("rewind %s/%s to tick %d: %w", queue, consumer, tick, err)
	}
	if created != 0 {
		return "", errNotRegistered(queue, consumer) // rolled back
	}
	if err := tx.Commit(ctx); err != nil {
		return "", fmt.Errorf("rewind %s/%s to tick %d: %w", queue, consumer, tick, err)
	}
	return was, nil
}
