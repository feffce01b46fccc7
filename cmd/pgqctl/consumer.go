package main

import (
	"context"
	"fmt"
	"io"

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
  rewind QUEUE CONSUMER --tick N   (re)position the consumer at tick N, dropping
                                   its open batch; it gets every event after N
                                   again (Skytools --rewind / --reset)

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
		fmt.Fprintf(stdout, "%s was not registered on %s\n", c, q)
		return 0
	}
	fmt.Fprintf(stdout, "unregistered %s from %s\n", c, q)
	return 0
}

func runConsumerRewind(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newCmdFlags("consumer rewind", "usage: pgqctl consumer rewind --tick N [flags] QUEUE CONSUMER\n\nPositions CONSUMER on QUEUE at tick N (registering it if needed) and drops\nits open batch: it next receives the events after tick N.", stderr)
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
	before, err := pgq.GetConsumerInfo(ctx, conn, q, c)
	was := "unregistered"
	if err == nil {
		was = fmt.Sprintf("tick %d", before.LastTick)
	}
	if err := pgq.RegisterConsumerAt(ctx, conn, q, c, *tick); err != nil {
		return f.fail(err)
	}
	fmt.Fprintf(stdout, "moved %s on %s to tick %d (was %s)\n", c, q, *tick, was)
	return 0
}
