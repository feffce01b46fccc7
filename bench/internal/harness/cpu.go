package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat (USER_HZ, 100
// on every Linux architecture).
const userHZ = 100

// procStat reads a process's ppid and CPU times (ticks): own utime+stime
// and reaped children's cutime+cstime.
func procStat(pid int) (ppid int, self, children int64, ok bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, 0, 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, 0, false
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 15 {
		return 0, 0, 0, false
	}
	num := func(k int) int64 { v, _ := strconv.ParseInt(f[k], 10, 64); return v }
	return int(num(1)), num(11) + num(12), num(13) + num(14), true
}

// cpuProbe reads server CPU time from /proc when the server runs on this
// machine.
type cpuProbe struct {
	postmaster int // 0 when the server is not local
}

// newCPUProbe finds the postmaster through the pid of a backend of pool,
// if that process is a local postgres.
func newCPUProbe(ctx context.Context, pool *pgxpool.Pool) *cpuProbe {
	var pid int
	if err := pool.QueryRow(ctx, "select pg_backend_pid()").Scan(&pid); err != nil {
		return &cpuProbe{}
	}
	comm, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "comm"))
	if err != nil || strings.TrimSpace(string(comm)) != "postgres" {
		return &cpuProbe{}
	}
	ppid, _, _, ok := procStat(pid)
	if !ok {
		return &cpuProbe{}
	}
	return &cpuProbe{postmaster: ppid}
}

func (p *cpuProbe) local() bool { return p.postmaster != 0 }

// clusterTicks is the CPU time of the whole server so far: the postmaster,
// its exited children (reaped: cutime+cstime) and its live children.
func (p *cpuProbe) clusterTicks() int64 {
	if !p.local() {
		return 0
	}
	_, self, reaped, ok := procStat(p.postmaster)
	if !ok {
		return 0
	}
	total := self + reaped
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, t, _, ok := procStat(pid); ok && ppid == p.postmaster {
			total += t
		}
	}
	return total
}

// backendTicks is a backend's CPU time so far and its application_name.
type backendTicks struct {
	ticks int64
	app   string
}

// dbTicks returns the CPU time so far of every backend connected to
// database db (or any of more), by pid.
func (p *cpuProbe) dbTicks(ctx context.Context, pool *pgxpool.Pool, db string, more ...string) (map[int]backendTicks, error) {
	if !p.local() {
		return nil, nil
	}
	rows, err := pool.Query(ctx, "select pid, coalesce(application_name, '') from pg_stat_activity where datname = any($1)", append([]string{db}, more...))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int]backendTicks{}
	for rows.Next() {
		var pid int
		var app string
		if err := rows.Scan(&pid, &app); err != nil {
			return nil, err
		}
		if _, t, _, ok := procStat(pid); ok {
			out[pid] = backendTicks{t, app}
		}
	}
	return out, rows.Err()
}

// ticksBetween is the CPU the backends selected by keep used between two
// dbTicks samples; a backend that started in between counts from zero,
// one that ended in between is lost (pools keep their connections, so
// none should).
func ticksBetween(a, b map[int]backendTicks, keep func(app string) bool) int64 {
	var d int64
	for pid, t := range b {
		if keep(t.app) {
			d += t.ticks - a[pid].ticks
		}
	}
	return d
}

// selfTicks is this process's CPU time so far (the copiers, producers
// and ticker the bench runs in-process).
func selfTicks() int64 {
	_, t, _, _ := procStat(os.Getpid())
	return t
}

func ticksToSeconds(t int64) float64 { return float64(t) / userHZ }

func (p *cpuProbe) String() string {
	if !p.local() {
		return "not local"
	}
	return fmt.Sprintf("postmaster %d", p.postmaster)
}
