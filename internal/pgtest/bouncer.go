package pgtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// PgBouncer is a pgbouncer process in front of a cluster, started by a
// test (the Debian package pgbouncer; scripts/ensure-deps installs it).
type PgBouncer struct {
	t    testing.TB
	addr string
	bin  string
	conf string
	log  string
	cred *syscall.Credential
	mu   sync.Mutex
	cmd  *exec.Cmd
}

// NewPgBouncer starts pgbouncer in front of target (host:port) with
// pool_mode mode ("transaction", "session") and at most poolSize server
// connections per database; it stops when the test ends. Every database
// of target is served, logged in as postgres.
func NewPgBouncer(t testing.TB, target, mode string, poolSize int) *PgBouncer {
	t.Helper()
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		for _, p := range []string{"/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"} {
			if _, err2 := os.Stat(p); err2 == nil {
				bin, err = p, nil
				break
			}
		}
	}
	if err != nil {
		t.Fatalf("pgtest: pgbouncer is not installed (run scripts/ensure-deps): %v", err)
	}
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		t.Fatalf("pgtest: pgbouncer target %q: %v", target, err)
	}
	dir, err := os.MkdirTemp("", "pgbouncer-")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	// pgbouncer refuses to run as root: run it as postgres, as the server.
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("pgtest: pgbouncer as root needs the postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatalf("pgtest: %v", err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	listen := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	conf := fmt.Sprintf(`[databases]
* = host=%s port=%s user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = any
pool_mode = %s
default_pool_size = %d
max_client_conn = 2000
ignore_startup_parameters = extra_float_digits
server_reset_query =
logfile = %s
`, host, port, listen, mode, poolSize, filepath.Join(dir, "pgbouncer.log"))
	path := filepath.Join(dir, "pgbouncer.ini")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	b := &PgBouncer{t: t, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(listen)), bin: bin, conf: path,
		log: filepath.Join(dir, "pgbouncer.log"), cred: cred}
	t.Cleanup(b.stop)
	b.start()
	return b
}

func (b *PgBouncer) start() {
	b.t.Helper()
	cmd := exec.Command(b.bin, b.conf)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: b.cred, Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		b.t.Fatalf("pgtest: start pgbouncer: %v", err)
	}
	b.mu.Lock()
	b.cmd = cmd
	b.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", b.addr, time.Second)
		if err == nil {
			_ = c.Close()
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(b.log)
			b.t.Fatalf("pgtest: pgbouncer did not listen on %s: %v\n%s", b.addr, err, log)
		}
		time.Sleep(20 * time.Millisecond) // polling a port that is not open yet
	}
}

func (b *PgBouncer) stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd != nil {
		_ = b.cmd.Process.Kill()
		_ = b.cmd.Wait()
		b.cmd = nil
	}
}

// Kill SIGKILLs pgbouncer and starts it again on the same address: every
// client connection through it is cut, mid-transaction or not.
func (b *PgBouncer) Kill() {
	b.t.Helper()
	b.stop()
	b.start()
}

// Addr is pgbouncer's listening address.
func (b *PgBouncer) Addr() string { return b.addr }
