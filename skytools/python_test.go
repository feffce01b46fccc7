package skytools_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pgq-go/pgq/skytools"
	"github.com/stretchr/testify/require"
)

// systemPython is the interpreter Skytools is installed for; tests run it
// isolated (-I: no PYTHONPATH, no user site, no script directory).
const systemPython = "/usr/bin/python3"

// requireSkytools fails the test unless the system Python imports
// skytools: the reference must be there, not skipped.
func requireSkytools(t *testing.T) {
	t.Helper()
	const fix = "run scripts/ensure-deps (its python3-pgq depends on python3-skytools, Skytools' Python modules)"
	if _, err := os.Stat(systemPython); err != nil {
		t.Fatalf("%s not found: %v; %s", systemPython, err, fix)
	}
	cmd := exec.Command(systemPython, "-I", "-c", "import skytools, configparser")
	cmd.Dir = t.TempDir()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s -I cannot import skytools: %v\n%s\n%s", systemPython, err, out, fix)
	}
}

// iniCase is one file read by both implementations.
type iniCase struct {
	file      string // base name; its content is written to a temp dir
	content   string
	sections  []string // sections to read (each is one Config)
	wildcards [][2]any // [key, []string values]
}

// sideBySideCases are Skytools-style job files covering the reader's
// features and its failures; every key they set is read with every
// getter by both implementations.
var sideBySideCases = []iniCase{
	{file: "orders_mover.ini", sections: []string{"queue_mover3", "other", "absent", "DEFAULT"},
		wildcards: [][2]any{{"wild_*_filter", []string{"orders"}}, {"wild_*_filter", []string{"items"}}, {"nope_*", []string{"x"}}, {"wild_*_*", []string{"a", "b"}}},
		content: `# A Skytools job, the way sites write them
[DEFAULT]
base_dir = /var/lib/sky
log_dir = %(base_dir)s/log
shared = from default
shared_ref = %(job_name)s in %(service_name)s

[queue_mover3]
job_name = %(service_name)s_orders
src_db = dbname=src host=127.0.0.1 password=s%%cret
dst_db: dbname=dst
queue_name = orders
logfile = %(log_dir)s/%(job_name)s.log
pidfile = ~/pid/%(job_name)s.pid
loop_delay = 0.5
exception_sleep = 30
connection_lifetime = 1_200
pgq_lazy_fetch = 0
use_skylog = Yes
verbose = off
flag_num = 1
table_filter = orders, sales.items ,  public.x
tables =
    orders,
    items
dict = a:1, b : 2 , c, d:e:f, a:again
size1 = 10
size2 = 2 KB
size3 = 4m
size4 = 1 Y
size5 = 8 EB
size6 = 1 GiB
size7 = 12 b
float1 = 1e3
float2 = inf
float3 = -.5
float4 = 1_000.25
float5 = nan
float6 = 1e400
float7 = 0x10
int_big = 123456789012345678901234567890
int_arabic = ٤٢
int_neg = -17
int_plus = +0_7
MixedCase = Value With Spaces
multi = first line
  second line

  after blank
   ; comment inside
  # another
  last
	tabbed
empty =
colon_in_value = url: postgres://u@h/db?x=1
inline = 10 ; not a comment
pct = 100%%
wild_orders_filter = orders only
wild_*_filter = any table
wild_a_b = both
home_only = ~
home_sub = ~/x/y
user_home = ~root/x
nouser = ~no_such_user_hopefully/x
dash = -
keep_lag = 10 min
bools = TRUE
trailing_blank = value

[other]
shared = overridden
ref = %(shared)s and %(shared_ref)s
`},
	{file: "format2.ini", sections: []string{"job2", "db"}, content: `[DEFAULT]
config_format = 2
root = /srv

[db]
host = db.example
port = 5432
self_ref = ${host}:${port}

[job2]
src_db = host=${db:host} port=${db:port}
path = ${root}/jobs/${job_name}
price = $$5
default_ref = ${DEFAULT:root}
nested = ${path}/x
via_db = ${db:self_ref}
pct = 100%
old_style = %(root)s
other_job = ${db:job_name}
bad_dollar = a$b
three_colons = ${a:b:c}
missing = ${nope}
missing_section = ${nosuch:host}
empty_ref = ${}
`},
	{file: "edge.ini", sections: []string{" spaced name ", "a", "b]", "ΣΟΦΟΣ", "tabs"}, content: "; leading comment\r\n" +
		"[ spaced name ]\r\n" +
		"key=value\r\n" +
		"\tindented_key = continues\r\n" +
		"other:value : with = both\r\n" +
		"[a] trailing text\r\n" +
		"x : 1\r" +
		"[b]]\n" +
		"y = 2\n" +
		"[ΣΟΦΟΣ]\n" +
		"ΚΛΕΙΔΙΣ = greek key\n" +
		"ΟΔΟΣ.Α = sigma before a dot\n" +
		"İstanbul = dotted\n" +
		"Ünïcödé = yes\n" +
		"[tabs]\n" +
		" leading_space_key = v\n" +
		"next = 1\n" +
		"  more = continued\n" +
		"\x0bvt = vertical tab\n" +
		"nbsp\u00a0= x\u00a0\n" +
		"nul = a\x00b\n" +
		"sep\x1c = info separator\n",
	},
	{file: "interp.ini", sections: []string{"job"}, content: `[job]
loop_a = %(loop_b)s
loop_b = %(loop_a)s
self = %(self)s
d0 = x%%
d1 = %(d0)s
d2 = %(d1)s
d3 = %(d2)s
d4 = %(d3)s
d5 = %(d4)s
d6 = %(d5)s
d7 = %(d6)s
d8 = %(d7)s
d9 = %(d8)s
d10 = %(d9)s
missing = %(nope)s
bad = 50%
bad2 = %(unclosed
bad3 = %(d0)d
spaced = %( d0 )s
upper = %(D0)s
dollar = $5 and ${x}
`},
	{file: "my.job.ini", sections: []string{"job"}, content: "[job]\nlog = %(job_name)s/%(config_dir)s/%(config_file)s\n"},
	{file: ".hidden", sections: []string{"job"}, content: "[job]\nlog = %(job_name)s\n"},
	{file: "a%%b.ini", sections: []string{"job"}, content: "[job]\nlog = %(job_name)s\n"},
	{file: "50%off.ini", sections: []string{"job"}, content: "[job]\nlog = x\n"},
	{file: "50%off_named.ini", sections: []string{"job"}, content: "[DEFAULT]\njob_name = fine\nconfig_file = f\n[job]\nconfig_dir = d\n"},
	{file: "dollar$.ini", sections: []string{"job", "job2"}, content: "[job]\nlog = %(job_name)s\n[job2]\nconfig_format = 2\n"},
	{file: "nohdr.ini", sections: []string{"s"}, content: "key = v\n[s]\n"},
	{file: "dupsec.ini", sections: []string{"s"}, content: "[s]\na = 1\n[s]\nb = 2\n"},
	{file: "dupkey.ini", sections: []string{"s"}, content: "[s]\na = 1\nA = 2\n"},
	{file: "badline.ini", sections: []string{"s"}, content: "[s]\njust words\n"},
	{file: "emptykey.ini", sections: []string{"s"}, content: "[s]\n= v\n"},
	{file: "emptyheader.ini", sections: []string{"s"}, content: "[s]\n[]\n"},
	{file: "badformat.ini", sections: []string{"s"}, content: "[s]\nconfig_format = 3\n"},
	{file: "latin1.ini", sections: []string{"s"}, content: "[s]\na = caf\xe9\n"},
	{file: "bom.ini", sections: []string{"s"}, content: "\xef\xbb\xbf[s]\na = 1\n"},
	{file: "dupdefault.ini", sections: []string{"s"}, content: "[DEFAULT]\na = 1\n[DEFAULT]\nb = 2\n[s]\nc = %(a)s%(b)s\n"},
	{file: "dupdefaultkey.ini", sections: []string{"s"}, content: "[DEFAULT]\na = 1\n[DEFAULT]\na = 2\n[s]\n"},
	{file: "emptysec.ini", sections: []string{"s"}, content: "[s]\n"},
	{file: "empty.ini", sections: []string{"s"}, content: ""},
}

// pyValue is one getter's result in Python: a value or an error kind.
type pyValue struct {
	V json.RawMessage `json:"v"`
	E string          `json:"e"`
}

type pyResult struct {
	Error     string                        `json:"error"`
	Sections  []string                      `json:"sections"`
	Keys      []string                      `json:"keys"`
	Values    map[string]map[string]pyValue `json:"values"`
	Wildcards []pyValue                     `json:"wildcards"`
}

// errKind names an error of this package as dump_config.py names
// Python's exceptions.
func errKind(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, skytools.ErrSyntax):
		return "syntax"
	case errors.Is(err, skytools.ErrNoSection):
		return "nosection"
	case errors.Is(err, skytools.ErrNoKey):
		return "nokey"
	case errors.Is(err, skytools.ErrInterpolation):
		return "interpolation"
	case errors.Is(err, skytools.ErrBadValue):
		return "value"
	}
	return "other: " + err.Error()
}

// TestMatchesPythonSkytools writes Skytools job files (DEFAULT and
// built-in defaults, %(key)s and ${section:key} interpolation with loops
// and depth limits, job_name from odd file names, continuation lines,
// comments, CRLF and CR line ends, Unicode keys and whitespace, booleans,
// numbers, lists, dicts, sizes, ~ paths, wildcards, and files Python
// refuses) and reads every key of every section with every getter through
// the installed skytools.Config (system python3) and through this
// package: values, keys, sections and error kinds must agree.
func TestMatchesPythonSkytools(t *testing.T) {
	requireSkytools(t)
	dir := t.TempDir()
	type input struct {
		File      string  `json:"file"`
		Section   string  `json:"section"`
		Wildcards [][]any `json:"wildcards"`
	}
	var inputs []input
	for _, c := range sideBySideCases {
		path := filepath.Join(dir, c.file)
		require.NoError(t, os.WriteFile(path, []byte(c.content), 0o644))
		for _, s := range c.sections {
			in := input{File: path, Section: s}
			for _, w := range c.wildcards {
				in.Wildcards = append(in.Wildcards, []any{w[0], w[1]})
			}
			inputs = append(inputs, in)
		}
	}
	req, err := json.Marshal(inputs)
	require.NoError(t, err)
	script, err := filepath.Abs("testdata/dump_config.py")
	require.NoError(t, err)
	cmd := exec.Command(systemPython, "-I", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8")
	cmd.Stdin = bytes.NewReader(req)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "dump_config.py: %s", stderr.String())
	var results []pyResult
	require.NoError(t, json.Unmarshal(out, &results))
	require.Len(t, results, len(inputs))

	for i, in := range inputs {
		py := results[i]
		t.Run(filepath.Base(in.File)+"/"+in.Section, func(t *testing.T) {
			f, err := skytools.Load(in.File)
			var sec *skytools.Section
			if err == nil {
				sec, err = f.Section(in.Section)
			}
			if py.Error != "" || err != nil {
				require.Equal(t, py.Error, errKind(err), "loading: Go error %v", err)
				require.NotEmpty(t, py.Error)
				return
			}
			require.Equal(t, py.Sections, f.Sections())
			require.Equal(t, py.Keys, sec.Keys())
			require.Contains(t, py.Values, "no_such_key")
			for key, getters := range py.Values {
				for getter, want := range getters {
					compareGetter(t, sec, key, getter, want)
				}
			}
			for j, w := range in.Wildcards {
				got, err := sec.Wildcard(w[0].(string), w[1].([]string)...)
				compareValue(t, fmt.Sprintf("wildcard %v", w), py.Wildcards[j], got, err, func(raw json.RawMessage) any {
					var s string
					require.NoError(t, json.Unmarshal(raw, &s))
					return s
				})
			}
		})
	}
}

// compareGetter reads key with the Go getter matching Python's getter and
// compares value or error kind.
func compareGetter(t *testing.T, sec *skytools.Section, key, getter string, want pyValue) {
	t.Helper()
	what := getter + "(" + strconv.Quote(key) + ")"
	str := func(raw json.RawMessage) any {
		var s string
		require.NoError(t, json.Unmarshal(raw, &s), what)
		return s
	}
	switch getter {
	case "get":
		v, err := sec.String(key)
		compareValue(t, what, want, v, err, str)
	case "getfile":
		v, err := sec.File(key)
		compareValue(t, what, want, v, err, str)
	case "getboolean":
		v, err := sec.Bool(key)
		compareValue(t, what, want, v, err, func(raw json.RawMessage) any {
			var b bool
			require.NoError(t, json.Unmarshal(raw, &b), what)
			return b
		})
	case "getlist":
		v, err := sec.List(key)
		compareValue(t, what, want, v, err, func(raw json.RawMessage) any {
			out := []string{}
			require.NoError(t, json.Unmarshal(raw, &out), what)
			return out
		})
	case "getdict":
		v, err := sec.Dict(key)
		compareValue(t, what, want, v, err, func(raw json.RawMessage) any {
			out := map[string]string{}
			require.NoError(t, json.Unmarshal(raw, &out), what)
			return out
		})
	case "getint", "getbytes":
		var v int64
		var err error
		if getter == "getint" {
			var n int
			n, err = sec.Int(key)
			v = int64(n)
		} else {
			v, err = sec.Bytes(key)
		}
		if want.E == "" {
			n, ok := new(big.Int).SetString(str(want.V).(string), 10)
			require.True(t, ok, what)
			if !n.IsInt64() { // Python's ints are unbounded; ours are int64
				require.Equal(t, "value", errKind(err), "%s: Python %s beyond int64", what, n)
				return
			}
		}
		compareValue(t, what, want, v, err, func(raw json.RawMessage) any {
			n, err := strconv.ParseInt(str(raw).(string), 10, 64)
			require.NoError(t, err, what)
			return n
		})
	case "getfloat":
		v, err := sec.Float(key)
		if want.E == "" && err == nil && math.IsNaN(v) {
			require.Equal(t, "nan", str(want.V), what)
			return
		}
		compareValue(t, what, want, v, err, func(raw json.RawMessage) any {
			f, err := strconv.ParseFloat(str(raw).(string), 64)
			require.NoError(t, err, what)
			return f
		})
	default:
		t.Fatalf("unknown getter %s", getter)
	}
}

func compareValue(t *testing.T, what string, want pyValue, got any, err error, decode func(json.RawMessage) any) {
	t.Helper()
	if want.E != "" {
		require.Equal(t, want.E, errKind(err), "%s: Python fails, Go returned %#v, %v", what, got, err)
		return
	}
	require.NoError(t, err, "%s: Python returned %s", what, want.V)
	require.Equal(t, decode(want.V), got, what)
	if strings.Contains(what, "no_such_key") {
		t.Fatalf("%s: Python found a key that should not exist", what)
	}
}
