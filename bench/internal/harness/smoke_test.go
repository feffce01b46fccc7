package harness

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSmoke runs the suite at a tiny scale so the bench code cannot rot
// between bench runs: every case runs once on a handful of events.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out := filepath.Join(t.TempDir(), "results.json")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	rep, err := Run(ctx, Options{Runs: 1, Scale: 0.001, Out: out, Cases: []string{"insert", "consume", "ticker"},
		DSN: testDSN(), Child: []string{exe, "-test.run=^$"}}, &table)
	if err != nil {
		t.Fatalf("%v\n%s", err, table.String())
	}
	if len(rep.Results) < 8 {
		t.Fatalf("%d results:\n%s", len(rep.Results), table.String())
	}
	if _, err := os.Stat(out); err != nil {
		t.Error(err)
	}
	for _, want := range []string{"bulk insert", "remote copy", "through remote.Pipeline", "peak RSS", "ticked by one ticker"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
}
