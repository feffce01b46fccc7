package local

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestTrackingFileFormat: the file holds what Skytools' save_local_tick
// writes (str(tick_id): decimal, no newline) and is read as its
// load_local_tick reads it (stripped; empty or negative is no tick).
func TestTrackingFileFormat(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "job.tick")
	tick, ok, err := loadTick(file)
	require.NoError(t, err)
	require.False(t, ok, "no file, no tick")
	require.Zero(t, tick)

	require.NoError(t, saveTick(file, 1234567890123))
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	require.Equal(t, "1234567890123", string(b))
	_, err = os.Stat(file + ".new")
	require.ErrorIs(t, err, os.ErrNotExist)

	// A leftover from a crash mid-write (of either implementation) is
	// overwritten.
	require.NoError(t, os.WriteFile(file+".new", []byte("99999999999999999999 junk"), 0o644))
	require.NoError(t, saveTick(file, 42))
	b, err = os.ReadFile(file)
	require.NoError(t, err)
	require.Equal(t, "42", string(b))

	for _, tc := range []struct {
		content string
		tick    int64
		ok      bool
		err     string
	}{
		{"42", 42, true, ""},
		{" 42\n", 42, true, ""},
		{"\t7\r\n", 7, true, ""},
		{"", 0, false, ""},
		{"\n", 0, false, ""},
		{"-1", 0, false, ""},
		{"0", 0, false, "tick 0"},
		{"4 2", 0, false, `holds "4 2", not a tick id`},
		{"x", 0, false, `holds "x", not a tick id`},
		{"99999999999999999999", 0, false, "not a tick id"},
	} {
		require.NoError(t, os.WriteFile(file, []byte(tc.content), 0o644))
		tick, ok, err := loadTick(file)
		if tc.err != "" {
			require.ErrorIs(t, err, ErrTrackingFile, "%q", tc.content)
			require.ErrorContains(t, err, tc.err)
			require.ErrorContains(t, err, file)
			continue
		}
		require.NoError(t, err, "%q", tc.content)
		require.Equal(t, tc.ok, ok, "%q", tc.content)
		require.Equal(t, tc.tick, tick, "%q", tc.content)
	}

	require.NoError(t, removeTick(file))
	require.NoError(t, removeTick(file))
	_, ok, err = loadTick(file)
	require.NoError(t, err)
	require.False(t, ok)
}

// TestSaveTickFailureLeavesOldFile: a write that cannot complete leaves
// the previous tick in place and names the file.
func TestSaveTickFailureLeavesOldFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "job.tick")
	require.NoError(t, saveTick(file, 5))
	require.NoError(t, os.Mkdir(file+".new", 0o755)) // the temporary name is taken by a directory
	err := saveTick(file, 6)
	require.ErrorIs(t, err, ErrTrackingFile)
	require.ErrorContains(t, err, "save tick 6 to "+file)
	tick, ok, err := loadTick(file)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, int64(5), tick)
}
