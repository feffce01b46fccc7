// Package harness measures pgq-go against the raw PostgreSQL ceiling on the
// same server in the same run: bulk and pipelined inserts, streamed and
// ticked consumption, remote copy, latency, consumer memory, a ticker
// serving many queues, targeted copy, and targeted copy against the seed
// it replaces. The bench command (go run ./bench, make bench) prints
// the table and writes bench/results.json; the Benchmark functions in
// bench_test.go run the same measurements under go test -bench.
package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"
)

// Families of cases, in the order they run; Options.Cases selects some.
var Families = []string{"insert", "apply", "consume", "latency", "ticker", "targeted", "seed"}

// Options configure a Run.
type Options struct {
	// DSN is a superuser (or CREATEDB + create extension) DSN of the
	// server to use; "" starts a throwaway cluster.
	DSN string
	// Runs is how many times each case is measured; the median is
	// reported. Default 3.
	Runs int
	// Scale multiplies every event count (1: the sizes of the issue,
	// 1M-event batches). Default 1.
	Scale float64
	// Cases are the families to run (see Families); nil runs all.
	Cases []string
	// Nodes are the targeted-copy cluster sizes; nil: 4, 16, 64.
	Nodes []int
	// HubConns is the size of the hub pool every copier of a targeted-copy
	// cluster shares; 0: hubPoolSize's rule.
	HubConns int
	// Routing limits the targeted copy to one routing ("shared" or
	// "per-target"); "": both.
	Routing string
	// Out is the results.json path; "" writes none.
	Out string
	// Command is recorded in the report ("make bench").
	Command string
	// Child is the command line that re-executes this program in child
	// mode (see ChildMain); its environment gets the child's settings.
	// Nil skips the peak-RSS case.
	Child []string
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

func (o Options) withDefaults() Options {
	if o.Runs <= 0 {
		o.Runs = 3
	}
	if o.Scale <= 0 {
		o.Scale = 1
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	return o
}

func (o Options) n(base int) int { return max(1, int(float64(base)*o.Scale)) }

func (o Options) want(family string) bool {
	return len(o.Cases) == 0 || slices.Contains(o.Cases, family)
}

// Result is one row of the table.
type Result struct {
	Case string `json:"case"`
	Unit string `json:"unit"`
	// Ours is the median of OursRuns.
	Ours     float64   `json:"ours"`
	OursRuns []float64 `json:"ours_runs"`
	// Ceiling is the median of CeilingRuns, measured in the same runs.
	Ceiling     float64   `json:"ceiling,omitempty"`
	CeilingRuns []float64 `json:"ceiling_runs,omitempty"`
	CeilingWhat string    `json:"ceiling_what,omitempty"`
	// Ratio is the median of the per-run ratios ours/ceiling (for a
	// duration or memory, ceiling/ours), so drift between runs cancels.
	Ratio  float64 `json:"ratio,omitempty"`
	Target string  `json:"target"`
	// Met is nil when the target is "report".
	Met *bool `json:"met,omitempty"`
	// Values holds the row's other figures (p99, CPU per event, ...).
	Values map[string]float64 `json:"values,omitempty"`
	Events int                `json:"events,omitempty"`
	Note   string             `json:"note,omitempty"`

	oursText, ceilText string
}

// Report is what a Run measured.
type Report struct {
	Command  string     `json:"command"`
	Started  time.Time  `json:"started"`
	Seconds  float64    `json:"seconds"`
	Machine  Machine    `json:"machine"`
	Server   ServerInfo `json:"server"`
	Runs     int        `json:"runs"`
	Scale    float64    `json:"scale"`
	Results  []Result   `json:"results"`
	Notes    []string   `json:"notes,omitempty"`
	Failures []string   `json:"failures,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs   int    `json:"cpus"`
	CPU    string `json:"cpu,omitempty"`
	OS     string `json:"os"`
	Go     string `json:"go"`
	Server string `json:"server"` // "throwaway cluster (pgtest)" or "--dsn"
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// Run measures the selected case families and returns the report; it
// writes the table to w and the JSON to o.Out. A failing family is
// recorded in Report.Failures and the others still run.
func Run(ctx context.Context, o Options, w io.Writer) (*Report, error) {
	o = o.withDefaults()
	start := time.Now()
	logf := func(format string, args ...any) {
		fmt.Fprintf(o.Log, "bench %6.1fs: "+format+"\n", append([]any{time.Since(start).Seconds()}, args...)...)
	}
	for _, c := range o.Cases {
		if !slices.Contains(Families, c) {
			return nil, fmt.Errorf("bench: unknown case family %q (have %s)", c, strings.Join(Families, ", "))
		}
	}
	logf("starting server")
	env, err := Open(ctx, o.DSN)
	if err != nil {
		return nil, err
	}
	defer env.Close()
	rep := &Report{
		Command: o.Command, Started: start.UTC(), Runs: o.Runs, Scale: o.Scale,
		Machine: Machine{CPUs: runtime.NumCPU(), CPU: cpuModel(), OS: runtime.GOOS + "/" + runtime.GOARCH,
			Go: runtime.Version(), Server: "throwaway cluster (internal/pgcluster)"},
	}
	if !env.Throwaway {
		rep.Machine.Server = "existing server (--dsn or PGQ_TEST_DSN)"
	}
	info, err := env.CreateDB(ctx, "info", true, 2)
	if err != nil {
		return nil, err
	}
	rep.Server = env.serverInfo(ctx, info)
	env.DropDB(info)

	s := &suite{o: o, env: env, logf: logf, rep: rep}
	for _, f := range []struct {
		name string
		run  func(context.Context) error
	}{
		{"insert", s.insertFamily},
		{"apply", s.applyFamily},
		{"consume", s.consumeFamily},
		{"latency", s.latencyFamily},
		{"ticker", s.tickerFamily},
		{"targeted", s.targetedFamily},
		{"seed", s.seedFamily},
	} {
		if !o.want(f.name) {
			continue
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		logf("== %s", f.name)
		if err := f.run(ctx); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			logf("%s failed: %v", f.name, err)
			rep.Failures = append(rep.Failures, fmt.Sprintf("%s: %v", f.name, err))
		}
	}
	rep.Seconds = time.Since(start).Seconds()
	PrintTable(w, rep)
	if o.Out != "" {
		if err := WriteJSON(o.Out, rep); err != nil {
			return rep, err
		}
		logf("wrote %s", o.Out)
	}
	if len(rep.Failures) > 0 {
		return rep, errors.New("bench: some cases failed: " + strings.Join(rep.Failures, "; "))
	}
	return rep, nil
}

// suite is the state of one Run.
type suite struct {
	o    Options
	env  *Env
	logf func(string, ...any)
	rep  *Report
}

func (s *suite) add(r Result) {
	s.rep.Results = append(s.rep.Results, r)
	s.logf("%s: %s (ceiling %s, ratio %s)", r.Case, r.oursCell(), r.ceilCell(), r.ratioCell())
}

func (s *suite) note(format string, args ...any) {
	s.rep.Notes = append(s.rep.Notes, fmt.Sprintf(format, args...))
}

// WriteJSON writes the report, creating the directory.
func WriteJSON(path string, rep *Report) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// PrintTable writes the report as a Markdown table with the notes below.
func PrintTable(w io.Writer, rep *Report) {
	fmt.Fprintf(w, "\npgq-go bench — %d CPUs (%s), %s, PostgreSQL %s, pgq %s, %s; median of %d runs",
		rep.Machine.CPUs, rep.Machine.CPU, rep.Machine.Go, rep.Server.Version, rep.Server.PgqVer, rep.Machine.Server, rep.Runs)
	if rep.Scale != 1 {
		fmt.Fprintf(w, ", scale %g", rep.Scale)
	}
	fmt.Fprintf(w, "\nserver settings: %s\n\n", rep.Server.Settings)
	rows := [][]string{{"case", "ours", "ceiling (same run)", "ratio", "target", "met"}}
	for _, r := range rep.Results {
		rows = append(rows, []string{r.Case, r.oursCell(), r.ceilCell(), r.ratioCell(), r.Target, r.metCell()})
	}
	widths := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, c := range row {
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	line := func(row []string) {
		fmt.Fprint(w, "|")
		for i, c := range row {
			fmt.Fprintf(w, " %s%s |", c, strings.Repeat(" ", widths[i]-len([]rune(c))))
		}
		fmt.Fprintln(w)
	}
	line(rows[0])
	sep := make([]string, len(widths))
	for i, n := range widths {
		sep[i] = strings.Repeat("-", n)
	}
	line(sep)
	for _, row := range rows[1:] {
		line(row)
	}
	var notes []string
	for _, r := range rep.Results {
		if r.Note != "" {
			notes = append(notes, r.Case+": "+r.Note)
		}
	}
	notes = append(notes, rep.Notes...)
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintf(w, "- %s\n", n)
		}
	}
	for _, f := range rep.Failures {
		fmt.Fprintf(w, "- FAILED %s\n", f)
	}
	fmt.Fprintf(w, "\n%.0f s in all.\n", rep.Seconds)
}

func (r Result) oursCell() string {
	if r.oursText != "" {
		return r.oursText
	}
	return formatValue(r.Ours, r.Unit)
}

func (r Result) ceilCell() string {
	if r.ceilText != "" {
		return r.ceilText
	}
	if r.Ceiling == 0 {
		return "—"
	}
	s := formatValue(r.Ceiling, r.Unit)
	if r.CeilingWhat != "" {
		s += " (" + r.CeilingWhat + ")"
	}
	return s
}

func (r Result) ratioCell() string {
	if r.Ratio == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f", r.Ratio)
}

func (r Result) metCell() string {
	switch {
	case r.Met == nil:
		return "—"
	case *r.Met:
		return "yes"
	default:
		return "**no**"
	}
}

func formatValue(v float64, unit string) string {
	switch unit {
	case "events/s":
		return formatRate(v)
	case "ms":
		return fmt.Sprintf("%.1f ms", v)
	case "MiB":
		return fmt.Sprintf("%.1f MiB", v)
	}
	return fmt.Sprintf("%.3g %s", v, unit)
}

func formatRate(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM ev/s", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk ev/s", v/1e3)
	}
	return fmt.Sprintf("%.0f ev/s", v)
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// percentile returns the p-th percentile (0..100) of xs, nearest rank.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	sort.Float64s(s)
	k := int(float64(len(s))*p/100+0.999999) - 1
	return s[min(max(k, 0), len(s)-1)]
}

// rateResult builds a throughput row from per-run events/s figures.
func rateResult(name string, ours, ceil []float64, ceilWhat, target string, minRatio float64) Result {
	r := Result{Case: name, Unit: "events/s", OursRuns: ours, CeilingRuns: ceil, CeilingWhat: ceilWhat, Target: target}
	r.Ours = median(ours)
	if len(ceil) > 0 {
		r.Ceiling = median(ceil)
		var ratios []float64
		for i := range min(len(ours), len(ceil)) {
			if ceil[i] > 0 {
				ratios = append(ratios, ours[i]/ceil[i])
			}
		}
		r.Ratio = median(ratios)
	}
	if minRatio > 0 {
		met := r.Ratio >= minRatio
		r.Met = &met
	}
	return r
}

func rate(n int, d time.Duration) float64 { return float64(n) / d.Seconds() }
