package consumer

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/internal/backoff"
	"github.com/pgq-go/pgq/internal/logging"
)

// Tick wake-ups: consumers on the same *pgxpool.Pool share one LISTEN
// connection, whatever their queues, so a process running many consumers
// against one database (a copier process serving hundreds of nodes
// through one hub pool) holds one listening backend there, not one per
// consumer. The connection lives while at least one consumer of the pool
// is running.

// listeners holds the shared listener of each pool.
var listeners = struct {
	sync.Mutex
	m map[*pgxpool.Pool]*listener
}{m: map[*pgxpool.Pool]*listener{}}

// listener keeps one connection LISTENing on the channels its subscribers
// wait on and signals their wake channels on every notification.
// Notifications only shorten the wait between looks for a batch: losing
// some (while reconnecting) delays work by at most PollInterval, and every
// subscriber is woken once the connection is back.
type listener struct {
	pool    *pgxpool.Pool
	config  *pgx.ConnConfig // where to LISTEN; nil: the pool's settings
	log     *slog.Logger
	backoff Backoff
	stop    context.CancelFunc
	done    chan struct{}

	mu   sync.Mutex
	subs map[string]map[*subscription]bool // channel → subscribers
	refs int
	kick context.CancelFunc // interrupts the current wait so the channel set is synced
}

// subscription is one subscriber of a channel: its wake channel is
// signalled on every notification, after ring (when set) has seen the
// payload; ring gets "" when the connection came back (notifications may
// have been lost).
type subscription struct {
	wake  chan<- struct{}
	ring  func(payload string)
	heard bool // its channel is listened to (guarded by listener.mu)
}

func (s *subscription) notify(payload string) {
	if s.ring != nil {
		s.ring(payload)
	}
	signal(s.wake)
}

// subscribeRing makes wake receive a signal on every notification on
// channel (and after the shared connection is re-established), after ring
// (when not nil) has seen its payload, until the returned function is
// called. config (nil: the pool's settings), log and bo serve the
// connection if this call starts it.
func subscribeRing(pool *pgxpool.Pool, config *pgx.ConnConfig, channel string, wake chan<- struct{}, ring func(string), log *slog.Logger, bo Backoff) func() {
	listeners.Lock()
	l := listeners.m[pool]
	if l == nil {
		ctx, cancel := context.WithCancel(context.Background())
		l = &listener{pool: pool, config: config, log: log, backoff: bo, stop: cancel, done: make(chan struct{}),
			subs: map[string]map[*subscription]bool{}}
		listeners.m[pool] = l
		go l.run(ctx)
	}
	s := &subscription{wake: wake, ring: ring}
	l.mu.Lock()
	if l.subs[channel] == nil {
		l.subs[channel] = map[*subscription]bool{}
	}
	l.subs[channel][s] = true
	l.refs++
	l.interrupt()
	l.mu.Unlock()
	listeners.Unlock()

	var once sync.Once
	return func() {
		once.Do(func() {
			listeners.Lock()
			l.mu.Lock()
			delete(l.subs[channel], s)
			if len(l.subs[channel]) == 0 {
				delete(l.subs, channel)
			}
			l.refs--
			last := l.refs == 0
			l.interrupt()
			l.mu.Unlock()
			if last {
				delete(listeners.m, pool)
			}
			listeners.Unlock()
			if last {
				l.stop()
				<-l.done
			}
		})
	}
}

// interrupt ends the current wait, if any, so the loop syncs its
// channels. Called with l.mu held.
func (l *listener) interrupt() {
	if l.kick != nil {
		l.kick()
		l.kick = nil
	}
}

func (l *listener) run(ctx context.Context) {
	defer close(l.done)
	fails := 0
	for {
		err := l.session(ctx, &fails)
		if ctx.Err() != nil {
			return
		}
		fails++
		d := l.backoff.Delay(fails)
		l.log.Warn("tick listener lost; reconnecting", logging.KeyErr, err, logging.KeyBackoff, d)
		if !backoff.Sleep(ctx, d) {
			return
		}
	}
}

// session runs one connection: LISTEN on every subscribed channel, then
// wait, fan out, and re-sync the channels whenever subscriptions change.
func (l *listener) session(ctx context.Context, fails *int) error {
	cfg := l.config
	if cfg == nil {
		cfg = l.pool.Config().ConnConfig
	}
	conn, err := pgx.ConnectConfig(ctx, cfg.Copy())
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = conn.Close(cctx)
		cancel()
	}()
	listening := map[string]bool{}
	for {
		l.mu.Lock()
		want := make([]string, 0, len(l.subs))
		for ch := range l.subs {
			want = append(want, ch)
		}
		wctx, kick := context.WithCancel(ctx)
		l.kick = kick
		l.mu.Unlock()
		if err := syncChannels(ctx, conn, listening, want); err != nil {
			kick()
			return err
		}
		if *fails > 0 {
			// Ticks may have been announced while we were away.
			*fails = 0
			l.wakeAll()
		}
		l.heard(listening)
		n, err := conn.WaitForNotification(wctx)
		kick()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if wctx.Err() != nil && !conn.IsClosed() {
				continue // interrupted: subscriptions changed
			}
			return err
		}
		l.wake(n.Channel, n.Payload)
	}
}

// syncChannels LISTENs on the wanted channels not yet listened to and
// UNLISTENs the others.
func syncChannels(ctx context.Context, conn *pgx.Conn, listening map[string]bool, want []string) error {
	keep := make(map[string]bool, len(want))
	for _, ch := range want {
		keep[ch] = true
		if listening[ch] {
			continue
		}
		if _, err := conn.Exec(ctx, "listen "+pgx.Identifier{ch}.Sanitize()); err != nil {
			return err
		}
		listening[ch] = true
	}
	for ch := range listening {
		if keep[ch] {
			continue
		}
		if _, err := conn.Exec(ctx, "unlisten "+pgx.Identifier{ch}.Sanitize()); err != nil {
			return err
		}
		delete(listening, ch)
	}
	return nil
}

func (l *listener) wake(channel, payload string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for s := range l.subs[channel] {
		s.notify(payload)
	}
}

// heard tells each new subscriber of a listened channel that from now on
// it hears every notification ("" to its ring): what was sent before may
// have been missed.
func (l *listener) heard(listening map[string]bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for ch, subs := range l.subs {
		if !listening[ch] {
			continue
		}
		for s := range subs {
			if !s.heard {
				s.heard = true
				s.notify("")
			}
		}
	}
}

func (l *listener) wakeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, subs := range l.subs {
		for s := range subs {
			s.notify("")
		}
	}
}

func signal(wake chan<- struct{}) {
	select {
	case wake <- struct{}{}:
	default:
	}
}
