// Command remoteconsumer copies the events of a PgQ queue into a table of
// another database, exactly once.
//
//	remoteconsumer -src postgres://.../queuedb -dst postgres://.../otherdb -queue q -name copier
//
// The destination gets table copied_event (created if missing) and the
// tracking schema (pgq_ext + pgq_go). Stop with Ctrl-C.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/remote"
)

func main() {
	src := flag.String("src", os.Getenv("SRC_DSN"), "source database with the queue (env SRC_DSN)")
	dst := flag.String("dst", os.Getenv("DST_DSN"), "destination database (env DST_DSN)")
	queue := flag.String("queue", "q", "queue name")
	name := flag.String("name", "copier", "consumer name (unique per destination)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, log, *src, *dst, *queue, *name); err != nil {
		log.Error("remoteconsumer failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, srcDSN, dstDSN, queue, name string) error {
	if srcDSN == "" || dstDSN == "" {
		return fmt.Errorf("both -src and -dst are required")
	}
	src, err := pgxpool.New(ctx, srcDSN)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := pgxpool.New(ctx, dstDSN)
	if err != nil {
		return err
	}
	defer dst.Close()
	if _, err := dst.Exec(ctx, `create table if not exists copied_event (
		ev_id bigint primary key, ev_type text, ev_data text, ev_time timestamptz)`); err != nil {
		return err
	}
	rc, err := remote.New(src, dst, remote.Config{Consumer: consumer.Config{
		Queue: queue, Name: name, Register: true, Logger: log,
	}}, remote.HandlerFunc(func(ctx context.Context, b *pgq.Batch, tx pgx.Tx) error {
		// Written only through tx: committed together with the batch record.
		for ev, err := range b.Events(ctx) {
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "insert into copied_event values ($1, $2, $3, $4)",
				ev.ID, ev.Type, ev.Data, ev.Time); err != nil {
				return err
			}
		}
		return nil
	}))
	if err != nil {
		return err
	}
	log.Info("copying", "queue", queue, "consumer", name)
	return rc.Run(ctx)
}
