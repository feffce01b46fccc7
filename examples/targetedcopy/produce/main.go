// Command produce writes rows on one node of a targeted-copy cluster, each
// sent to a random set of other nodes, in the node's own transactions. It
// records what it sent in table sent(id, targets) in the same transaction,
// so a verifier can compare expected and applied rows afterwards.
//
//	produce --local postgres://.../n1 --node n1 --nodes n1,n2,n3,n4 --rows 1000
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/route"
	"github.com/pgq-go/pgq/urlenc"
)

func main() {
	local := flag.String("local", os.Getenv("PGQ_LOCAL"), "this node's database (env PGQ_LOCAL)")
	node := flag.String("node", os.Getenv("PGQ_NODE"), "this node's id")
	nodes := flag.String("nodes", "", "every node id, comma-separated")
	rows := flag.Int("rows", 1000, "rows to produce")
	batch := flag.Int("batch", 50, "rows per transaction")
	queue := flag.String("queue", "push_queue", "push queue")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *local, *node, strings.Split(*nodes, ","), *rows, *batch, *queue); err != nil {
		slog.Error("produce failed", "node", *node, "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, dsn, node string, nodes []string, n, batch int, queue string) error {
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, "create table if not exists sent (id text primary key, targets text[] not null)"); err != nil {
		return err
	}
	var others []string
	for _, x := range nodes {
		if x != node && x != "" {
			others = append(others, x)
		}
	}
	sender := route.Sender{Queue: queue, Origin: node, RequestTick: true} // bulk sends: ask for a tick at commit
	for done := 0; done < n; {
		tx, err := pool.Begin(ctx)
		if err != nil {
			return err
		}
		var msgs []route.Message
		for i := 0; i < batch && done < n; i, done = i+1, done+1 {
			id := fmt.Sprintf("%s-%d", node, done)
			var targets []string
			for _, o := range others {
				if rand.IntN(2) == 0 {
					targets = append(targets, o)
				}
			}
			if len(targets) == 0 {
				targets = []string{others[rand.IntN(len(others))]}
			}
			msgs = append(msgs, route.Message{Targets: targets, Row: urlenc.Fields{
				"action": "ins", "id": id, "origin": node, "payload": fmt.Sprintf("row %d from %s: it's ; -- \\ ünï", done, node)}})
			if _, err := tx.Exec(ctx, "insert into sent values ($1, $2)", id, targets); err != nil {
				tx.Rollback(ctx)
				return err
			}
		}
		if _, err := sender.SendBulk(ctx, tx, msgs); err != nil {
			tx.Rollback(ctx)
			return err
		}
		if err := tx.Commit(ctx); err != nil {
			return err
		}
	}
	return nil
}
