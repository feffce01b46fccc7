// Package pgcluster starts and manages throwaway PostgreSQL clusters with
// the pgq extension: for the tests (through internal/pgtest), for the
// benchmarks (go run ./bench), and for the demo sandbox. It imports no test
// code (no testing, goleak or testify), so a program may link it.
//
// A cluster lives in a temporary directory, listens on 127.0.0.1 at a random
// free port and on a unix socket inside that directory, and runs with
// test-friendly settings (fsync=off, no full-page writes). When the process
// runs as root the server runs as the "postgres" OS user (PostgreSQL refuses
// to run as root). A watchdog process removes the server and its directory
// when the process ends for any reason, panics included.
//
// Set PGQ_TEST_DSN to a superuser DSN to use an existing server instead.
package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvDSN names the environment variable that points tests (and benchmarks) at
// an existing server (a superuser DSN) instead of a throwaway cluster.
const EnvDSN = "PGQ_TEST_DSN"

// Cluster is a PostgreSQL server: a throwaway one started by Start, or an
// existing one named by PGQ_TEST_DSN.
type Cluster struct {
	dir      string // data directory parent; "" for an external server
	bin      string
	port     int
	external string // DSN of an external server

	cred *syscall.Credential

	mu       sync.Mutex
	proc     *exec.Cmd
	exited   chan struct{}
	watchdog *exec.Cmd
	wdPipe   *os.File
}

// Options tunes a throwaway cluster started by StartWith. Zero fields take
// the defaults; an external server (PGQ_TEST_DSN) ignores them.
type Options struct {
	// MaxConnections is the server's max_connections. Default 300.
	MaxConnections int
}

// Start starts a throwaway cluster with the default Options, or connects
// to PGQ_TEST_DSN when set.
func Start() (*Cluster, error) { return StartWith(Options{}) }

// StartWith is Start with Options.
func StartWith(o Options) (*Cluster, error) {
	if o.MaxConnections < 0 {
		return nil, fmt.Errorf("pgcluster: Options.MaxConnections %d: want 0 (default 300) or more", o.MaxConnections)
	}
	if o.MaxConnections == 0 {
		o.MaxConnections = 300
	}
	if dsn := os.Getenv(EnvDSN); dsn != "" {
		return &Cluster{external: dsn}, nil
	}
	bin, err := findBinDir()
	if err != nil {
		return nil, err
	}
	c := &Cluster{bin: bin}
	if err := c.init(o); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.Start(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// MustStart is Start for a TestMain or a program's main: it exits the process
// with a clear message when the cluster cannot start.
func MustStart() *Cluster {
	c, err := Start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgcluster: %v\n", err)
		os.Exit(2)
	}
	return c
}

// findBinDir picks the newest installed PostgreSQL major version that also
// has the pgq extension installed.
func findBinDir() (string, error) {
	if d := os.Getenv("PG_BINDIR"); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	type cand struct {
		major int
		bin   string
	}
	var cands []cand
	for _, d := range dirs {
		bin := filepath.Dir(d)
		major, err := strconv.Atoi(filepath.Base(filepath.Dir(bin)))
		if err != nil {
			continue
		}
		cands = append(cands, cand{major, bin})
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].major > cands[j].major })
	for _, c := range cands {
		ctl := fmt.Sprintf("/usr/share/postgresql/%d/extension/pgq.control", c.major)
		if _, err := os.Stat(ctl); err == nil {
			return c.bin, nil
		}
	}
	if len(cands) == 0 {
		return "", errors.New("no PostgreSQL server binaries found under /usr/lib/postgresql; run scripts/ensure-deps (apt-get install -y postgresql-15 postgresql-15-pgq3)")
	}
	return "", fmt.Errorf("PostgreSQL %d is installed but its pgq extension is not; run: apt-get install -y postgresql-%d-pgq3", cands[0].major, cands[0].major)
}

func (c *Cluster) init(o Options) error {
	dir, err := os.MkdirTemp("", "pgcluster-")
	if err != nil {
		return err
	}
	c.dir = dir
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			u, err = user.Lookup("nobody")
		}
		if err != nil {
			return fmt.Errorf("running as root needs a postgres or nobody OS user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			return err
		}
	}
	if err := c.startWatchdog(); err != nil {
		return err
	}
	cmd := c.command(filepath.Join(c.bin, "initdb"), "-D", c.dataDir(), "-U", "postgres",
		"--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, out)
	}
	c.port, err = freePort()
	if err != nil {
		return err
	}
	conf := fmt.Sprintf(`
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%s'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = %d
shared_buffers = 128MB
max_prepared_transactions = 10
log_min_messages = warning
log_min_error_statement = panic
`, c.port, c.dir, o.MaxConnections)
	f, err := os.OpenFile(filepath.Join(c.dataDir(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString(conf)
	return err
}

// startWatchdog runs a small shell that waits for this process to end (its
// stdin pipe reaches EOF) and then kills the server and removes the directory.
func (c *Cluster) startWatchdog() error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	script := `cat >/dev/null
pid=$(head -n1 "$1/data/postmaster.pid" 2>/dev/null)
[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
rm -rf "$1"`
	cmd := exec.Command("/bin/sh", "-c", script, "pgcluster-watchdog", c.dir)
	cmd.Stdin = r
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return err
	}
	r.Close()
	c.watchdog, c.wdPipe = cmd, w
	return nil
}

func (c *Cluster) dataDir() string { return filepath.Join(c.dir, "data") }

func (c *Cluster) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Pdeathsig: syscall.SIGKILL, Setpgid: true}
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	return cmd
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start starts the server (again) and waits until it accepts connections.
func (c *Cluster) Start() error {
	if c.external != "" {
		return errors.New("pgcluster: cannot start an external server (PGQ_TEST_DSN)")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc != nil {
		return nil
	}
	logf, err := os.OpenFile(filepath.Join(c.dir, "server.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := c.command(filepath.Join(c.bin, "postgres"), "-D", c.dataDir())
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start postgres: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(exited)
	}()
	c.proc, c.exited = cmd, exited
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, c.DSN("postgres"))
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		select {
		case <-exited:
			c.proc = nil
			log, _ := os.ReadFile(filepath.Join(c.dir, "server.log"))
			return fmt.Errorf("postgres exited during start-up:\n%s", log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres did not accept connections within 60s: %w", err)
		}
	}
}

// Stop stops the server with a fast shutdown (connections are terminated)
// and waits for it to exit.
func (c *Cluster) Stop() error { return c.stop(syscall.SIGINT) }

// Kill stops the server like a crash (SIGQUIT: immediate shutdown, crash
// recovery on the next start).
func (c *Cluster) Kill() error { return c.stop(syscall.SIGQUIT) }

func (c *Cluster) stop(sig syscall.Signal) error {
	if c.external != "" {
		return errors.New("pgcluster: cannot stop an external server (PGQ_TEST_DSN)")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		return nil
	}
	_ = c.proc.Process.Signal(sig)
	select {
	case <-c.exited:
	case <-time.After(60 * time.Second):
		_ = c.proc.Process.Kill()
		<-c.exited
	}
	c.proc = nil
	return nil
}

// Restart stops and starts the server; open connections are broken.
func (c *Cluster) Restart() error {
	if err := c.Stop(); err != nil {
		return err
	}
	return c.Start()
}

// Close stops the server and removes its directory.
func (c *Cluster) Close() {
	if c == nil || c.external != "" {
		return
	}
	_ = c.Stop()
	if c.wdPipe != nil {
		c.wdPipe.Close() // the watchdog removes the directory
		_ = c.watchdog.Wait()
		c.wdPipe = nil
	} else if c.dir != "" {
		os.RemoveAll(c.dir)
	}
}

// Addr is the server's TCP address (host:port).
func (c *Cluster) Addr() string {
	if c.external != "" {
		cfg, err := pgx.ParseConfig(c.external)
		if err != nil {
			return ""
		}
		return net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port))
}

// External reports whether the cluster is a server named by PGQ_TEST_DSN.
func (c *Cluster) External() bool { return c.external != "" }

// DSN returns a superuser DSN for database db on this cluster.
func (c *Cluster) DSN(db string) string {
	if c.external != "" {
		cfg, err := pgx.ParseConfig(c.external)
		if err != nil {
			return c.external
		}
		return fmt.Sprintf("host=%s port=%d user=%s password='%s' dbname=%s sslmode=disable",
			cfg.Host, cfg.Port, cfg.User, strings.ReplaceAll(cfg.Password, "'", `\'`), db)
	}
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=%s sslmode=disable", c.port, db)
}

// DSNVia returns DSN(db) with the host and port replaced by addr (a proxy).
func (c *Cluster) DSNVia(addr, db string) string {
	cfg, err := pgx.ParseConfig(c.DSN(db))
	if err != nil {
		return ""
	}
	host, port, _ := net.SplitHostPort(addr)
	return fmt.Sprintf("host=%s port=%s user=%s password='%s' dbname=%s sslmode=disable",
		host, port, cfg.User, strings.ReplaceAll(cfg.Password, "'", `\'`), db)
}
