package skytools

import (
	"fmt"
	"os"
	"strings"
)

// maxDepth is Python configparser's MAX_INTERPOLATION_DEPTH: how deep
// references may nest. A reference loop fails here.
const maxDepth = 10

// maxValueLen bounds a value after interpolation (1 MiB): references may
// repeat a value at every level, and a hostile file should not make a
// getter build gigabytes.
const maxValueLen = 1 << 20

// builtinKeys are the defaults skytools.Config sets in the section it
// reads, unless the section or DEFAULT sets them, in its order.
var builtinKeys = []string{"job_name", "service_name", "host_name", "config_dir", "config_file"}

// Section is one section of a File read the way skytools.Config(name,
// file) reads its main section: the section's keys, then DEFAULT's, then
// the built-in defaults
//
//	job_name      the file's base name without extension ("" file name: the section name)
//	service_name  the section name
//	host_name     this machine's host name
//	config_dir    the directory part of the file name (only with a file name)
//	config_file   the file name as given (only with a file name)
//
// which values can reference like any key (logfile = ~/log/%(job_name)s.log).
//
// Values are interpolated as they are read, as config_format (read raw from
// the section or DEFAULT) selects:
//   - "1" or unset: Python's BasicInterpolation: %(key)s is the value of
//     key in this section (or DEFAULT, or a built-in), itself
//     interpolated; %% is a percent sign; any other % is an error;
//   - "2": Python's ExtendedInterpolation: ${key} as above, ${sect:key}
//     the value of key in section sect (DEFAULT's keys included, built-ins
//     only in this section), $$ a dollar sign; any other $ is an error.
//
// No other form exists: skytools.Config never uses Skytools'
// ExtendedInterpolationCompat, and neither expands environment variables.
// References nest at most ten deep, which is also how a loop fails
// (ErrInterpolation).
//
// Getters return ErrNoKey (wrapped in an *Error) for a key that is not
// set, and an *Error naming file, line, section, key and value for a value
// that does not convert.
type Section struct {
	file     *File
	name     string
	raw      *rawSection
	extended bool
	builtins map[string]string
}

// Section returns the named section (case-sensitive), read as
// skytools.Config reads its main section. DEFAULT is not a section.
// It fails when the section does not exist (ErrNoSection), when
// config_format is not "1" or "2", or when a built-in default holds a
// character the interpolation would misread (a "%" or "$" in the file
// name, which Python refuses too).
func (f *File) Section(name string) (*Section, error) {
	raw, ok := f.sections[name]
	if !ok {
		return nil, &Error{File: f.filename, Section: name, Err: errf(ErrNoSection, "the file has sections %s", quoteList(f.order))}
	}
	s := &Section{file: f, name: name, raw: raw}
	format, line := "1", 0
	if v, ok := raw.vals["config_format"]; ok {
		format, line = v.value, v.line
	} else if v, ok := f.defaults.vals["config_format"]; ok {
		format, line = v.value, v.line
	}
	switch format {
	case "1":
	case "2":
		s.extended = true
	default:
		return nil, &Error{File: f.filename, Line: line, Section: name, Key: "config_format", Value: format, hasValue: true,
			Err: errf(ErrBadValue, `Skytools knows config_format "1" (%%(key)s references) and "2" (${key} references)`)}
	}

	jobName := name
	if f.filename != "" {
		jobName = pyJobName(f.filename)
	}
	host, err := os.Hostname()
	if err != nil {
		return nil, &Error{File: f.filename, Section: name, Key: "host_name", Err: fmt.Errorf("host name: %w", err)}
	}
	defs := map[string]string{"job_name": jobName, "service_name": name, "host_name": host}
	if f.filename != "" {
		defs["config_dir"] = pyDirname(f.filename)
		defs["config_file"] = f.filename
	}
	s.builtins = map[string]string{}
	for _, k := range builtinKeys {
		v, ok := defs[k]
		if !ok {
			continue
		}
		if _, set := raw.vals[k]; set {
			continue
		}
		if _, set := f.defaults.vals[k]; set {
			continue
		}
		if err := s.checkSettable(v); err != nil {
			return nil, &Error{File: f.filename, Section: name, Key: k, Value: v, hasValue: true,
				Err: fmt.Errorf("%w (built-in default; Skytools' Python refuses it too)", err)}
		}
		s.builtins[k] = v
	}
	return s, nil
}

// checkSettable is ConfigParser.set's before_set check, which Python runs
// on each built-in default: every "%" (or "$") must start a valid
// reference or escape.
func (s *Section) checkSettable(v string) error {
	esc, mark, ref := "%%", "%", func(v string) (int, bool) { return matchBasicRef(v) }
	if s.extended {
		esc, mark, ref = "$$", "$", matchExtendedRef
	}
	v = strings.ReplaceAll(v, esc, "")
	for i := 0; i < len(v); {
		j := strings.Index(v[i:], mark)
		if j < 0 {
			return nil
		}
		i += j
		n, ok := ref(v[i:])
		if !ok {
			return errf(ErrBadValue, "%q at byte %d starts no reference", mark, i)
		}
		i += n
	}
	return nil
}

// Name returns the section name.
func (s *Section) Name() string { return s.name }

// Filename returns the file name the section was read from ("" if none).
func (s *Section) Filename() string { return s.file.filename }

// Keys returns the keys set in the file for this section: its own, in
// file order, then DEFAULT's that it does not set (Python's
// Config.options(), without the built-in defaults the file does not set).
// A caller can warn about keys it does not know.
func (s *Section) Keys() []string {
	out := append(make([]string, 0, len(s.raw.keys)), s.raw.keys...)
	for _, k := range s.file.defaults.keys {
		if _, ok := s.raw.vals[k]; !ok {
			out = append(out, k)
		}
	}
	return out
}

// Has reports whether key is set in the section, in DEFAULT or as a
// built-in default.
func (s *Section) Has(key string) bool {
	_, _, ok := s.lookup(s.name, pyLower(key))
	return ok
}

// lookup finds key (already lowercase) in section sect as Python's
// parser.get(sect, key, raw=True) sees it: the section's own keys (for
// the section being read, also the built-ins), then DEFAULT's.
func (s *Section) lookup(sect, key string) (value string, line int, ok bool) {
	if sect != defaultSection {
		raw, exists := s.file.sections[sect]
		if !exists {
			return "", 0, false
		}
		if v, ok := raw.vals[key]; ok {
			return v.value, v.line, true
		}
		if sect == s.name {
			if v, ok := s.builtins[key]; ok {
				return v, 0, true
			}
		}
	}
	if v, ok := s.file.defaults.vals[key]; ok {
		return v.value, v.line, true
	}
	return "", 0, false
}

// get returns key's interpolated value and the line it is set on.
func (s *Section) get(key string) (string, int, error) {
	key = pyLower(key)
	raw, line, ok := s.lookup(s.name, key)
	if !ok {
		return "", 0, &Error{File: s.file.filename, Section: s.name, Key: key, Err: ErrNoKey}
	}
	var b strings.Builder
	var err error
	if s.extended {
		err = s.interpolateExtended(&b, s.name, raw, 1)
	} else {
		err = s.interpolateBasic(&b, raw, 1)
	}
	if err != nil {
		return "", line, &Error{File: s.file.filename, Line: line, Section: s.name, Key: key, Err: err}
	}
	return b.String(), line, nil
}

// matchBasicRef matches %\(([^)]+)\)s at the start of v: it returns the
// match's length.
func matchBasicRef(v string) (int, bool) {
	if !strings.HasPrefix(v, "%(") {
		return 0, false
	}
	end := strings.IndexByte(v[2:], ')')
	if end <= 0 || !strings.HasPrefix(v[2+end+1:], "s") {
		return 0, false
	}
	return 2 + end + 2, true
}

// matchExtendedRef matches \$\{([^}]+)\} at the start of v.
func matchExtendedRef(v string) (int, bool) {
	if !strings.HasPrefix(v, "${") {
		return 0, false
	}
	end := strings.IndexByte(v[2:], '}')
	if end <= 0 {
		return 0, false
	}
	return 2 + end + 1, true
}

// interpolateBasic is BasicInterpolation._interpolate_some: references
// resolve in the section being read, whatever section a nested value
// came from.
func (s *Section) interpolateBasic(b *strings.Builder, rest string, depth int) error {
	if depth > maxDepth {
		return errf(ErrInterpolation, "references nest deeper than %d levels (a reference loop?)", maxDepth)
	}
	for rest != "" {
		p := strings.IndexByte(rest, '%')
		if p < 0 {
			return write(b, rest)
		}
		if err := write(b, rest[:p]); err != nil {
			return err
		}
		rest = rest[p:]
		switch {
		case strings.HasPrefix(rest, "%%"):
			if err := write(b, "%"); err != nil {
				return err
			}
			rest = rest[2:]
		case strings.HasPrefix(rest, "%("):
			n, ok := matchBasicRef(rest)
			if !ok {
				return errf(ErrInterpolation, "bad reference %q: write %%(key)s", clip(rest))
			}
			name := pyLower(rest[2 : n-2])
			rest = rest[n:]
			v, _, found := s.lookup(s.name, name)
			if !found {
				return errf(ErrInterpolation, "%%(%s)s: key %q is not set in the section or DEFAULT", name, name)
			}
			var err error
			if strings.Contains(v, "%") {
				err = s.interpolateBasic(b, v, depth+1)
			} else {
				err = write(b, v)
			}
			if err != nil {
				return err
			}
		default:
			return errf(ErrInterpolation, "%q: a %% must be followed by %% or (; write %%%% for a percent sign", clip(rest))
		}
	}
	return nil
}

// interpolateExtended is ExtendedInterpolation._interpolate_some: a
// nested value's references resolve in the section it came from.
func (s *Section) interpolateExtended(b *strings.Builder, sect, rest string, depth int) error {
	if depth > maxDepth {
		return errf(ErrInterpolation, "references nest deeper than %d levels (a reference loop?)", maxDepth)
	}
	for rest != "" {
		p := strings.IndexByte(rest, '$')
		if p < 0 {
			return write(b, rest)
		}
		if err := write(b, rest[:p]); err != nil {
			return err
		}
		rest = rest[p:]
		switch {
		case strings.HasPrefix(rest, "$$"):
			if err := write(b, "$"); err != nil {
				return err
			}
			rest = rest[2:]
		case strings.HasPrefix(rest, "${"):
			n, ok := matchExtendedRef(rest)
			if !ok {
				return errf(ErrInterpolation, "bad reference %q: write ${key} or ${section:key}", clip(rest))
			}
			ref := rest[2 : n-1]
			rest = rest[n:]
			path := strings.Split(ref, ":")
			target := sect
			var key string
			switch len(path) {
			case 1:
				key = pyLower(path[0])
			case 2:
				target, key = path[0], pyLower(path[1])
			default:
				return errf(ErrInterpolation, "${%s}: more than one ':'", ref)
			}
			v, _, found := s.lookup(target, key)
			if !found {
				return errf(ErrInterpolation, "${%s}: key %q is not set in section %q or DEFAULT", ref, key, target)
			}
			var err error
			if strings.Contains(v, "$") {
				err = s.interpolateExtended(b, target, v, depth+1)
			} else {
				err = write(b, v)
			}
			if err != nil {
				return err
			}
		default:
			return errf(ErrInterpolation, "%q: a $ must be followed by $ or {; write $$ for a dollar sign", clip(rest))
		}
	}
	return nil
}

func write(b *strings.Builder, s string) error {
	if b.Len()+len(s) > maxValueLen {
		return errf(ErrInterpolation, "value grows beyond %d bytes", maxValueLen)
	}
	b.WriteString(s)
	return nil
}

func quoteList(names []string) string {
	if len(names) == 0 {
		return "(none)"
	}
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = "[" + n + "]"
	}
	return strings.Join(q, " ")
}
