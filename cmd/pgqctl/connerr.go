package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
)

// Connection failures, said the way an operator reads them.
//
// pgx tries each address of a connection string in turn and, with
// sslmode=prefer (libpq's default), each one twice: TLS, then plaintext.
// When every attempt fails it joins their errors under "failed to connect
// to `user=... database=...`:", so the first thing an operator read was
// often "tls error: server refused TLS connection" (the server merely has
// SSL off) and the cause ("password authentication failed", "database
// does not exist", "connection refused") came last. pgqctl reports the
// cause first, on one line:
//
//	cannot connect to database "app" on 10.0.0.5:5432 as user "pgq": password authentication failed for user "pgq" (SQLSTATE 28P01)

// connectError is a failed connection with a readable message; it wraps
// pgx's error (errors.As finds the *pgconn.ConnectError and the
// *pgconn.PgError in it).
type connectError struct {
	msg string
	err error
}

func (e *connectError) Error() string { return e.msg }
func (e *connectError) Unwrap() error { return e.err }

// readableConnectError returns err with its *pgconn.ConnectError, if it
// has one, described by connectMessage; other errors are returned as
// they are.
func readableConnectError(err error) error {
	var ce *pgconn.ConnectError
	if err == nil || !errors.As(err, &ce) || ce.Config == nil {
		return err
	}
	msg := connectMessage(ce)
	if full := err.Error(); full != ce.Error() {
		// wrapped, as in the ticker's "connect: ...": keep the context.
		msg = strings.Replace(full, ce.Error(), msg, 1)
	}
	return &connectError{msg: msg, err: err}
}

// attemptCause is what one connection attempt ran into.
type attemptCause struct {
	addr string // "127.0.0.1:5432"; "" when unknown
	text string
	rank int // 0: the server answered; 1: network, DNS, other; 2: TLS negotiation
}

// connectMessage describes a failed connection from pgx's error.
func connectMessage(ce *pgconn.ConnectError) string {
	var causes []attemptCause
	for _, a := range flatten(errors.Unwrap(ce)) {
		causes = append(causes, causeOf(a))
	}
	if len(causes) == 0 {
		return ce.Error()
	}
	addr := net.JoinHostPort(ce.Config.Host, strconv.Itoa(int(ce.Config.Port)))
	return describeConnect(ce.Config.Database, ce.Config.User, addr, causes)
}

// describeConnect says what was tried (addr when no attempt names its
// address), then the most telling cause (the server's own error before a
// network error, before a TLS negotiation error, which with
// sslmode=prefer is followed by a plaintext attempt anyway), then any
// other distinct cause.
func describeConnect(db, user, addr string, causes []attemptCause) string {
	best := 0
	for i, c := range causes {
		if c.rank < causes[best].rank {
			best = i
		}
	}
	primary := causes[best]
	if primary.addr != "" {
		addr = primary.addr
	}
	msg := fmt.Sprintf("cannot connect to database %q on %s as user %q: %s", db, addr, user, primary.text)
	seen := map[string]bool{primary.addr + primary.text: true}
	var also []string
	for _, c := range causes {
		if c.rank > 1 && primary.rank <= 1 || seen[c.addr+c.text] {
			continue // TLS refused, then plaintext reached the server: noise
		}
		seen[c.addr+c.text] = true
		if c.addr != "" && c.addr != primary.addr {
			also = append(also, c.addr+": "+c.text)
		} else {
			also = append(also, c.text)
		}
	}
	if len(also) > 0 {
		msg += "; also " + strings.Join(also, "; ")
	}
	return msg
}

// connectFailedRE is pgx's text of a *pgconn.ConnectError (1: user, 2:
// database, 3: the attempts' errors, one per line after "\n\t" or one
// after a space) and of one attempt (1: address, 2: cause).
var (
	connectFailedRE = regexp.MustCompile("failed to connect to `user=(.*) database=(.*)`:( .*|(?:\n\t.*)+)$")
	attemptRE       = regexp.MustCompile(`^(\S+) \([^()]*\): (.*)$`)
)

// readableConnectText does for an error's text what readableConnectError
// does for the error (the ticker's stats carry the last error as text).
func readableConnectText(s string) string {
	m := connectFailedRE.FindStringSubmatchIndex(s)
	if m == nil {
		return s
	}
	user, db, rest := s[m[2]:m[3]], s[m[4]:m[5]], s[m[6]:m[7]]
	var causes []attemptCause
	for _, line := range strings.Split(strings.TrimPrefix(strings.TrimPrefix(rest, " "), "\n\t"), "\n\t") {
		var c attemptCause
		if a := attemptRE.FindStringSubmatch(line); a != nil {
			c.addr, line = a[1], a[2]
		}
		c.rank, c.text = 1, line
		switch i := max(strings.Index(line, "FATAL: "), strings.Index(line, "ERROR: ")); {
		case strings.Contains(line, "(SQLSTATE ") && i >= 0:
			c.rank, c.text = 0, line[i+len("FATAL: "):]
		case strings.HasSuffix(line, "connection refused"):
			c.text = connRefused
		case strings.HasPrefix(line, "tls error: "):
			c.rank = 2
		}
		causes = append(causes, c)
	}
	return s[:m[0]] + describeConnect(db, user, "?", causes)
}

const connRefused = "connection refused (is PostgreSQL running and accepting TCP connections there?)"

// flatten lists the errors joined in err (errors.Join, recursively).
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var out []error
	for _, e := range j.Unwrap() {
		out = append(out, flatten(e)...)
	}
	return out
}

// causeOf reads one attempt's error: pgx's per-address error is
// "ADDR (HOST): STAGE: CAUSE", and unwraps to "STAGE: CAUSE".
func causeOf(err error) attemptCause {
	var c attemptCause
	inner := err
	if u := errors.Unwrap(err); u != nil {
		if prefix, ok := strings.CutSuffix(err.Error(), ": "+u.Error()); ok && strings.HasSuffix(prefix, ")") {
			if addr, _, ok := strings.Cut(prefix, " ("); ok {
				c.addr, inner = addr, u
			}
		}
	}
	var pgErr *pgconn.PgError
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &pgErr):
		c.rank, c.text = 0, fmt.Sprintf("%s (SQLSTATE %s)", pgErr.Message, pgErr.Code)
	case errors.Is(err, syscall.ECONNREFUSED):
		c.rank, c.text = 1, connRefused
	case errors.Is(err, syscall.ENOENT) && strings.HasPrefix(c.addr, "/"):
		c.rank, c.text = 1, "no such socket (is PostgreSQL running, with its socket in that directory?)"
	case errors.As(err, &dnsErr):
		c.rank, c.text = 1, fmt.Sprintf("cannot resolve host %q: %s", dnsErr.Name, dnsErr.Err)
	case strings.HasPrefix(inner.Error(), "tls error: "):
		c.rank, c.text = 2, inner.Error()
	default:
		c.rank, c.text = 1, inner.Error()
	}
	return c
}

// replaceConnectErrors is a slog ReplaceAttr that logs connection errors
// (the ticker's) as readableConnectError does, and the text of one (the
// ticker's stats' last_error) as readableConnectText does.
func replaceConnectErrors(_ []string, a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindAny:
		if err, ok := a.Value.Any().(error); ok {
			if r := readableConnectError(err); r != err {
				return slog.String(a.Key, r.Error())
			}
		}
	case slog.KindString:
		if s := a.Value.String(); strings.Contains(s, "failed to connect to `") {
			return slog.String(a.Key, readableConnectText(s))
		}
	}
	return a
}
