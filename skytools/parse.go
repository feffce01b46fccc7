package skytools

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"
)

// MaxFileSize is the largest config file Parse and Load read (16 MiB):
// job files are a few kilobytes, and a reader that never ends should not
// take the process's memory.
const MaxFileSize = 16 << 20

// defaultSection is ConfigParser's DEFAULT section: its keys are visible
// in every section.
const defaultSection = "DEFAULT"

// File is a parsed Skytools job ini file: its sections and their raw
// (not yet interpolated) values. Read a section's values with Section.
// A File is immutable and safe for concurrent use.
type File struct {
	filename string
	order    []string // section names in file order, DEFAULT excluded
	sections map[string]*rawSection
	defaults *rawSection
}

// rawSection holds one section's keys as written.
type rawSection struct {
	keys []string // lowercase, in order of first appearance
	vals map[string]*rawValue
}

type rawValue struct {
	value string
	line  int      // line of the key
	parts []string // the value's lines while parsing
}

func newRawSection() *rawSection { return &rawSection{vals: map[string]*rawValue{}} }

// Load reads and parses the config file at path (see Parse). The path, as
// given, is the file name in errors and the source of the built-in
// job_name, config_dir and config_file defaults.
func Load(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("skytools: config file: %w", err)
	}
	defer f.Close()
	return Parse(f, path)
}

// Parse parses a config file read from r, the way Skytools' Python
// skytools.Config reads one (Python 3's configparser.ConfigParser with its
// default settings):
//
//   - "[name]" starts a section (names are case-sensitive; the text up to
//     the last "]" on the line is the name); "[DEFAULT]" holds defaults
//     for every section and may appear more than once;
//   - "key = value" or "key: value", split at the first "=" or ":"; keys
//     are lowercased; keys and values are stripped of whitespace;
//   - a line indented deeper than its key's line continues the value (on
//     a new line of it), so an indented "key = value" under another key is
//     part of that key's value; blank lines inside a value are kept,
//     trailing ones dropped;
//   - lines whose first non-blank character is "#" or ";" are comments,
//     also between continuation lines; there are no inline comments:
//     "key = 1 ; note" sets "1 ; note" (Python 2's ConfigParser stripped
//     " ;" comments, Python 3's does not);
//   - a section or key given twice in the file, a key before the first
//     section, an empty key, and any other line are errors (ErrSyntax),
//     as is text that is not UTF-8 (including a leading byte order mark,
//     which the Python reader takes for text before the first section).
//
// Line ends may be "\n", "\r\n" or "\r". Values are interpolated when a
// Section's getter reads them, not here. filename is used in errors and
// for the built-in defaults ("" if there is none: job_name is then the
// section name, as in Python with no file).
func Parse(r io.Reader, filename string) (*File, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxFileSize+1))
	if err != nil {
		return nil, &Error{File: filename, Err: fmt.Errorf("read: %w", err)}
	}
	if len(data) > MaxFileSize {
		return nil, &Error{File: filename, Err: errf(ErrSyntax, "file is larger than %d bytes", MaxFileSize)}
	}
	if bytes.HasPrefix(data, []byte("\xef\xbb\xbf")) {
		return nil, &Error{File: filename, Line: 1, Err: errf(ErrSyntax, "file starts with a UTF-8 byte order mark, which Skytools' Python reader does not skip: save the file without it")}
	}
	if !utf8.Valid(data) {
		line := 1 + bytes.Count(data[:invalidUTF8At(data)], []byte("\n"))
		return nil, &Error{File: filename, Line: line, Err: errf(ErrSyntax, "not UTF-8 text")}
	}
	text := strings.ReplaceAll(string(data), "\r\n", "\n")
	text = strings.ReplaceAll(text, "\r", "\n")
	lines := strings.Split(text, "\n")
	if strings.HasSuffix(text, "\n") {
		lines = lines[:len(lines)-1]
	}
	p := &parser{f: &File{filename: filename, sections: map[string]*rawSection{}, defaults: newRawSection()}, added: map[string]bool{}}
	if err := p.parse(lines); err != nil {
		return nil, err
	}
	return p.f, nil
}

func invalidUTF8At(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(b)
}

// parser follows configparser.RawConfigParser._read line by line.
type parser struct {
	f       *File
	cur     *rawSection // nil before the first section header
	curName string
	opt     *rawValue // the key continuation lines add to; nil after a header
	indent  int       // indentation of the current key's (or header's) line
	added   map[string]bool
	bad     []error
}

func (p *parser) parse(lines []string) error {
	for i, line := range lines {
		lineno := i + 1
		stripped := pyStrip(line)
		comment := strings.HasPrefix(stripped, "#") || strings.HasPrefix(stripped, ";")
		if comment || stripped == "" {
			// A blank line (not a comment) is kept in the current value;
			// trailing ones are dropped when the value is joined.
			if !comment && p.opt != nil {
				p.opt.parts = append(p.opt.parts, "")
			}
			continue
		}
		indent := strings.IndexFunc(line, func(r rune) bool { return !pyIsSpace(r) })
		indent = utf8.RuneCountInString(line[:indent])
		if p.opt != nil && indent > p.indent {
			p.opt.parts = append(p.opt.parts, stripped)
			continue
		}
		p.indent = indent
		if name, ok := sectionHeader(stripped); ok {
			if err := p.section(name, lineno); err != nil {
				return err
			}
			continue
		}
		if p.cur == nil {
			return &Error{File: p.f.filename, Line: lineno, Err: errf(ErrSyntax, "%q before the first [section] header", clip(line))}
		}
		if err := p.option(stripped, line, lineno); err != nil {
			return err
		}
	}
	p.join()
	if len(p.bad) > 0 {
		return errors.Join(p.bad...)
	}
	return nil
}

// sectionHeader matches ConfigParser's SECTCRE, \[(?P<header>.+)\], at the
// start of the stripped line: the name runs to the last "]" and whatever
// follows that "]" is ignored.
func sectionHeader(s string) (string, bool) {
	if !strings.HasPrefix(s, "[") {
		return "", false
	}
	end := strings.LastIndexByte(s, ']')
	if end < 2 {
		return "", false
	}
	return s[1:end], true
}

func (p *parser) section(name string, lineno int) error {
	p.opt = nil
	p.curName = name
	if name == defaultSection {
		p.cur = p.f.defaults
		return nil
	}
	if s, ok := p.f.sections[name]; ok {
		if p.added[name] {
			return &Error{File: p.f.filename, Line: lineno, Section: name, Err: errf(ErrSyntax, "section appears twice")}
		}
		p.cur = s
	} else {
		p.cur = newRawSection()
		p.f.sections[name] = p.cur
		p.f.order = append(p.f.order, name)
	}
	p.added[name] = true
	return nil
}

// option matches ConfigParser's OPTCRE on the stripped line: the key is
// the text before the first "=" or ":", the value what follows it.
func (p *parser) option(s, line string, lineno int) error {
	i := strings.IndexAny(s, "=:")
	if i < 0 {
		p.bad = append(p.bad, &Error{File: p.f.filename, Line: lineno, Section: p.curName,
			Err: errf(ErrSyntax, "%q is not a [section] header, key = value, key: value, comment or indented continuation", clip(line))})
		return nil
	}
	key := pyLower(pyRstrip(s[:i]))
	if key == "" {
		p.bad = append(p.bad, &Error{File: p.f.filename, Line: lineno, Section: p.curName, Err: errf(ErrSyntax, "%q has no key before %q", clip(line), s[i:i+1])})
		key = "" // as Python does, the value is still kept under ""
	}
	id := p.curName + "\x00" + key
	if p.added[id] {
		return &Error{File: p.f.filename, Line: lineno, Section: p.curName, Key: key, Err: errf(ErrSyntax, "key set twice in the section")}
	}
	p.added[id] = true
	v := &rawValue{line: lineno, parts: []string{pyStrip(s[i+1:])}}
	if _, ok := p.cur.vals[key]; !ok {
		p.cur.keys = append(p.cur.keys, key)
	}
	p.cur.vals[key] = v
	p.opt = v
	if key == "" {
		p.opt = nil // Python's empty key name takes no continuation lines
	}
	return nil
}

// join makes each value its lines joined with newlines, trailing
// whitespace (and so trailing blank lines) removed.
func (p *parser) join() {
	for _, s := range append([]*rawSection{p.f.defaults}, mapValues(p.f.sections, p.f.order)...) {
		for _, v := range s.vals {
			v.value = pyRstrip(strings.Join(v.parts, "\n"))
			v.parts = nil
		}
	}
}

func mapValues(m map[string]*rawSection, order []string) []*rawSection {
	out := make([]*rawSection, 0, len(order))
	for _, k := range order {
		out = append(out, m[k])
	}
	return out
}

// clip shortens a line quoted in an error.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// Filename returns the file name given to Load or Parse.
func (f *File) Filename() string { return f.filename }

// Sections returns the section names in file order, without DEFAULT
// (Python's Config.sections()).
func (f *File) Sections() []string { return append([]string(nil), f.order...) }
