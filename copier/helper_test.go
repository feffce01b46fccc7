package copier_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/apply"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/copier"
)

// The fault tests re-run this test binary as a child process running one
// targeted-copy node, which the parent kills with SIGKILL.
const helperEnv = "PGQ_COPIER_HELPER"

// runNodeProcess runs one targeted-copy node until it is killed.
func runNodeProcess(ctx context.Context) int {
	local, err := pgxpool.New(ctx, os.Getenv("LOCAL_DSN"))
	if err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	hub, err := pgxpool.New(ctx, os.Getenv("HUB_DSN"))
	if err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	ra, err := apply.NewRowApplier("rows", []string{"id"})
	if err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	tc, err := copier.New(copier.Config{
		Node: os.Getenv("NODE"), Local: local, Hubs: []*pgxpool.Pool{hub}, Applier: ra,
		PollInterval: 20 * time.Millisecond, LazyFetch: 7,
		ErrorBackoff: consumer.Backoff{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond},
	})
	if err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	if err := tc.Run(ctx); err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	return 0
}
