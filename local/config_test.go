package local_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/local"
	"github.com/pgq-go/pgq/pgq"
	"github.com/stretchr/testify/require"
)

var nop = local.HandlerFunc(func(context.Context, *pgq.Batch) error { return nil })

// TestNewRejectsBadConfig: New names what is wrong, before any database
// work.
func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	e := setup(t)
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope", "job.tick")
	cases := []struct {
		name string
		mod  func(c *local.Config)
		h    local.Handler
		want []string
		is   error
	}{
		{name: "empty TrackingFile", mod: func(c *local.Config) { c.TrackingFile = "" },
			want: []string{"Config.TrackingFile is empty", "local_tracking_file"}},
		{name: "missing directory", mod: func(c *local.Config) { c.TrackingFile = missing },
			want: []string{"directory " + filepath.Dir(missing) + " does not exist"}, is: local.ErrTrackingFile},
		{name: "TrackingFile is a directory", mod: func(c *local.Config) { c.TrackingFile = dir },
			want: []string{dir + " is a directory"}, is: local.ErrTrackingFile},
		{name: "queue-side config", mod: func(c *local.Config) { c.Consumer.Queue = "" },
			want: []string{"Config.Queue"}, is: pgq.ErrInvalidName},
		{name: "nil handler", h: nil, want: []string{"handler is nil"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := e.cfg(t)
			if tc.mod != nil {
				tc.mod(&cfg)
			}
			h := tc.h
			if h == nil && tc.name != "nil handler" {
				h = nop
			}
			lc, err := local.New(e.Pool, cfg, h)
			require.Nil(t, lc)
			for _, w := range tc.want {
				require.ErrorContains(t, err, w)
			}
			if tc.is != nil {
				require.ErrorIs(t, err, tc.is)
			}
		})
	}
	_, err := local.New(nil, e.cfg(t), nop)
	require.ErrorContains(t, err, "pool is nil")
}

// TestNewResolvesPath: "~/" is the home directory and a relative name
// becomes absolute, as Skytools' getfile reads local_tracking_file.
func TestNewResolvesPath(t *testing.T) {
	e := setup(t)
	home := t.TempDir()
	t.Setenv("HOME", home)
	require.NoError(t, os.Mkdir(filepath.Join(home, "state"), 0o755))
	cfg := e.cfg(t)
	cfg.TrackingFile = "~/state/job.tick"
	lc, err := local.New(e.Pool, cfg, nop)
	require.NoError(t, err)
	require.Equal(t, filepath.Join(home, "state", "job.tick"), lc.Config().TrackingFile)

	t.Chdir(home)
	cfg.TrackingFile = "job.tick"
	lc, err = local.New(e.Pool, cfg, nop)
	require.NoError(t, err)
	require.Equal(t, filepath.Join(home, "job.tick"), lc.Config().TrackingFile)
}

// TestRunStopsOnUnusableFile: Run fails at start, without retrying, when
// the directory vanished after New, the file does not hold a tick id, or
// the file's tick is gone from the queue; Reset then lets it continue from
// the queue's position.
func TestRunStopsOnUnusableFile(t *testing.T) {
	t.Parallel()
	t.Run("directory removed", func(t *testing.T) {
		t.Parallel()
		e := setup(t)
		dir := filepath.Join(t.TempDir(), "state")
		require.NoError(t, os.Mkdir(dir, 0o755))
		cfg := e.cfg(t)
		cfg.TrackingFile = filepath.Join(dir, "job.tick")
		lc, err := local.New(e.Pool, cfg, nop)
		require.NoError(t, err)
		require.NoError(t, os.Remove(dir))
		err = lc.Run(e.Ctx)
		require.ErrorIs(t, err, local.ErrTrackingFile)
		require.ErrorIs(t, err, fs.ErrNotExist)
		require.ErrorContains(t, err, "directory "+dir+" does not exist")
	})
	t.Run("not a tick id", func(t *testing.T) {
		t.Parallel()
		e := setup(t)
		require.NoError(t, os.WriteFile(e.file, []byte("12abc\n"), 0o644))
		lc, err := local.New(e.Pool, e.cfg(t), nop)
		require.NoError(t, err)
		err = lc.Run(e.Ctx)
		require.ErrorIs(t, err, local.ErrTrackingFile)
		require.ErrorContains(t, err, "tracking file "+e.file+` holds "12abc", not a tick id`)
	})
	t.Run("tick gone from the queue", func(t *testing.T) {
		t.Parallel()
		e := setup(t)
		e.writeTick(t, 999999)
		a := &applier{dst: e.dst.Pool, by: "go"}
		lc, err := local.New(e.Pool, e.cfg(t), a)
		require.NoError(t, err)
		err = lc.Run(e.Ctx)
		require.ErrorIs(t, err, local.ErrLostPosition)
		require.ErrorContains(t, err, "q/c: tracking file "+e.file+" holds tick 999999, which the queue no longer has")

		require.NoError(t, lc.Reset())
		require.NoError(t, lc.Reset(), "a missing file is fine")
		t1 := e.Info(t).LastTick
		ids := e.Produce(t, 2, nil)
		t2 := e.Tick(t)
		e.start(t, e.cfg(t), a)
		e.waitQueueTick(t, t2)
		e.requireExactlyOnce(t, ids)
		require.Equal(t, t2, e.fileTick(t))
		require.Less(t, t1, t2)
	})
}

// TestRunTwice: one Consumer runs once at a time.
func TestRunTwice(t *testing.T) {
	t.Parallel()
	e := setup(t)
	var idle counter
	cfg := e.cfg(t)
	cfg.Consumer.Hooks.OnIdle = idle.inc
	lc, err := local.New(e.Pool, cfg, nop)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(e.Ctx)
	done := make(chan error, 1)
	go func() { done <- lc.Run(ctx) }()
	require.Eventually(t, func() bool { return idle.get() > 0 }, 30*time.Second, 5*time.Millisecond)
	require.ErrorIs(t, lc.Run(e.Ctx), consumer.ErrRunning)
	cancel()
	require.NoError(t, <-done)
}

// TestRewindResetRegister: the helpers behind Skytools' --rewind,
// --reset, --register and --unregister.
func TestRewindResetRegister(t *testing.T) {
	t.Parallel()
	e := setup(t)
	lc, err := local.New(e.Pool, e.cfg(t), nop)
	require.NoError(t, err)

	moved, err := lc.Rewind(e.Ctx)
	require.NoError(t, err)
	require.False(t, moved, "no file: nothing to rewind to")

	e.Produce(t, 1, nil)
	t2 := e.Tick(t)
	e.Produce(t, 1, nil)
	t3 := e.Tick(t)
	e.consumeQueue(t)
	require.Equal(t, t3, e.Info(t).LastTick)
	e.writeTick(t, t2)
	tick, ok, err := lc.LocalTick()
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, t2, tick)
	moved, err = lc.Rewind(e.Ctx)
	require.NoError(t, err)
	require.True(t, moved)
	require.Equal(t, t2, e.Info(t).LastTick, "--rewind: the queue goes to the file's tick")

	require.NoError(t, lc.Reset())
	_, ok, err = lc.LocalTick()
	require.NoError(t, err)
	require.False(t, ok, "--reset: the file is gone")

	// --unregister removes the file; --register of a new consumer removes
	// a stale one; of a registered one keeps it.
	e.writeTick(t, t2)
	removed, err := lc.Unregister(e.Ctx)
	require.NoError(t, err)
	require.True(t, removed)
	require.False(t, fileExists(e.file))
	e.writeTick(t, t2)
	created, err := lc.Register(e.Ctx)
	require.NoError(t, err)
	require.True(t, created)
	require.False(t, fileExists(e.file))
	e.writeTick(t, t2)
	created, err = lc.Register(e.Ctx)
	require.NoError(t, err)
	require.False(t, created)
	require.True(t, fileExists(e.file))
	removed, err = lc.Unregister(e.Ctx)
	require.NoError(t, err)
	require.True(t, removed)
	e.writeTick(t, t2)
	removed, err = lc.Unregister(e.Ctx)
	require.NoError(t, err)
	require.False(t, removed, "not registered: the file is kept")
	require.True(t, fileExists(e.file))
	require.False(t, errors.Is(err, pgq.ErrNotRegistered))
}
