package consumer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/pgq"
)

// Bell makes a consumer look for batches only when there is work for it.
//
// It is meant for a queue that many consumers share, each wanting a few of
// its events through a server-side Filter (the copier's shared hub queue:
// N pulls, each reading the rows of one node). Without a bell each of them
// takes a batch on every tick, and N consumers cost the server N batches
// per tick whatever they carry. With a bell, a producer that inserts
// events for this consumer also rings it, in the inserting transaction:
//
//	select pg_notify(<Channel>, txid_current()::text)
//
// The consumer then takes batches, every ready tick in one batch (see
// UpToEvents), until it has consumed a tick whose snapshot sees every
// ringing transaction; then it waits for the next ring. Rings sent before
// the consumer's listener heard the channel (at start, after a reconnect)
// are not lost: it then looks until it has consumed everything committed
// before that moment (judged by the tick snapshots' xmin: a long
// transaction anywhere on the server keeps it looking on every tick until
// that transaction ends). It also looks every Every, and from Due on.
type Bell struct {
	// Channel is the NOTIFY channel rung for this consumer. Required, at
	// most 63 bytes.
	Channel string
	// Every is the longest wait between two looks while the bell is
	// silent: it bounds the delay of a ring that was lost and keeps the
	// subscription moving (PgQ rotates event tables only past the slowest
	// consumer). Default 30 s.
	Every time.Duration
	// UpToEvents caps the batches taken when rung (pgq.BatchOptions
	// UpToEvents). Default 100,000.
	UpToEvents int64
	// Due, when set, is asked after every look when the consumer must look
	// again regardless of rings (the zero time: no such need).
	Due func() time.Time
}

// Bell defaults.
const (
	DefaultBellEvery      = 30 * time.Second
	DefaultBellUpToEvents = 100_000
)

func (b *Bell) withDefaults() *Bell {
	if b == nil {
		return nil
	}
	c := *b
	if c.Every == 0 {
		c.Every = DefaultBellEvery
	}
	if c.UpToEvents == 0 {
		c.UpToEvents = DefaultBellUpToEvents
	}
	return &c
}

func (b *Bell) validate(c Config) []error {
	if b == nil {
		return nil
	}
	var errs []error
	if b.Channel == "" || len(b.Channel) > 63 {
		errs = append(errs, fmt.Errorf("consumer: Config.Bell.Channel %q: want 1 to 63 bytes", b.Channel))
	}
	if b.Every < 0 || b.UpToEvents < 0 {
		errs = append(errs, fmt.Errorf("consumer: Config.Bell: negative Every (%v) or UpToEvents (%d)", b.Every, b.UpToEvents))
	}
	if c.DisableListen {
		errs = append(errs, errors.New("consumer: Config.Bell needs notifications; DisableListen is set"))
	}
	if c.MinCount > 0 || c.MinInterval > 0 {
		errs = append(errs, errors.New("consumer: Config.Bell takes every ready tick when rung; MinCount and MinInterval do not apply"))
	}
	return errs
}

// bellState is what a belled consumer knows of its rings.
//
// need holds the ringing txids not yet seen consumed. Transactions commit
// in another order than their txids, so the highest of them does not
// stand for the others: a snapshot can see it and not a lower one still
// in progress (a 30 s stall in the copier bench until need was a set).
// Beyond maxBellNeed txids (a flood of rings no batch has caught up with)
// the newest are folded into over: covered once every transaction up to
// it has ended (a snapshot's xmin above it). horizon stands for rings that
// may have been lost: when the listener starts hearing the channel (and
// after it reconnects) the consumer reads the server's next txid, and
// looks until the snapshot of its last tick has every transaction below
// that one completed (its xmin), so any event written before the channel
// was heard is consumed.
type bellState struct {
	cfg *Bell

	poll time.Duration // the consumer's PollInterval: longest wait for a tick

	mu        sync.Mutex
	need      map[int64]struct{}
	over      int64
	horizon   int64
	look      bool   // the listener (re)started: read a new horizon
	awaitTick bool   // what is needed cannot be in a batch before the next tick
	ticks     uint64 // tick notifications heard
	lookTicks uint64 // ticks when the current look began
	since     time.Time
	lastLook  time.Time
	due       time.Time
}

// maxBellNeed bounds bellState.need (about 40 bytes a txid).
const maxBellNeed = 1024

func newBellState(cfg *Bell, poll time.Duration) *bellState {
	return &bellState{cfg: cfg, poll: poll, lastLook: time.Now(), need: map[int64]struct{}{}}
}

// tick records a tick notification: what a ring announced may now be in
// a batch.
func (b *bellState) tick(string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.awaitTick = false
	b.ticks++
}

// waitTick makes the consumer wait for the next tick (at most its
// PollInterval) before it looks for what it needs. Called with b.mu held.
func (b *bellState) waitTick(now time.Time) {
	if !b.awaitTick {
		b.awaitTick, b.since = true, now
	}
}

// ring records a notification: a txid, or "" once the channel is heard
// (after LISTEN, or a reconnect).
func (b *bellState) ring(payload string) {
	txid, err := strconv.ParseInt(payload, 10, 64)
	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil || txid <= 0 {
		b.look = true
		return
	}
	if _, ok := b.need[txid]; !ok {
		if len(b.need) < maxBellNeed {
			b.need[txid] = struct{}{}
		} else {
			b.over = max(b.over, txid)
		}
	}
	// The ringing transaction has just committed: no tick taken before
	// its commit sees it, and the next tick's notification follows this
	// one.
	b.waitTick(time.Now())
}

// waiting reports whether a ring or the horizon is not yet covered.
// Called with b.mu held.
func (b *bellState) waiting() bool {
	return len(b.need) > 0 || b.over > 0 || b.horizon > 0
}

// wanted reports whether to look for a batch now, and if not, how long
// the consumer may wait before it must.
func (b *bellState) wanted(now time.Time) (bool, time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.look {
		return true, 0
	}
	if b.waiting() {
		if !b.awaitTick {
			return true, 0
		}
		if wait := b.since.Add(b.poll).Sub(now); wait > 0 {
			return false, wait
		}
		return true, 0
	}
	next := b.lastLook.Add(b.cfg.Every)
	if !b.due.IsZero() && b.due.Before(next) {
		next = b.due
	}
	if !now.Before(next) {
		return true, 0
	}
	return false, next.Sub(now)
}

// taking is called before a look: it returns whether a new horizon must
// be read, and clears that.
func (b *bellState) taking(now time.Time) (look bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	look, b.look = b.look, false
	b.lastLook = now
	b.lookTicks = b.ticks
	return look
}

// setHorizon records a horizon read for a look.
func (b *bellState) setHorizon(h int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.horizon = max(b.horizon, h)
}

// isWaiting reports whether a ring or the horizon is not yet covered.
func (b *bellState) isWaiting() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.waiting()
}

// settle is called with the snapshot of a tick the consumer has consumed
// up to (nil: nothing to wait for, the consumer or its tick is gone): it
// drops the rings and horizon that snapshot covers, and reports whether
// any is left. emptyLook says the consumer found no batch: then what is
// left needs the next tick, unless a tick was heard since the look began
// (its notification came while the look ran: waiting for another one
// would leave the events until PollInterval).
func (b *bellState) settle(s *pgq.Snapshot, emptyLook bool) (left bool) {
	b.refreshDue()
	b.mu.Lock()
	defer b.mu.Unlock()
	if s == nil {
		clear(b.need)
		b.over, b.horizon = 0, 0
		return false
	}
	for x := range b.need {
		if s.Visible(x) {
			delete(b.need, x)
		}
	}
	if b.over > 0 && s.Xmin > b.over {
		b.over = 0
	}
	if b.horizon > 0 && s.Xmin >= b.horizon {
		b.horizon = 0
	}
	left = b.waiting()
	if left && emptyLook && b.ticks == b.lookTicks {
		b.waitTick(time.Now())
	}
	return left
}

// refreshDue asks Bell.Due again, after a look.
func (b *bellState) refreshDue() {
	var due time.Time
	if b.cfg.Due != nil {
		due = b.cfg.Due()
	}
	b.mu.Lock()
	b.due = due
	b.mu.Unlock()
}

// sqlBellSnapshot reads the snapshot of the consumer's last tick: the
// consumer has finished the batches holding the events of every
// transaction it sees.
const sqlBellSnapshot = `select t.tick_snapshot::text
	from pgq.queue q
	join pgq.subscription s on s.sub_queue = q.queue_id
	join pgq.consumer c on c.co_id = s.sub_consumer
	join pgq.tick t on t.tick_queue = q.queue_id and t.tick_id = s.sub_last_tick
	where q.queue_name = $1 and c.co_name = $2`

// lastSnapshot returns the snapshot of the consumer's last tick. A
// consumer or tick not found gives nil: the next look reports what is
// wrong, and a ring must not keep it looking forever.
func (c *Consumer) lastSnapshot(ctx context.Context) (*pgq.Snapshot, error) {
	var text string
	err := c.pool.QueryRow(ctx, sqlBellSnapshot, c.cfg.Queue, c.cfg.Name).Scan(&text)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err == nil {
		var s pgq.Snapshot
		if s, err = pgq.ParseSnapshot(text); err == nil {
			return &s, nil
		}
	}
	return nil, fmt.Errorf("consumer %s/%s: bell: %w", c.cfg.Queue, c.cfg.Name, err)
}

// horizon is the server's next txid: every transaction that could have
// rung before the channel was heard is below it.
func (c *Consumer) horizon(ctx context.Context) (int64, error) {
	var h int64
	if err := c.pool.QueryRow(ctx, "select txid_snapshot_xmax(txid_current_snapshot())").Scan(&h); err != nil {
		return 0, fmt.Errorf("consumer %s/%s: bell: %w", c.cfg.Queue, c.cfg.Name, err)
	}
	return h, nil
}

// batchOptions are the next_batch options of one look.
func (c *Consumer) batchOptions() pgq.BatchOptions {
	o := pgq.BatchOptions{MinLag: c.cfg.KeepLag, MinCount: c.cfg.MinCount, MinInterval: c.cfg.MinInterval}
	if c.cfg.Bell != nil {
		o.UpToEvents = c.cfg.Bell.UpToEvents
	}
	return o
}
