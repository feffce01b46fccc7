package route_test

import (
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/route"
	"github.com/pgq-go/pgq/urlenc"
)

// BenchmarkSend commits transactions that each write one application row
// and N targeted events (N/2 rows of ~60 bytes to two targets), through
// each producer path, and reports events/s:
//
//	SendBulk:             Exec, then one COPY (which costs two round trips)
//	AddToBatch:           the application row and one pgq.insert_event
//	                      statement in one pgx.Batch: one round trip
//	InsertEventPerRow:    Exec, then pgq.InsertEvent per event, a round trip each
//	InsertEventPipelined: the application row and one pgq.insert_event
//	                      statement per event, in one pgx.Batch
//
// The test cluster is on the same host: a round trip costs tens of
// microseconds here, far less than across a network.
//
//	go test -run '^$' -bench BenchmarkSend -benchtime 20x ./route/
func BenchmarkSend(b *testing.B) {
	e := cluster.NewEnv(b)
	if _, err := e.Pool.Exec(e.Ctx, "create table app (v int)"); err != nil {
		b.Fatal(err)
	}
	const appSQL = "insert into app values (1)"
	s := route.Sender{Queue: e.Queue, Origin: "node-a"}
	targets := []string{"node-b", "node-c"}
	for _, n := range []int{10, 10000} {
		msgs := make([]route.Message, n/len(targets))
		var events []pgq.EventData
		for i := range msgs {
			msgs[i] = route.Message{Targets: targets, Type: "I:id",
				Row: urlenc.Fields{"id": i, "name": fmt.Sprintf("customer %d", i), "email": fmt.Sprintf("c%d@example.com", i)}}
			row, err := msgs[i].Row.Encode()
			if err != nil {
				b.Fatal(err)
			}
			for _, t := range targets {
				events = append(events, pgq.EventData{Type: pgq.T("I:id"), Data: pgq.T(""), Extra1: pgq.T(t), Extra2: pgq.T(row), Extra3: pgq.T(s.Origin)})
			}
		}
		run := func(name string, f func(tx pgx.Tx) error) {
			b.Run(fmt.Sprintf("%s/events=%d", name, n), func(b *testing.B) {
				for b.Loop() {
					if err := pgx.BeginFunc(e.Ctx, e.Pool, f); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*len(events))/b.Elapsed().Seconds(), "events/s")
			})
		}
		run("SendBulk", func(tx pgx.Tx) error {
			if _, err := tx.Exec(e.Ctx, appSQL); err != nil {
				return err
			}
			_, err := s.SendBulk(e.Ctx, tx, msgs)
			return err
		})
		run("AddToBatch", func(tx pgx.Tx) error {
			pb := &pgx.Batch{}
			pb.Queue(appSQL)
			if err := s.AddToBatch(pb, msgs...); err != nil {
				return err
			}
			return tx.SendBatch(e.Ctx, pb).Close()
		})
		run("InsertEventPerRow", func(tx pgx.Tx) error {
			if _, err := tx.Exec(e.Ctx, appSQL); err != nil {
				return err
			}
			for _, ev := range events {
				if _, err := pgq.InsertEvent(e.Ctx, tx, e.Queue, ev); err != nil {
					return err
				}
			}
			return nil
		})
		run("InsertEventPipelined", func(tx pgx.Tx) error {
			pb := &pgx.Batch{}
			pb.Queue(appSQL)
			for _, ev := range events {
				pb.Queue("select pgq.insert_event($1, $2, $3, $4, $5, $6, $7)", e.Queue, ev.Type, ev.Data, ev.Extra1, ev.Extra2, ev.Extra3, ev.Extra4)
			}
			return tx.SendBatch(e.Ctx, pb).Close()
		})
	}
}
