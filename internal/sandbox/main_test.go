package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseDBs(t *testing.T) {
	got, err := parseDBs("demo,hub,n1..n3,p8..10:plain,q:plain")
	require.NoError(t, err)
	require.Equal(t, []database{{"demo", true}, {"hub", true}, {"n1", true}, {"n2", true}, {"n3", true},
		{"p8", false}, {"p9", false}, {"p10", false}, {"q", false}}, got)

	got, err = parseDBs("n1..n256")
	require.NoError(t, err)
	require.Len(t, got, 256)
	require.Equal(t, "n256", got[255].name)

	for spec, want := range map[string]string{
		"n1..n257":  "257 names, at most 256",
		"n1..n0":    "ends before it starts",
		"1..4":      "need a prefix",
		"n1..x4":    "share the prefix",
		"n1..nabc":  "does not end in a number",
		"a,,b":      "empty database name",
		"a:fancy":   "unknown kind",
		"n1..n3,n2": `"n2" named twice`,
	} {
		_, err := parseDBs(spec)
		require.ErrorContains(t, err, want, spec)
	}
}
