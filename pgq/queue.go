package pgq

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// CreateQueue creates a queue; it reports false when the queue already existed.
func CreateQueue(ctx context.Context, db DB, queue string) (bool, error) {
	if err := ValidateName("queue", queue); err != nil {
		return false, err
	}
	var n int
	if err := db.QueryRow(ctx, "select pgq.create_queue($1)", queue).Scan(&n); err != nil {
		return false, opErr("create queue", queue, "", err)
	}
	return n == 1, nil
}

// DropQueue drops a queue. Without force it fails while consumers are
// registered; with force it unregisters them first.
func DropQueue(ctx context.Context, db DB, queue string, force bool) error {
	if err := ValidateName("queue", queue); err != nil {
		return err
	}
	if _, err := db.Exec(ctx, "select pgq.drop_queue($1, $2)", queue, force); err != nil {
		return opErr("drop queue", queue, "", err)
	}
	return nil
}

// QueueConfig holds the tunable settings of a queue; nil fields are left
// unchanged by SetQueueConfig.
type QueueConfig struct {
	TickerMaxCount   *int           // ticker_max_count: tick after this many events (default 500)
	TickerMaxLag     *time.Duration // ticker_max_lag: tick when events are this old (default 3s)
	TickerIdlePeriod *time.Duration // ticker_idle_period: tick this often with no events (default 1m)
	TickerPaused     *bool          // ticker_paused: pgq.ticker() skips the queue
	RotationPeriod   *time.Duration // rotation_period: event table rotation (default 2h)
	ExternalTicker   *bool          // external_ticker: ticks come from elsewhere
	DisableInsert    *bool          // disable_insert: refuse new events
}

// Ptr returns a pointer to v, for QueueConfig fields.
func Ptr[V any](v V) *V { return &v }

func interval(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + " seconds"
}

// SetQueueConfig applies every non-nil field of cfg with
// pgq.set_queue_config, in one pipelined round trip.
func SetQueueConfig(ctx context.Context, db DB, queue string, cfg QueueConfig) error {
	if err := ValidateName("queue", queue); err != nil {
		return err
	}
	type kv struct{ k, v string }
	var set []kv
	if cfg.TickerMaxCount != nil {
		if *cfg.TickerMaxCount < 1 {
			return fmt.Errorf("pgq: set queue config %s: TickerMaxCount %d < 1: %w", queue, *cfg.TickerMaxCount, ErrInvalidArgument)
		}
		set = append(set, kv{"ticker_max_count", strconv.Itoa(*cfg.TickerMaxCount)})
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
	}{{"ticker_max_lag", cfg.TickerMaxLag}, {"ticker_idle_period", cfg.TickerIdlePeriod}, {"rotation_period", cfg.RotationPeriod}} {
		if d.v == nil {
			continue
		}
		if *d.v < 0 {
			return fmt.Errorf("pgq: set queue config %s: %s %v is negative: %w", queue, d.name, *d.v, ErrInvalidArgument)
		}
		set = append(set, kv{d.name, interval(*d.v)})
	}
	for _, b := range []struct {
		name string
		v    *bool
	}{{"ticker_paused", cfg.TickerPaused}, {"external_ticker", cfg.ExternalTicker}} {
		if b.v != nil {
			set = append(set, kv{b.name, strconv.FormatBool(*b.v)})
		}
	}
	batch := &pgx.Batch{}
	for _, s := range set {
		batch.Queue("select pgq.set_queue_config($1, $2, $3)", queue, s.k, s.v)
	}
	if cfg.DisableInsert != nil {
		// pgq 3.5's set_queue_config refuses this key (its check looks for
		// "disable_inserts"), so set the column it stands for directly.
		batch.Queue("update pgq.queue set queue_disable_insert = $2 where queue_name = $1", queue, *cfg.DisableInsert)
	}
	if batch.Len() == 0 {
		return nil
	}
	if err := sendAll(ctx, db, batch); err != nil {
		return opErr("set queue config", queue, "", err)
	}
	return nil
}

// batchSender is implemented by *pgxpool.Pool, *pgx.Conn and pgx.Tx.
type batchSender interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// sendAll sends b pipelined when db can, one by one otherwise.
func sendAll(ctx context.Context, db DB, b *pgx.Batch) error {
	if s, ok := db.(batchSender); ok {
		return s.SendBatch(ctx, b).Close()
	}
	for _, q := range b.QueuedQueries {
		if _, err := db.Exec(ctx, q.SQL, q.Arguments...); err != nil {
			return err
		}
	}
	return nil
}

// QueueInfo is one row of pgq.get_queue_info().
type QueueInfo struct {
	Name             string
	NTables          int
	CurTable         int
	RotationPeriod   time.Duration
	SwitchTime       time.Time
	ExternalTicker   bool
	TickerPaused     bool
	TickerMaxCount   int
	TickerMaxLag     time.Duration
	TickerIdlePeriod time.Duration
	TickerLag        time.Duration // time since the last tick
	EventsPerSec     float64       // NaN-free: 0 when unknown
	NewEvents        int64         // events since the last tick
	LastTickID       int64
}

const sqlQueueInfo = `select queue_name, queue_ntables, queue_cur_table, queue_rotation_period,
	queue_switch_time, queue_external_ticker, queue_ticker_paused, queue_ticker_max_count,
	queue_ticker_max_lag, queue_ticker_idle_period, ticker_lag, coalesce(ev_per_sec, 0),
	coalesce(ev_new, 0), coalesce(last_tick_id, 0)
	from pgq.get_queue_info($1)`

// GetQueueInfo returns the info of one queue.
func GetQueueInfo(ctx context.Context, db DB, queue string) (QueueInfo, error) {
	if err := ValidateName("queue", queue); err != nil {
		return QueueInfo{}, err
	}
	qs, err := queueInfo(ctx, db, &queue)
	if err != nil {
		return QueueInfo{}, opErr("queue info", queue, "", err)
	}
	if len(qs) == 0 {
		return QueueInfo{}, fmt.Errorf("pgq: queue info %s: %w", queue, ErrQueueNotFound)
	}
	return qs[0], nil
}

// ListQueues returns the info of every queue.
func ListQueues(ctx context.Context, db DB) ([]QueueInfo, error) {
	qs, err := queueInfo(ctx, db, nil)
	if err != nil {
		return nil, opErr("list queues", "", "", err)
	}
	return qs, nil
}

func queueInfo(ctx context.Context, db DB, queue *string) ([]QueueInfo, error) {
	rows, err := db.Query(ctx, sqlQueueInfo, queue)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []QueueInfo
	for rows.Next() {
		var q QueueInfo
		var rot, maxLag, idle, lag pgInterval
		if err := rows.Scan(&q.Name, &q.NTables, &q.CurTable, &rot, &q.SwitchTime, &q.ExternalTicker,
			&q.TickerPaused, &q.TickerMaxCount, &maxLag, &idle, &lag, &q.EventsPerSec, &q.NewEvents, &q.LastTickID); err != nil {
			return nil, err
		}
		q.RotationPeriod, q.TickerMaxLag, q.TickerIdlePeriod, q.TickerLag = rot.d, maxLag.d, idle.d, lag.d
		out = append(out, q)
	}
	return out, rows.Err()
}
