package remote_test

import (
	"bytes"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/remote"
	"github.com/stretchr/testify/require"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestSkippedBatchIsLogged: a batch the destination already has (here:
// the source consumer moved back over applied ticks) is skipped, and the
// log says so at info level, naming the batch and its tick, for both
// kinds of tracking.
func TestSkippedBatchIsLogged(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"remote", "serial"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			e := setup(t, cluster, cluster)
			run := func(cfgLog *slog.Logger) {
				cfg := e.cfg()
				cfg.Consumer.Logger = cfgLog
				var stop func() error
				if kind == "serial" {
					sc, err := remote.NewSerial(e.src.Pool, e.dst.Pool, cfg, copyHandler(nil))
					require.NoError(t, err)
					stop = pgtest.Background(t, e.ctx, sc.Run)
				} else {
					rc, err := remote.New(e.src.Pool, e.dst.Pool, cfg, copyHandler(nil))
					require.NoError(t, err)
					stop = pgtest.Background(t, e.ctx, rc.Run)
				}
				require.Eventually(t, func() bool {
					ci, err := pgq.GetConsumerInfo(e.ctx, e.src.Pool, "q", "copier")
					require.NoError(t, err)
					return ci.CurrentBatch == 0 && ci.LastTick == e.lastQueueTick(t)
				}, 30*time.Second, 10*time.Millisecond)
				require.NoError(t, stop())
			}
			before, err := pgq.GetConsumerInfo(e.ctx, e.src.Pool, "q", "copier")
			require.NoError(t, err)
			e.produce(t, 0, 10, plain)
			_, err = pgq.Tick(e.ctx, e.src.Pool, "q")
			require.NoError(t, err)
			first := &syncBuf{}
			run(slog.New(slog.NewTextHandler(first, &slog.HandlerOptions{Level: slog.LevelInfo})))
			require.NotContains(t, first.String(), "already applied")
			requireExactlyOnce(t, e.ctx, e.dst.Pool, 10)

			// Back over the applied ticks: the same batch comes again.
			require.NoError(t, pgq.RegisterConsumerAt(e.ctx, e.src.Pool, "q", "copier", before.LastTick))
			again := &syncBuf{}
			run(slog.New(slog.NewTextHandler(again, &slog.HandlerOptions{Level: slog.LevelInfo})))
			requireExactlyOnce(t, e.ctx, e.dst.Pool, 10)
			require.Contains(t, again.String(), "level=INFO msg=\"batch already applied on the destination; skipped\"")
			require.Contains(t, again.String(), "tick_id=")
			require.Contains(t, again.String(), "batch_id=")
		})
	}
}

func (e *env) lastQueueTick(t *testing.T) int64 {
	var tick int64
	require.NoError(t, e.src.Pool.QueryRow(e.ctx, "select max(tick_id) from pgq.tick").Scan(&tick))
	return tick
}
