package pgtest

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// moduleRoot is the directory of go.mod above the working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("pgtest: no go.mod above the working directory")
		}
		dir = parent
	}
}

// ReadFixture reads a shared fixture from the module's top-level testdata
// directory: the demo schema (demo.sql), the hostile-string corpus
// (hostile.json), Skytools samples (skytools/...).
func ReadFixture(name string) ([]byte, error) {
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	return os.ReadFile(filepath.Join(root, "testdata", name))
}

// Fixture is ReadFixture failing t on error.
func Fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := ReadFixture(name)
	if err != nil {
		t.Fatalf("pgtest: fixture %s: %v", name, err)
	}
	return b
}

// FixturePath returns the path of a shared fixture, for code that takes a
// file name.
func FixturePath(t testing.TB, name string) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatalf("pgtest: fixture %s: %v", name, err)
	}
	return filepath.Join(root, "testdata", name)
}

// Hostile returns the hostile-string corpus (testdata/hostile.json):
// SQL injection attempts, quotes of every kind, dollar quoting, comments,
// control characters, non-ASCII text, URL-encoding look-alikes, empty and
// NULL-looking strings. Every layer that carries user text must carry each
// of them verbatim.
func Hostile(t testing.TB) []string {
	t.Helper()
	var out []string
	if err := json.Unmarshal(Fixture(t, "hostile.json"), &out); err != nil {
		t.Fatalf("pgtest: hostile.json: %v", err)
	}
	return out
}
