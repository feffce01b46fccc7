package local

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// ErrTrackingFile marks an error about the tracking file itself: its
// directory is missing, it cannot be read or written, or it does not hold
// a tick id. Retrying does not fix these; Run stops with them.
var ErrTrackingFile = errors.New("local: tracking file error")

// fileError is an error about the tracking file: both ErrTrackingFile and
// the cause (an *fs.PathError, a strconv error) are reachable.
type fileError struct {
	msg string
	err error
}

func (e *fileError) Error() string   { return e.msg + ": " + e.err.Error() }
func (e *fileError) Unwrap() []error { return []error{ErrTrackingFile, e.err} }

func fileErr(err error, format string, args ...any) error {
	return &fileError{msg: fmt.Sprintf(format, args...), err: err}
}

// tmpSuffix names the file a new tick is written to before it replaces
// the tracking file: the name Skytools' write_atomic uses, so a leftover
// from a crash of either implementation is simply overwritten.
const tmpSuffix = ".new"

// trackingPath resolves a configured tracking file name: a leading "~"
// is the home directory (Skytools reads local_tracking_file with getfile,
// which expands it), and the result is absolute, so that a later change of
// the working directory does not move the file.
func trackingPath(name string) (string, error) {
	if name == "~" || strings.HasPrefix(name, "~/") || strings.HasPrefix(name, "~"+string(filepath.Separator)) {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("local: Config.TrackingFile %q: expand ~: %w", name, err)
		}
		name = filepath.Join(home, name[1:])
	}
	abs, err := filepath.Abs(name)
	if err != nil {
		return "", fmt.Errorf("local: Config.TrackingFile %q: %w", name, err)
	}
	return abs, nil
}

// checkTrackingPath checks what Skytools' LocalConsumer checks when it
// loads its configuration (the directory exists), and that the name is
// not a directory itself.
func checkTrackingPath(file string) error {
	dir := filepath.Dir(file)
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fileErr(err, "local: tracking file %s: directory %s does not exist (create it)", file, dir)
	case err != nil:
		return fileErr(err, "local: tracking file %s: directory %s", file, dir)
	case !st.IsDir():
		return fileErr(fs.ErrInvalid, "local: tracking file %s: %s is not a directory", file, dir)
	}
	if st, err := os.Stat(file); err == nil && st.IsDir() {
		return fileErr(fs.ErrInvalid, "local: tracking file %s is a directory", file)
	}
	return nil
}

// loadTick reads the last applied tick id from file, as Skytools'
// load_local_tick does: decimal text, surrounding white space ignored. ok
// is false when there is no tick: the file is missing or empty, or holds
// a negative number (Skytools' "no tick", -1).
func loadTick(file string) (tick int64, ok bool, err error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fileErr(err, "local: read tracking file %s", file)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return 0, false, nil
	}
	tick, err = strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, false, fileErr(err, "local: tracking file %s holds %q, not a tick id", file, trim(s))
	}
	if tick < 0 {
		return 0, false, nil
	}
	if tick == 0 {
		return 0, false, fileErr(strconv.ErrRange, "local: tracking file %s holds tick 0 (PgQ tick ids start at 1)", file)
	}
	return tick, true, nil
}

// trim shortens s for an error message.
func trim(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// saveTick stores tick in file atomically and durably: the decimal tick
// id, without a newline (byte for byte what Skytools' save_local_tick
// writes), goes to file+".new", which is synced, renamed over file, and
// the directory synced, so that after a crash the file holds the old tick
// or the new one, never a torn or empty one, and a returned nil means the
// new tick survives a power loss.
func saveTick(file string, tick int64) error {
	tmp := file + tmpSuffix
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o666)
	if err != nil {
		return fileErr(err, "local: save tick %d to %s", tick, file)
	}
	_, err = f.WriteString(strconv.FormatInt(tick, 10))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, file)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fileErr(err, "local: save tick %d to %s", tick, file)
	}
	if err := syncDir(filepath.Dir(file)); err != nil {
		return fileErr(err, "local: save tick %d to %s: sync directory", tick, file)
	}
	return nil
}

// removeTick removes file (Skytools' dst_reset); a missing file is fine.
func removeTick(file string) error {
	if err := os.Remove(file); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fileErr(err, "local: remove tracking file %s", file)
	}
	if err := syncDir(filepath.Dir(file)); err != nil {
		return fileErr(err, "local: remove tracking file %s: sync directory", file)
	}
	return nil
}

// syncDir makes a rename or removal in dir durable. Windows cannot sync a
// directory (and does not need to).
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
