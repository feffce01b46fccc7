package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/pgq-go/pgq/copier"
	"github.com/pgq-go/pgq/pgq"
)

const hubIndexUsage = `usage: pgqctl copy hub-index --hub DSN [--hub DSN...] [--pull-queue NAME]

Indexes the shared pull queue's event tables on every hub by target
(ev_extra1, ev_txid), so that each node's pull reads only its own rows
instead of scanning every node's. Copiers create the index themselves when
their role owns PgQ's event tables; otherwise they log a warning and this
command, run as the owner (usually the role that installed pgq), creates
it. Idempotent; shared routing only (per-target queues need no index).

Exit status: 0 done (or nothing to do); 1 failed; 2 usage error.
`

func runCopyHubIndex(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newCmdFlags("copy hub-index", hubIndexUsage, stderr)
	f.timeoutFlag(0)
	var hubs []string
	f.Var(stringList{&hubs}, "hub", "a hub shard as a `dsn` (repeatable)")
	pullQueue := f.String("pull-queue", "pull_queue", "the copiers' PullQueue")
	pos, err := f.parse(args)
	if err != nil {
		return parseFailure(err)
	}
	if len(pos) > 0 {
		return f.fail(usagef("unexpected argument %q", pos[0]))
	}
	if len(hubs) == 0 {
		return f.fail(usagef("give at least one --hub"))
	}
	if err := pgq.ValidateName("queue", *pullQueue); err != nil {
		return f.fail(usagef("%v", err))
	}
	ctx, cancel := f.context(ctx)
	defer cancel()
	failed := false
	for i, dsn := range hubs {
		err := func() error {
			conn, err := connect(ctx, dsn)
			if err != nil {
				return err
			}
			defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
			n, err := copier.IndexHubQueue(ctx, conn, *pullQueue)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "hub %d: queue %s: %d event tables indexed\n", i+1, *pullQueue, n)
			return nil
		}()
		if err != nil {
			var ue usageError
			if errors.As(err, &ue) {
				return f.fail(err)
			}
			fmt.Fprintf(stderr, "pgqctl copy hub-index: hub %d: %v\n", i+1, err)
			failed = true
		}
	}
	if failed {
		return 1
	}
	return 0
}
