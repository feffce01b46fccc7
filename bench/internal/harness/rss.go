package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgq-go/pgq/consumer"
	"github.com/pgq-go/pgq/pgq"
)

// ChildEnv is the environment variable that puts a process in child mode:
// it holds the JSON of what the child must do. See ChildMain.
const ChildEnv = "PGQ_BENCH_CHILD"

// childSpec is what a child process does: consume Want events of Queue as
// Consumer (already registered) with consumer defaults.
type childSpec struct {
	DSN      string `json:"dsn"`
	Queue    string `json:"queue"`
	Consumer string `json:"consumer"`
	Want     int    `json:"want"`
}

// childResult is what the child prints on stdout.
type childResult struct {
	MaxRSSKiB  int64   `json:"maxrss_kib"`
	HeapSysKiB int64   `json:"heap_sys_kib"`
	Events     int     `json:"events"`
	Seconds    float64 `json:"seconds"`
}

// ChildMain runs the peak-RSS child when ChildEnv is set, writing its
// result to stdout, and reports whether it ran and the exit code. Call it
// first thing in main or TestMain:
//
//	if ran, code := harness.ChildMain(); ran { os.Exit(code) }
func ChildMain() (ran bool, code int) {
	spec := os.Getenv(ChildEnv)
	if spec == "" {
		return false, 0
	}
	var cs childSpec
	if err := json.Unmarshal([]byte(spec), &cs); err != nil {
		fmt.Fprintf(os.Stderr, "bench child: bad %s: %v\n", ChildEnv, err)
		return true, 2
	}
	res, err := runChild(context.Background(), cs)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench child: %v\n", err)
		return true, 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return true, 1
	}
	return true, 0
}

func runChild(ctx context.Context, cs childSpec) (childResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	pool, err := pgxpool.New(ctx, cs.DSN)
	if err != nil {
		return childResult{}, err
	}
	defer pool.Close()
	var seen int
	h := consumer.Events(consumer.EventHandlerFunc(func(_ context.Context, ev *pgq.Event) error {
		seen++
		return nil
	}))
	d, err := runUntil(ctx, cs.Want, func(hooks consumer.Hooks) (interface{ Run(context.Context) error }, error) {
		return consumer.New(pool, consumer.Config{Queue: cs.Queue, Name: cs.Consumer, Hooks: hooks}, h)
	})
	if err != nil {
		return childResult{}, err
	}
	peak, err := peakRSSKiB()
	if err != nil {
		return childResult{}, err
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return childResult{
		MaxRSSKiB:  peak,
		HeapSysKiB: int64(ms.HeapSys / 1024),
		Events:     seen,
		Seconds:    d.Seconds(),
	}, nil
}

// rssChild runs a child process that consumes the big batch and returns
// its peak RSS.
func (f *consumeFixture) rssChild(ctx context.Context, child []string) (childResult, error) {
	name, err := f.register(ctx, bigQueue, "rss", f.bigT0)
	if err != nil {
		return childResult{}, err
	}
	defer f.unregister(ctx, bigQueue, name)
	spec, err := json.Marshal(childSpec{DSN: f.db.DSN, Queue: bigQueue, Consumer: name, Want: f.n})
	if err != nil {
		return childResult{}, err
	}
	cmd := exec.CommandContext(ctx, child[0], child[1:]...)
	cmd.Env = append(os.Environ(), ChildEnv+"="+string(spec))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return childResult{}, fmt.Errorf("%v: %w\n%s", child, err, errb.String())
	}
	var res childResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		return childResult{}, fmt.Errorf("child output %q: %w", out.String(), err)
	}
	if res.Events != f.n {
		return childResult{}, fmt.Errorf("child consumed %d events, want %d", res.Events, f.n)
	}
	return res, nil
}

// peakRSSKiB is this process's peak resident set: VmHWM of
// /proc/self/status, which belongs to the process's own address space.
// getrusage's ru_maxrss is kept across execve, and Go starts a child by
// cloning with CLONE_VM|CLONE_VFORK: the child's ru_maxrss started at the
// parent's peak (213 MiB once the bench had built 200k rows for the apply
// case, for a consumer whose heap was 12 MiB). Without /proc it falls back
// to ru_maxrss.
func peakRSSKiB() (int64, error) {
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		if kib, ok := parseVmHWM(string(b)); ok {
			return kib, nil
		}
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return int64(ru.Maxrss), nil // KiB on Linux
}

// parseVmHWM reads "VmHWM:   1234 kB" from a /proc/<pid>/status text.
func parseVmHWM(status string) (int64, bool) {
	for _, line := range strings.Split(status, "\n") {
		rest, ok := strings.CutPrefix(line, "VmHWM:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, false
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		return n, err == nil
	}
	return 0, false
}
