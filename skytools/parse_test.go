package skytools_test

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/skytools"
	"github.com/stretchr/testify/require"
)

// section parses ini as filename and returns its section name.
func section(t *testing.T, filename, ini, name string) *skytools.Section {
	t.Helper()
	f, err := skytools.Parse(strings.NewReader(ini), filename)
	require.NoError(t, err)
	s, err := f.Section(name)
	require.NoError(t, err)
	return s
}

// TestParseValues: the syntax Skytools job files use, read as Python's
// ConfigParser reads it (the side-by-side test checks the same against
// Python; these cases document it).
func TestParseValues(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, ini, section string
		want               map[string]string
		keys               []string
	}{
		{name: "equals and colon", section: "s",
			ini:  "[s]\na = 1\nb: 2\nc=3\nd:4\nurl = postgres://h:5432/db\ne : f = g\n",
			want: map[string]string{"a": "1", "b": "2", "c": "3", "d": "4", "url": "postgres://h:5432/db", "e": "f = g"},
			keys: []string{"a", "b", "c", "d", "url", "e"}},
		{name: "keys are case-insensitive, sections are not", section: "Job",
			ini:  "[job]\nx = lower\n[Job]\nQueue_Name = Q\n",
			want: map[string]string{"queue_name": "Q", "QUEUE_NAME": "Q"},
			keys: []string{"queue_name"}},
		{name: "comments are whole lines only", section: "s",
			ini:  "# c1\n; c2\n[s]\n  # indented comment\na = 1 ; kept\nb = 2 # kept\n",
			want: map[string]string{"a": "1 ; kept", "b": "2 # kept"}},
		{name: "continuation lines", section: "s",
			ini:  "[s]\nsql = select 1\n   from t\n\n   where x\n   ; comment skipped\n\nnext = 2\n",
			want: map[string]string{"sql": "select 1\nfrom t\n\nwhere x", "next": "2"}},
		{name: "an indented key continues the previous value", section: "s",
			ini:  "[s]\na = 1\n  b = 2\n",
			want: map[string]string{"a": "1\nb = 2"}, keys: []string{"a"}},
		{name: "value starting on the next line", section: "s",
			ini:  "[s]\nlist =\n  x,\n  y\n",
			want: map[string]string{"list": "\nx,\ny"}},
		{name: "DEFAULT and built-ins", section: "job",
			ini:  "[DEFAULT]\nroot = /srv\n[job]\nlog = %(root)s/%(job_name)s.log\nsvc = %(service_name)s\ndir = %(config_dir)s\n",
			want: map[string]string{"log": "/srv/mover.log", "svc": "job", "dir": "/etc/sky", "config_file": "/etc/sky/mover.ini", "root": "/srv"},
			keys: []string{"log", "svc", "dir", "root"}},
		{name: "a file's job_name wins over the built-in", section: "job",
			ini:  "[job]\njob_name = custom\nlog = %(job_name)s\n",
			want: map[string]string{"log": "custom"}},
		{name: "escapes and case-insensitive references", section: "s",
			ini:  "[s]\npct = 100%%\nref = %(PCT)s!\n",
			want: map[string]string{"pct": "100%", "ref": "100%!"}},
		{name: "config_format 2", section: "b",
			ini:  "[DEFAULT]\nconfig_format = 2\n[a]\nhost = h1\n[b]\nsrc = ${a:host} ${job_name} $$ 100%\n",
			want: map[string]string{"src": "h1 mover $ 100%"}},
		{name: "CR and CRLF line ends", section: "s",
			ini:  "[s]\r\na = 1\rb = 2\r\n  more\r",
			want: map[string]string{"a": "1", "b": "2\nmore"}},
		{name: "header runs to the last bracket", section: "a]b",
			ini:  "[a]b] trailing\nk = v\n",
			want: map[string]string{"k": "v"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := section(t, "/etc/sky/mover.ini", c.ini, c.section)
			for k, want := range c.want {
				got, err := s.String(k)
				require.NoError(t, err, k)
				require.Equal(t, want, got, k)
			}
			if c.keys != nil {
				require.Equal(t, c.keys, s.Keys())
			}
		})
	}
}

// TestParseRefuses: files Skytools' Python reader refuses are refused,
// with an error naming the file and line.
func TestParseRefuses(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, ini string
		line      int
		contains  string
	}{
		{"key before any section", "\n# c\nkey = v\n[s]\n", 3, "before the first [section]"},
		{"section twice", "[s]\na = 1\n[t]\n[s]\n", 4, "section appears twice"},
		{"key twice", "[s]\na = 1\nA = 2\n", 3, "key set twice"},
		{"DEFAULT key twice", "[DEFAULT]\na = 1\n[DEFAULT]\na = 2\n", 4, "key set twice"},
		{"line without delimiter", "[s]\na = 1\njust words\n", 3, "is not a [section] header"},
		{"empty key", "[s]\n = v\n", 2, "has no key"},
		{"empty header", "[s]\n[]\n", 2, "is not a [section] header"},
		{"not UTF-8", "[s]\na = ok\nb = caf\xe9\n", 3, "not UTF-8"},
		{"byte order mark", "\xef\xbb\xbf[s]\n", 1, "byte order mark"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := skytools.Parse(strings.NewReader(c.ini), "jobs/x.ini")
			require.ErrorIs(t, err, skytools.ErrSyntax)
			var e *skytools.Error
			require.ErrorAs(t, err, &e)
			require.Equal(t, "jobs/x.ini", e.File)
			require.Equal(t, c.line, e.Line)
			require.Contains(t, err.Error(), c.contains)
			require.Contains(t, err.Error(), "jobs/x.ini:")
		})
	}
	// Every bad line is reported, not only the first.
	_, err := skytools.Parse(strings.NewReader("[s]\nbad one\nok = 1\nbad two\n"), "x.ini")
	require.ErrorContains(t, err, "x.ini:2:")
	require.ErrorContains(t, err, "x.ini:4:")
}

// TestSectionErrors: missing sections and keys, bad config_format, bad
// built-ins, and interpolation failures are reported with their sentinel
// and what they concern.
func TestSectionErrors(t *testing.T) {
	t.Parallel()
	f, err := skytools.Parse(strings.NewReader("[DEFAULT]\nd = 1\n[a]\nx = 1\n[b]\n"), "x.ini")
	require.NoError(t, err)
	require.Equal(t, []string{"a", "b"}, f.Sections())
	_, err = f.Section("c")
	require.ErrorIs(t, err, skytools.ErrNoSection)
	require.ErrorContains(t, err, "[a] [b]")
	_, err = f.Section("DEFAULT")
	require.ErrorIs(t, err, skytools.ErrNoSection)
	_, err = f.Section("A")
	require.ErrorIs(t, err, skytools.ErrNoSection, "section names are case-sensitive")

	s, err := f.Section("b")
	require.NoError(t, err)
	_, err = s.String("x")
	require.ErrorIs(t, err, skytools.ErrNoKey, "keys of another section are not visible")
	require.EqualError(t, err, "skytools: x.ini: [b] x: key not set")
	require.True(t, s.Has("D"))
	require.True(t, s.Has("job_name"))
	require.False(t, s.Has("x"))

	f, err = skytools.Parse(strings.NewReader("[s]\nconfig_format = 3\n"), "x.ini")
	require.NoError(t, err, "config_format is checked when a section is read, as Python does")
	_, err = f.Section("s")
	require.ErrorIs(t, err, skytools.ErrBadValue)
	require.ErrorContains(t, err, `x.ini:2: [s] config_format = "3"`)

	f, _ = skytools.Parse(strings.NewReader("[s]\n"), "/tmp/50%off.ini")
	_, err = f.Section("s")
	require.ErrorIs(t, err, skytools.ErrBadValue, "a %% in the file name is refused, as Python refuses it")
	require.ErrorContains(t, err, "job_name")

	s = section(t, "x.ini", "[s]\nloop = %(loop)s\nmissing = %(nope)s\nbad = 5%\nbad2 = %(x)d\n", "s")
	for key, contains := range map[string]string{
		"loop":    "deeper than 10 levels",
		"missing": `key "nope" is not set`,
		"bad":     "must be followed by",
		"bad2":    "bad reference",
	} {
		_, err := s.String(key)
		require.ErrorIs(t, err, skytools.ErrInterpolation, key)
		require.ErrorContains(t, err, contains, key)
		require.ErrorContains(t, err, "[s] "+key, key)
	}
}

// TestHostileInput: bad and hostile files fail with errors, never panics
// or unbounded memory: a reference fan-out that would build gigabytes, an
// endless reader, a failing reader, binary data, and the repository's
// hostile-string corpus as keys, values and whole files.
func TestHostileInput(t *testing.T) {
	t.Parallel()
	// Each level doubles the value: 2^10 copies of 4 KiB at depth 10.
	var b strings.Builder
	b.WriteString("[s]\nv0 = " + strings.Repeat("x", 4096) + "\n")
	for i := 1; i <= 10; i++ {
		b.WriteString("v" + strconv.Itoa(i) + " = %(v" + strconv.Itoa(i-1) + ")s%(v" + strconv.Itoa(i-1) + ")s\n")
	}
	s := section(t, "x.ini", b.String(), "s")
	_, err := s.String("v10")
	require.ErrorIs(t, err, skytools.ErrInterpolation)
	require.ErrorContains(t, err, "grows beyond")
	v, err := s.String("v5")
	require.NoError(t, err)
	require.Len(t, v, 32*4096)

	_, err = skytools.Parse(io.LimitReader(zeros{}, skytools.MaxFileSize+10), "big.ini")
	require.ErrorIs(t, err, skytools.ErrSyntax)
	require.ErrorContains(t, err, "larger than")

	_, err = skytools.Parse(iotest.ErrReader(errors.New("disk on fire")), "x.ini")
	require.ErrorContains(t, err, "disk on fire")

	_, err = skytools.Load(filepath.Join(t.TempDir(), "missing.ini"))
	require.ErrorIs(t, err, os.ErrNotExist)

	for _, h := range pgtest.Hostile(t) {
		hostileFile(t, h)
		hostileFile(t, "[s]\n"+h+"\n")
		line := strings.NewReplacer("\n", " ", "\r", " ").Replace(h)
		hostileFile(t, "[s]\nkey = "+line+"\n")
		hostileFile(t, "[s]\n"+line+" = v\n")
	}
}

// hostileFile parses ini and reads every key of every section with every
// getter: anything may fail, nothing may panic.
func hostileFile(t *testing.T, ini string) {
	t.Helper()
	f, err := skytools.Parse(strings.NewReader(ini), "h.ini")
	if err != nil {
		var e *skytools.Error
		require.ErrorAs(t, err, &e)
		return
	}
	for _, name := range f.Sections() {
		s, err := f.Section(name)
		if err != nil {
			continue
		}
		for _, k := range append(s.Keys(), "job_name", "host_name") {
			_, _ = s.String(k)
			_, _ = s.Int(k)
			_, _ = s.Bool(k)
			_, _ = s.Float(k)
			_, _ = s.Duration(k)
			_, _ = s.Interval(k)
			_, _ = s.List(k)
			_, _ = s.Dict(k)
			_, _ = s.File(k)
			_, _ = s.Bytes(k)
			_, _ = s.Wildcard(k, "a")
		}
		_, _ = s.ConsumerConfig()
		_, _ = s.JobSettings()
	}
}

// FuzzParse: no input makes Parse or a getter panic.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"[s]\na = 1\n", "[DEFAULT]\nx=%(x)s\n[s]\ny = %(x)s\n", "[s]\nconfig_format=2\nv=${s:v}\n",
		"[s]\nqueue_name = q\nloop_delay = 1e308\npgq_keep_lag = 99999999999 years\n",
		"[s]\n a\n  b\n\tc = d\n", "[s]\nv = ${a:b:c} $ %\n", "\r\r[s]\r\n=\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, ini string) {
		hostileFile(t, ini)
	})
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	return len(p), nil
}
