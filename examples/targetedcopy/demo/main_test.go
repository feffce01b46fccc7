package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestNodeSpecs(t *testing.T) {
	env := func(n int) func(string) string {
		return func(k string) string {
			var i int
			if _, err := fmt.Sscanf(k, "PGQ_DSN_N%d", &i); err == nil && i >= 1 && i <= n {
				return "dbname=n" + fmt.Sprint(i)
			}
			return ""
		}
	}
	specs, err := nodeSpecs(nil, 16, true, env(16))
	require.NoError(t, err)
	require.Len(t, specs, 16)
	require.Equal(t, "n16=dbname=n16", specs[15])

	_, err = nodeSpecs(nil, 16, true, env(4))
	require.ErrorContains(t, err, "PGQ_DSN_N5 is not set")
	require.ErrorContains(t, err, "make demo NODES=16")

	for _, n := range []int{-1, 0, 1, 257, 1000} {
		_, err = nodeSpecs(nil, n, true, env(1000))
		require.ErrorContains(t, err, fmt.Sprintf("--nodes %d: want 2..256 nodes", n))
	}
	_, err = nodeSpecs([]string{"a=x"}, 4, false, env(0))
	require.ErrorContains(t, err, "--nodes 1: want 2..256", "one --node is too few")

	given := []string{"a=x", "b=y", "c=z"}
	specs, err = nodeSpecs(given, 4, false, env(0))
	require.NoError(t, err, "--node flags set the count when --nodes is left at its default")
	require.Equal(t, given, specs)
	_, err = nodeSpecs(given, 4, true, env(0))
	require.ErrorContains(t, err, "--nodes 4 but 3 --node flags")
}

func TestDefaults(t *testing.T) {
	require.Equal(t, 2000, defaultRows(4), "the 4-node demo keeps its size")
	require.Equal(t, 50*time.Millisecond, tickPeriod(4))
	require.Equal(t, 800*time.Millisecond, tickPeriod(64))
	require.Equal(t, 2*time.Second, tickPeriod(256))
	for _, n := range []int{2, 4, 16, 17, 64, 256} {
		// Rows delivered: each row goes to about half the other nodes.
		delivered := n * defaultRows(n) * (n - 1) / 2
		require.LessOrEqual(t, delivered, max(3000*n, 48000)+n*(n-1), "n=%d", n)
		require.Positive(t, defaultRows(n))
	}
}

func TestPrintTable(t *testing.T) {
	mk := func(n, failed int) []nodeResult {
		var rs []nodeResult
		for i := 1; i <= n; i++ {
			r := nodeResult{name: fmt.Sprintf("n%d", i), expected: 10, applied: 10}
			if i <= failed {
				r.missing, r.applied = 1, 9
			}
			rs = append(rs, r)
		}
		return rs
	}
	var out bytes.Buffer
	require.True(t, printTable(&out, mk(64, 0)))
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 1+64+1, "header, a line per node, total")
	require.Regexp(t, `^\s+total\s+640\s+640\s+0\s+0\s+0\s+0$`, lines[len(lines)-1])

	out.Reset()
	require.False(t, printTable(&out, mk(200, 3)))
	lines = strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 1+3+1+1, "header, the failed nodes, total, summary")
	require.Regexp(t, `^\s+n3\s+10\s+9\s+1\s`, lines[3])
	require.Equal(t, "200 nodes (table lists only failed ones), 197 OK, 3 failed; 10 to 10 rows expected per node", lines[5])

	out.Reset()
	require.False(t, printTable(&out, mk(100, 70)))
	require.Contains(t, out.String(), "... 6 more failed nodes", "at most 64 failed nodes listed")
}
