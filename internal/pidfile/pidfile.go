// Package pidfile writes and checks the pidfiles of pgq-go's daemons
// (pgqctl ticker, pgqctl job run), as pgqd and Skytools scripts do: a
// pidfile naming another live process means the daemon already runs.
package pidfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Alive reports the pid path names and whether that process runs
// (this process included).
func Alive(path string) (int, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	if pid == os.Getpid() {
		return pid, true
	}
	err = syscall.Kill(pid, 0)
	return pid, err == nil || errors.Is(err, syscall.EPERM)
}

// RunningError is Claim's error when another live process holds the
// pidfile; the caller says what that means for its daemon.
type RunningError struct {
	Path string
	PID  int
}

func (e *RunningError) Error() string {
	return fmt.Sprintf("pidfile %s: process %d is running", e.Path, e.PID)
}

// Claim writes this process's pid to path (replacing it atomically, and
// creating its directory), unless another live process holds it: then it
// fails with a *RunningError. A stale pidfile is replaced.
func Claim(path string) error {
	if pid, alive := Alive(path); alive && pid != os.Getpid() {
		return &RunningError{Path: path, PID: pid}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("pidfile %s: %w", path, err)
	}
	if err := WriteAtomic(path, []byte(strconv.Itoa(os.Getpid())+"\n")); err != nil {
		return fmt.Errorf("pidfile %s: %w", path, err)
	}
	return nil
}

// Release removes path if it names this process.
func Release(path string) {
	if pid, _ := Alive(path); pid == os.Getpid() {
		os.Remove(path)
	}
}

// WriteAtomic replaces path with b through a temporary file in the same
// directory and a rename, so a reader sees the old or the new content.
func WriteAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(b)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}
