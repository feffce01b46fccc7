package apply_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/apply"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/urlenc"
)

// rowEvent is a targeted row as a copier's pull hands it to its Applier:
// a londiste-style type and the urlencoded row in ev_extra2.
func rowEvent(id int64, typ string, row urlenc.Fields) *pgq.Event {
	data, err := row.Encode()
	if err != nil {
		log.Fatal(err)
	}
	return &pgq.Event{ID: id, EventData: pgq.EventData{
		Type: pgq.T(typ), Extra1: pgq.T("node_b"), Extra2: pgq.T(data)}}
}

// A RowApplier writing an insert, an update and a delete into a table,
// each in the transaction that also records it (here: one transaction).
func ExampleRowApplier() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, "create table items (id int primary key, name text not null, qty int)"); err != nil {
		log.Fatal(err)
	}

	// Built once: the table and key columns are checked on first use and
	// may serve several copiers.
	a, err := apply.NewRowApplier("items", []string{"id"})
	if err != nil {
		log.Fatal(err)
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		for _, ev := range []*pgq.Event{
			rowEvent(1, "I:id", urlenc.Fields{"id": 1, "name": "bolt", "qty": 10}),
			rowEvent(2, "I:id", urlenc.Fields{"id": 2, "name": "nut", "qty": 5}),
			rowEvent(3, "U:id", urlenc.Fields{"id": 1, "name": "bolt", "qty": 7}),
			rowEvent(4, "D:id", urlenc.Fields{"id": 2}),
		} {
			if err := a.Apply(ctx, tx, ev); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}

	// A row naming a column the table lacks can never apply: a copier
	// parks it at once instead of retrying it.
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		return a.Apply(ctx, tx, rowEvent(5, "I:id", urlenc.Fields{"id": 3, "name": "gear", "colour": "red"}))
	})
	fmt.Println("bad payload:", errors.Is(err, apply.ErrBadPayload))

	rows, err := pool.Query(ctx, "select id, name, qty from items order by id")
	if err != nil {
		log.Fatal(err)
	}
	for rows.Next() {
		var id, qty int
		var name string
		if err := rows.Scan(&id, &name, &qty); err != nil {
			log.Fatal(err)
		}
		fmt.Println(id, name, qty)
	}
	if err := rows.Err(); err != nil {
		log.Fatal(err)
	}
	// Output:
	// bad payload: true
	// 1 bolt 7
}

// A FuncApplier calling an SQL function with the target node and the
// payload bound as parameters, as the seed's __data_copier(target, data)
// receives them, without formatting them into SQL.
func ExampleNewFuncApplier() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	_, err = pool.Exec(ctx, `
		create table copied (target text, data text);
		create function __data_copier(target text, data text) returns void
			language sql as $$ insert into copied values (target, data) $$`)
	if err != nil {
		log.Fatal(err)
	}

	a, err := apply.NewFuncApplier("__data_copier")
	if err != nil {
		log.Fatal(err)
	}
	ev := &pgq.Event{ID: 1, EventData: pgq.EventData{Type: pgq.T("copy"),
		Extra1: pgq.T("node_b"), Extra2: pgq.T("it's '); drop table copied; --")}}
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return a.Apply(ctx, tx, ev) }); err != nil {
		log.Fatal(err)
	}

	var target, data string
	if err := pool.QueryRow(ctx, "select target, data from copied").Scan(&target, &data); err != nil {
		log.Fatal(err)
	}
	fmt.Println(target, data)
	// Output:
	// node_b it's '); drop table copied; --
}
