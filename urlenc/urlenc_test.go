package urlenc_test

import (
	"fmt"
	"math"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/urlenc"
	"github.com/stretchr/testify/require"
)

// payloadSkytoolsVectors were produced with Skytools 3 (python3-skytools,
// /usr/lib/python3/dist-packages/skytools) by running
//
//	import skytools._pyquoting as p, skytools.quoting as q
//	p.db_urlencode(dict(sorted(row.items())))   # -> py
//	q.db_urlencode(dict(sorted(row.items())))   # -> c (the C extension, skytools' default)
//
// Our encoder must produce py exactly; our decoder must read both back to
// row. The two Skytools implementations differ: the C one writes lowercase
// hex and escapes '~'.
var payloadSkytoolsVectors = []struct {
	name  string
	row   map[string]*string
	py, c string
}{
	{"seed", payloadRow("action", "ins", "id", "1", "name", "test"),
		"action=ins&id=1&name=test", "action=ins&id=1&name=test"},
	{"space", payloadRow("a", "x y"), "a=x+y", "a=x+y"},
	{"quotes", payloadRow("q", `it's "quoted"`), "q=it%27s+%22quoted%22", "q=it%27s+%22quoted%22"},
	{"injection", payloadRow("sql", "'); drop table x; --"),
		"sql=%27%29%3B+drop+table+x%3B+--", "sql=%27%29%3b+drop+table+x%3b+--"},
	{"separators", payloadRow("amp", "a&b=c+d%e"), "amp=a%26b%3Dc%2Bd%25e", "amp=a%26b%3dc%2bd%25e"},
	{"backslash", payloadRow("bs", `C:\path\to`), "bs=C%3A%5Cpath%5Cto", "bs=C%3a%5cpath%5cto"},
	{"unicode", payloadRow("u", "żółw 日本 😀"),
		"u=%C5%BC%C3%B3%C5%82w+%E6%97%A5%E6%9C%AC+%F0%9F%98%80",
		"u=%c5%bc%c3%b3%c5%82w+%e6%97%a5%e6%9c%ac+%f0%9f%98%80"},
	{"empty and null", map[string]*string{"e": payloadStr(""), "n": nil}, "e=&n", "e=&n"},
	{"key escaping", payloadRow("k y&=", "v"), "k+y%26%3D=v", "k+y%26%3d=v"},
	{"punctuation", payloadRow("t", "~-_.*!()'/:?#[]@$,"),
		"t=~-_.%2A%21%28%29%27%2F%3A%3F%23%5B%5D%40%24%2C",
		"t=%7e-_.%2a%21%28%29%27%2f%3a%3f%23%5b%5d%40%24%2c"},
	{"control", payloadRow("nl", "line1\nline2\ttab\r"), "nl=line1%0Aline2%09tab%0D", "nl=line1%0aline2%09tab%0d"},
	{"dollar quoting", payloadRow("dollar", "$$ body $$"), "dollar=%24%24+body+%24%24", "dollar=%24%24+body+%24%24"},
}

func payloadStr(s string) *string { return &s }

func payloadRow(kv ...string) map[string]*string {
	m := map[string]*string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = payloadStr(kv[i+1])
	}
	return m
}

func TestPayloadSkytoolsCompatibility(t *testing.T) {
	for _, tc := range payloadSkytoolsVectors {
		t.Run(tc.name, func(t *testing.T) {
			f := urlenc.Fields{}
			want := map[string]pgq.Text{}
			for k, v := range tc.row {
				f[k] = v
				if v == nil {
					want[k] = pgq.Null
				} else {
					want[k] = pgq.T(*v)
				}
			}
			got, err := f.Encode()
			require.NoError(t, err)
			require.Equal(t, tc.py, got)
			for _, enc := range []string{tc.py, tc.c} {
				dec, err := urlenc.Parse(enc)
				require.NoError(t, err, enc)
				require.Equal(t, want, dec, enc)
			}
		})
	}
}

type payloadStringer struct{ s string }

func (p *payloadStringer) String() string { return "stringer:" + p.s }

func TestPayloadFieldsValueTypes(t *testing.T) {
	ts := time.Date(2024, 2, 29, 13, 4, 5, 123456789, time.FixedZone("x", 2*3600))
	f := urlenc.Fields{
		"nil": nil, "str": "s", "strp": payloadStr("p"), "strpnil": (*string)(nil),
		"text": pgq.T("t"), "textnull": pgq.Null, "true": true, "false": false,
		"int": -1, "int8": int8(-8), "int16": int16(-16), "int32": int32(-32), "int64": int64(math.MinInt64),
		"uint": uint(1), "uint8": uint8(8), "uint16": uint16(16), "uint32": uint32(32), "uint64": uint64(math.MaxUint64),
		"f32": float32(0.1), "f64": 0.1, "big": 1e21, "nan": math.NaN(), "inf": math.Inf(-1),
		"time": ts, "addr": netip.MustParseAddr("10.0.0.1"), "stringer": &payloadStringer{"x"},
		"stringernil": (*payloadStringer)(nil),
	}
	enc, err := f.Encode()
	require.NoError(t, err)
	got, err := urlenc.Parse(enc)
	require.NoError(t, err)
	want := map[string]pgq.Text{
		"nil": pgq.Null, "str": pgq.T("s"), "strp": pgq.T("p"), "strpnil": pgq.Null,
		"text": pgq.T("t"), "textnull": pgq.Null, "true": pgq.T("t"), "false": pgq.T("f"),
		"int": pgq.T("-1"), "int8": pgq.T("-8"), "int16": pgq.T("-16"), "int32": pgq.T("-32"),
		"int64": pgq.T("-9223372036854775808"),
		"uint":  pgq.T("1"), "uint8": pgq.T("8"), "uint16": pgq.T("16"), "uint32": pgq.T("32"),
		"uint64": pgq.T("18446744073709551615"),
		"f32":    pgq.T("0.1"), "f64": pgq.T("0.1"), "big": pgq.T("1e+21"), "nan": pgq.T("NaN"), "inf": pgq.T("-Inf"),
		"time": pgq.T("2024-02-29T13:04:05.123456789+02:00"), "addr": pgq.T("10.0.0.1"),
		"stringer": pgq.T("stringer:x"), "stringernil": pgq.Null,
	}
	require.Equal(t, want, got)
	// Deterministic: sorted keys.
	enc2, err := urlenc.Fields{"b": 2, "a": 1, "c": nil}.Encode()
	require.NoError(t, err)
	require.Equal(t, "a=1&b=2&c", enc2)
	empty, err := urlenc.Fields{}.Encode()
	require.NoError(t, err)
	require.Equal(t, "", empty)
}

func TestPayloadFieldsEncodeErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		f    urlenc.Fields
		want string
	}{
		"unsupported type": {urlenc.Fields{"blob": []byte("x")}, `key "blob": unsupported value type []uint8`},
		"struct":           {urlenc.Fields{"s": struct{}{}}, `key "s": unsupported value type struct {}`},
		"empty key":        {urlenc.Fields{"": "x"}, "empty key"},
		"NUL in key":       {urlenc.Fields{"a\x00b": "x"}, "NUL"},
		"NUL in value":     {urlenc.Fields{"a": "x\x00"}, `key "a": value contains a NUL byte`},
		"bad utf8":         {urlenc.Fields{"a": "\xff"}, "UTF-8"},
		"too big":          {urlenc.Fields{"a": strings.Repeat("&", urlenc.MaxRowSize/3+1)}, "more than"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := tc.f.Encode()
			require.ErrorIs(t, err, urlenc.ErrInvalid)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestPayloadParseFields(t *testing.T) {
	got, err := urlenc.ParseOrdered("z=1&&a&m=&+k%2b=%7E%7e~&")
	require.NoError(t, err)
	require.Equal(t, []urlenc.Field{
		{Key: "z", Value: pgq.T("1")},
		{Key: "a", Value: pgq.Null},
		{Key: "m", Value: pgq.T("")},
		{Key: " k+", Value: pgq.T("~~~")},
	}, got)
	for _, s := range []string{"", "&", "&&"} {
		m, err := urlenc.Parse(s)
		require.NoError(t, err)
		require.Empty(t, m)
	}
	m, err := urlenc.Parse("a=%C3%A9&b=é")
	require.NoError(t, err)
	require.Equal(t, map[string]pgq.Text{"a": pgq.T("é"), "b": pgq.T("é")}, m)
}

func TestPayloadParseFieldsErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"a=%zz", "invalid escape"},
		{"a=%4", "incomplete escape"},
		{"a=x%", "incomplete escape"},
		{"%g1=x", "invalid escape"},
		{"=v", "empty key"},
		{"=", "empty key"},
		{"a=1&b&a=2", `key "a" given twice`},
		{"a&a", `key "a" given twice`},
		{"a=b=c", "unescaped '='"},
		{"a==", "unescaped '='"},
		{"a=%00", "NUL"},
		{"a%00=1", "NUL"},
		{"a=%ff", "UTF-8"},
		{"a=%e9", "UTF-8"},
		{"a=\xff", "UTF-8"},
	} {
		_, err := urlenc.Parse(tc.in)
		require.ErrorIs(t, err, urlenc.ErrInvalid, tc.in)
		require.ErrorContains(t, err, tc.want, tc.in)
		_, err = urlenc.ParseOrdered(tc.in)
		require.ErrorIs(t, err, urlenc.ErrInvalid, tc.in)
	}
}

func TestPayloadRoundTripHostile(t *testing.T) {
	values := pgtest.Hostile(t)
	f := urlenc.Fields{}
	for i, v := range values {
		f[v+"#"+string(rune('a'+i))] = v // keys are hostile too
	}
	f["null"] = nil
	enc, err := f.Encode()
	require.NoError(t, err)
	require.NotContains(t, enc, " ")
	require.Equal(t, len(f)-1, strings.Count(enc, "&"))
	got, err := urlenc.Parse(enc)
	require.NoError(t, err)
	require.Len(t, got, len(f))
	for k, v := range f {
		if v == nil {
			require.Equal(t, pgq.Null, got[k])
			continue
		}
		require.Equal(t, pgq.T(v.(string)), got[k], k)
	}
}

// FuzzFieldsRoundTrip checks that any encodable row decodes to itself, that
// the escaping matches Go's form encoding (url.QueryEscape escapes exactly
// what quote_plus does), and that the decoder never panics on any input.
func FuzzFieldsRoundTrip(f *testing.F) {
	f.Add("a", "x y", "b", "", true)
	f.Add("k y&=", "a&b=c+d%e", "é", "'); drop table x; --", false)
	f.Add("~", "%zz", "+", "\x00", true)
	for _, v := range payloadSkytoolsVectors {
		f.Add(v.py, v.c, "x", "y", false)
	}
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string, null2 bool) {
		// The decoder must not panic on arbitrary input, and what it
		// accepts must survive a re-encode.
		for _, in := range []string{k1, v1, k1 + "=" + v1 + "&" + k2} {
			if fs, err := urlenc.ParseOrdered(in); err == nil {
				row := urlenc.Fields{}
				for _, fl := range fs {
					row[fl.Key] = fl.Value
				}
				enc, err := row.Encode()
				require.NoError(t, err)
				back, err := urlenc.Parse(enc)
				require.NoError(t, err)
				require.Len(t, back, len(fs))
				for _, fl := range fs {
					require.Equal(t, fl.Value, back[fl.Key])
				}
			} else {
				require.ErrorIs(t, err, urlenc.ErrInvalid)
			}
		}

		row := urlenc.Fields{k1: v1}
		want := map[string]pgq.Text{k1: pgq.T(v1)}
		if null2 {
			row[k2], want[k2] = nil, pgq.Null
		} else {
			row[k2], want[k2] = v2, pgq.T(v2)
		}
		valid := func(s string) bool { return utf8.ValidString(s) && !strings.Contains(s, "\x00") }
		ok := true
		var keys []string
		for k, v := range want {
			ok = ok && k != "" && valid(k) && valid(v.String)
			keys = append(keys, k)
		}
		enc, err := row.Encode()
		if !ok {
			require.ErrorIs(t, err, urlenc.ErrInvalid)
			return
		}
		require.NoError(t, err)
		// Oracle: Go's form escaping escapes exactly what quote_plus does.
		slices.Sort(keys)
		var pairs []string
		for _, k := range keys {
			p := url.QueryEscape(k)
			if want[k].Valid {
				p += "=" + url.QueryEscape(want[k].String)
			}
			pairs = append(pairs, p)
		}
		require.Equal(t, strings.Join(pairs, "&"), enc)
		got, err := urlenc.Parse(enc)
		require.NoError(t, err, enc)
		require.Equal(t, want, got)
	})
}

// TestParseDuplicateKeysWideRows: a key given twice is refused in narrow
// rows and in wide ones (which switch from a scan to a map).
func TestParseDuplicateKeysWideRows(t *testing.T) {
	for _, width := range []int{2, 15, 16, 17, 40} {
		var pairs []string
		for i := range width {
			pairs = append(pairs, fmt.Sprintf("k%d=%d", i, i))
		}
		got, err := urlenc.ParseOrdered(strings.Join(pairs, "&"))
		require.NoError(t, err, width)
		require.Len(t, got, width)
		for _, dup := range []int{0, width / 2, width - 1} {
			_, err := urlenc.ParseOrdered(strings.Join(append(slices.Clone(pairs), pairs[dup]), "&"))
			require.ErrorIs(t, err, urlenc.ErrInvalid, "width %d dup %d", width, dup)
			require.ErrorContains(t, err, "given twice")
		}
	}
}
