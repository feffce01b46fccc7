package skytools

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Sentinel errors, matched with errors.Is on any error of this package.
var (
	// ErrSyntax: the file is not one Skytools' Python ConfigParser reads
	// (a line that is no section header, key, comment or continuation, a
	// key before any section, a section or key given twice, text that is
	// not UTF-8).
	ErrSyntax = errors.New("syntax error")
	// ErrNoSection: the file has no such section (DEFAULT is not one).
	ErrNoSection = errors.New("no such section")
	// ErrNoKey: the key is set neither in the section nor in DEFAULT, and
	// is not one of the built-in defaults (job_name and the others).
	ErrNoKey = errors.New("key not set")
	// ErrInterpolation: a %(name)s or ${name} reference in the value is
	// malformed, names a key that is not set, or nests deeper than ten
	// levels (how a reference loop shows).
	ErrInterpolation = errors.New("interpolation error")
	// ErrBadValue: the value does not convert to what the getter returns,
	// or is out of range for the setting it configures.
	ErrBadValue = errors.New("bad value")
)

// Error reports a problem with a config file, one of its sections or one
// of its keys. It wraps one of the sentinel errors (and, where there is
// one, the conversion's own error).
type Error struct {
	File    string // file name given to Load or Parse; "" if none was
	Line    int    // line at fault (for a key: where it is set); 0 if none
	Section string // section name; "" for a whole-file problem
	Key     string // key (lowercase); "" for a file or section problem
	// Value is the value at fault, when a conversion failed (after
	// interpolation). Error quotes at most 120 bytes of it.
	Value string
	Err   error

	hasValue bool
}

// Error formats the error as
// "skytools: FILE:LINE: [SECTION] KEY = "VALUE": REASON", leaving out the
// parts that do not apply.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("skytools: ")
	if e.File != "" {
		b.WriteString(e.File)
	} else {
		b.WriteString("<config>")
	}
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
	}
	if e.Section != "" {
		b.WriteString(": [" + e.Section + "]")
	}
	if e.Key != "" {
		b.WriteString(" " + e.Key)
	}
	if e.hasValue {
		v := e.Value
		if len(v) > 120 {
			v = v[:120] + "..."
		}
		b.WriteString(" = " + strconv.Quote(v))
	}
	b.WriteString(": ")
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// errf builds the Err of an Error: sentinel, then a formatted reason.
func errf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, args...))
}
