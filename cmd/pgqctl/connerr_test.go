package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// TestConnectErrorsLeadWithCause: with sslmode=prefer (the default) pgx
// tries TLS, then plaintext, and joins both failures; pgqctl reports the
// real cause on one line, without the TLS refusal.
func TestConnectErrorsLeadWithCause(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The test cluster's DSN without sslmode=disable: libpq's default,
	// prefer, against a server without SSL.
	base := strings.Replace(strings.Replace(cluster.DSN("x"), " sslmode=disable", "", 1), " dbname=x", "", 1)
	require.NotContains(t, base, "sslmode")
	cfg, err := pgx.ParseConfig(base)
	require.NoError(t, err)
	server := net.JoinHostPort(cfg.Host, itoa(int64(cfg.Port)))
	_, err = pgx.Connect(ctx, base+" dbname=nope_db")
	require.ErrorContains(t, err, "tls error: server refused TLS connection", "pgx's own error has the TLS noise")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())

	for _, tc := range []struct {
		name, dsn, want string
	}{
		{"wrong database", base + " dbname=nope_db",
			`cannot connect to database "nope_db" on ` + server + ` as user "postgres": database "nope_db" does not exist (SQLSTATE 3D000)`},
		{"wrong user", base + " dbname=postgres user=nobody_x",
			`cannot connect to database "postgres" on ` + server + ` as user "nobody_x": role "nobody_x" does not exist (SQLSTATE 28000)`},
		{"closed port", "host=127.0.0.1 port=" + itoa(int64(closed)) + " user=u dbname=d",
			`cannot connect to database "d" on 127.0.0.1:` + itoa(int64(closed)) + ` as user "u": connection refused (is PostgreSQL running and accepting TCP connections there?)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, c := range []struct {
				name string
				args []string
			}{
				{"status", []string{"status", "--dsn", tc.dsn}},
				{"queue create", []string{"queue", "create", "q", "--dsn", tc.dsn}},
				{"parked list", []string{"parked", "list", "--dsn", tc.dsn}},
			} {
				code, _, errOut := pgqctl(t, c.args...)
				require.Equal(t, 1, code, "%q: %s", c.args, errOut)
				require.Equal(t, "pgqctl "+c.name+": "+tc.want+"\n", errOut, "%q", c.args)
			}
		})
	}

	// The ticker logs a failing database's cause the same way, also in
	// its stats, which carry the error as text.
	runCtx, stop := context.WithCancel(ctx)
	var out syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(runCtx, []string{"ticker", "--dsn", base + " dbname=nope_db", "--stats-period", "0.1"}, &out, &out)
	}()
	require.Eventually(t, func() bool { return logged(out.String(), "ticker: stats", "last_error=") }, 20*time.Second, 10*time.Millisecond)
	stop()
	<-done
	cause := `cannot connect to database \"nope_db\" on ` + server + ` as user \"postgres\": database \"nope_db\" does not exist (SQLSTATE 3D000)`
	require.True(t, logged(out.String(), "database failing", `err="connect: `+cause+`"`), out.String())
	require.True(t, logged(out.String(), "ticker: stats", `last_error="connect: `+cause+`"`), out.String())
	require.NotContains(t, out.String(), "tls error")

	// The text of pgx's error reads as the error does.
	for _, dsn := range []string{base + " dbname=nope_db", base + " dbname=postgres user=nobody_x",
		"host=127.0.0.1 port=" + itoa(int64(closed)) + " user=u dbname=d"} {
		_, err := pgx.Connect(ctx, dsn)
		require.Error(t, err)
		require.Equal(t, readableConnectError(err).Error(), readableConnectText(err.Error()), dsn)
		wrapped := fmt.Errorf("connect: %w", err)
		require.Equal(t, readableConnectError(wrapped).Error(), readableConnectText(wrapped.Error()), dsn)
	}
	require.Equal(t, "no connection error", readableConnectText("no connection error"))
}
