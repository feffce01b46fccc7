package skytools_test

import (
	"fmt"
	"log"
	"strings"

	"github.com/pgq-go/pgq/skytools"
)

// A Skytools job file, read into a consumer configuration and the runner's
// settings, with a warning for keys the program does not know. Programs
// read files with skytools.Load(path); Parse reads any io.Reader.
func Example() {
	const ini = `
[DEFAULT]
log_dir = /var/log/skytools

[simple_consumer3]
queue_name = orders
# consumer_name defaults to job_name: the file name, orders_copy
src_db = dbname=shop host=db1
dst_db = dbname=reports host=db2
logfile = %(log_dir)s/%(job_name)s.log
pgq_lazy_fetch = 500
pgq_keep_lag = 30 seconds
table_filter = orders, billing.invoices
loop_delay = 0.5
dst_qeury = insert into t values (%%(id)s)
`
	f, err := skytools.Parse(strings.NewReader(ini), "/etc/skytools/orders_copy.ini")
	if err != nil {
		log.Fatal(err)
	}
	sec, err := f.Section("simple_consumer3")
	if err != nil {
		log.Fatal(err)
	}
	cfg, err := sec.ConsumerConfig() // consumer.Config for consumer.New
	if err != nil {
		log.Fatal(err)
	}
	job, err := sec.JobSettings()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("queue:", cfg.Queue, "consumer:", cfg.Name, "fetch:", cfg.LazyFetch)
	fmt.Println("keep lag:", cfg.KeepLag, "poll:", cfg.PollInterval)
	fmt.Println("filter:", cfg.Filter)
	fmt.Println("source:", job.SrcDB)
	fmt.Println("log:", job.Logfile)

	known := map[string]bool{"queue_name": true, "src_db": true, "dst_db": true, "logfile": true, "log_dir": true,
		"pgq_lazy_fetch": true, "pgq_keep_lag": true, "table_filter": true, "loop_delay": true, "dst_query": true}
	for _, k := range sec.Keys() {
		if !known[k] {
			fmt.Println("unknown key:", k)
		}
	}
	// Output:
	// queue: orders consumer: orders_copy fetch: 500
	// keep lag: 30s poll: 500ms
	// filter: ev_extra1 in ('public.orders', 'billing.invoices')
	// source: dbname=shop host=db1
	// log: /var/log/skytools/orders_copy.log
	// unknown key: dst_qeury
}

// Interval reads the PostgreSQL intervals Skytools passes to SQL, and
// refuses shapes whose meaning would surprise.
func ExampleSection_Interval() {
	f, err := skytools.Parse(strings.NewReader(`[job]
a = 10 min
b = 1.5
c = 1 day 02:00:00
d = PT90S
e = 1h30
`), "job.ini")
	if err != nil {
		log.Fatal(err)
	}
	sec, err := f.Section("job")
	if err != nil {
		log.Fatal(err)
	}
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		d, err := sec.Interval(k)
		if err != nil {
			fmt.Println(k, "refused")
			continue
		}
		fmt.Println(k, d)
	}
	// Output:
	// a 10m0s
	// b 1.5s
	// c 26h0m0s
	// d 1m30s
	// e refused
}
