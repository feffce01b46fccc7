package pgqtest_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/pgqtest"
)

// mailer is the handler under test: it mails each order, and sends the
// event to the retry queue while the mail server is down.
type mailer struct {
	down bool
	sent []string
}

func (m *mailer) ProcessEvent(ctx context.Context, ev *pgq.Event) error {
	if m.down {
		ev.TagRetry(5 * time.Minute)
		return nil
	}
	m.sent = append(m.sent, fmt.Sprintf("mail for %s (attempt %d)", ev.Data.String, ev.Retry+1))
	return nil
}

// A test of a handler against a real queue: its retry path, then the
// redelivery. In a test, t is the test's *testing.T and the pool comes from
// the test's setup (closed with t.Cleanup, so it outlives the queue).
func Example() {
	t := &testing.T{} // in a real test: the test's t
	pool, err := pgxpool.New(context.Background(), os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close() // in a real test: t.Cleanup(pool.Close)

	q := pgqtest.NewQueue(t, pool) // a queue of this test's own, dropped at its end
	q.Insert(t,
		pgq.NewEvent("order", "order 1"),
		pgq.NewEvent("order", "order 2"))
	q.Tick(t)

	m := &mailer{down: true}
	res := q.RunBatch(t, consumer.Events(m))
	fmt.Printf("down: %d events, %d retried, err %v\n", len(res.Events), len(res.Retried), res.Err)

	m.down = false
	fmt.Println("redelivered:", q.Redeliver(t))
	res = q.RunBatch(t, consumer.Events(m))
	fmt.Printf("up: %d events, %d retried, err %v\n", len(res.Events), len(res.Retried), res.Err)
	for _, s := range m.sent {
		fmt.Println(s)
	}
	// Output:
	// down: 2 events, 2 retried, err <nil>
	// redelivered: 2
	// up: 2 events, 0 retried, err <nil>
	// mail for order 1 (attempt 2)
	// mail for order 2 (attempt 2)
}
