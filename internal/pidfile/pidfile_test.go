package pidfile

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestClaimAliveRelease(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "run", "x.pid") // its directory is created

	require.NoError(t, Claim(path))
	pid, alive := Alive(path)
	require.True(t, alive)
	require.Equal(t, os.Getpid(), pid)
	require.NoError(t, Claim(path), "claiming our own pidfile again is fine")

	// Another live process (our parent) holds it: refused, naming it.
	require.NoError(t, os.WriteFile(path, []byte(strconv.Itoa(os.Getppid())+"\n"), 0o644))
	err := Claim(path)
	var running *RunningError
	require.True(t, errors.As(err, &running), "%v", err)
	require.Equal(t, os.Getppid(), running.PID)
	require.ErrorContains(t, err, "process "+strconv.Itoa(os.Getppid())+" is running")
	Release(path)
	_, err = os.Stat(path)
	require.NoError(t, err, "another process's pidfile is not removed")

	// A stale or garbled pidfile is replaced.
	for _, stale := range []string{"2147483646\n", "not a pid", ""} {
		require.NoError(t, os.WriteFile(path, []byte(stale), 0o644))
		_, alive := Alive(path)
		require.False(t, alive, "%q", stale)
		require.NoError(t, Claim(path), "%q", stale)
	}
	Release(path)
	_, err = os.Stat(path)
	require.True(t, os.IsNotExist(err))
	entries, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	require.Empty(t, entries, "no temporary file left")
}
