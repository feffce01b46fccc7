package skytools

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// String returns key's value, interpolated (Python's Config.get).
func (s *Section) String(key string) (string, error) {
	v, _, err := s.get(key)
	return v, err
}

// convert reads key and converts its value with fn; a conversion error
// becomes an *Error naming file, line, section, key and value.
func convert[T any](s *Section, key string, fn func(string) (T, error)) (T, error) {
	v, line, err := s.get(key)
	if err != nil {
		var zero T
		return zero, err
	}
	out, err := fn(v)
	if err != nil {
		var zero T
		return zero, &Error{File: s.file.filename, Line: line, Section: s.name, Key: pyLower(key), Value: v, hasValue: true, Err: err}
	}
	return out, nil
}

// Int returns key's value as an integer, read as Python's int() reads it
// (Config.getint): optional sign, decimal digits (any script's), single
// underscores between digits, surrounding whitespace; values beyond int64
// are ErrBadValue.
func (s *Section) Int(key string) (int, error) {
	return convert(s, key, func(v string) (int, error) {
		n, err := parseInt(v)
		return int(n), err
	})
}

func parseInt(v string) (int64, error) {
	a, ok := pyNumberASCII(v)
	body := a
	if body != "" && (body[0] == '+' || body[0] == '-') {
		body = body[1:]
	}
	if !ok || !validDigits(body, true) {
		return 0, errf(ErrBadValue, "not an integer")
	}
	n, err := strconv.ParseInt(strings.ReplaceAll(a, "_", ""), 10, 64)
	if err != nil {
		return 0, errf(ErrBadValue, "integer out of range")
	}
	return n, nil
}

// validDigits reports whether s is ASCII digits with single underscores
// between digits (Python's digit grouping); "" is valid unless nonEmpty.
func validDigits(s string, nonEmpty bool) bool {
	if s == "" {
		return !nonEmpty
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
		case c == '_' && i > 0 && i < len(s)-1 && isDigit(s[i-1]) && isDigit(s[i+1]):
		default:
			return false
		}
	}
	return true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// boolWords is ConfigParser.BOOLEAN_STATES.
var boolWords = map[string]bool{"1": true, "yes": true, "true": true, "on": true, "0": false, "no": false, "false": false, "off": false}

// Bool returns key's value as a boolean (Config.getboolean): 1, yes, true,
// on or 0, no, false, off, in any case.
func (s *Section) Bool(key string) (bool, error) {
	return convert(s, key, func(v string) (bool, error) {
		b, ok := boolWords[pyLower(v)]
		if !ok {
			return false, errf(ErrBadValue, "not a boolean: use 1, yes, true, on or 0, no, false, off")
		}
		return b, nil
	})
}

// Float returns key's value as a float, read as Python's float() reads it
// (Config.getfloat): decimal notation with an optional exponent and digit
// underscores, inf, infinity and nan in any case, surrounding whitespace.
// Values beyond float64's range are infinities, as in Python.
func (s *Section) Float(key string) (float64, error) { return convert(s, key, parseFloat) }

func parseFloat(v string) (float64, error) {
	a, ok := pyNumberASCII(v)
	if !ok || !pyFloatSyntax(a) {
		return 0, errf(ErrBadValue, "not a number")
	}
	if strings.EqualFold(strings.TrimLeft(a, "+-"), "nan") {
		return math.NaN(), nil // Go's ParseFloat takes no sign before nan
	}
	f, err := strconv.ParseFloat(strings.ReplaceAll(a, "_", ""), 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, errf(ErrBadValue, "not a number")
	}
	return f, nil
}

// pyFloatSyntax reports whether a (ASCII, stripped) is a float literal
// Python's float() accepts.
func pyFloatSyntax(a string) bool {
	if a != "" && (a[0] == '+' || a[0] == '-') {
		a = a[1:]
	}
	switch strings.ToLower(a) {
	case "inf", "infinity", "nan":
		return true
	}
	mant, exp := a, ""
	if i := strings.IndexAny(a, "eE"); i >= 0 {
		mant, exp = a[:i], a[i+1:]
		if exp != "" && (exp[0] == '+' || exp[0] == '-') {
			exp = exp[1:]
		}
		if !validDigits(exp, true) {
			return false
		}
	}
	intPart, frac, hasDot := strings.Cut(mant, ".")
	if !validDigits(intPart, false) || !validDigits(frac, false) {
		return false
	}
	if intPart == "" && frac == "" {
		return false
	}
	return hasDot || intPart != ""
}

// Duration returns key's value, a number of seconds read as Float reads
// it (loop_delay = 0.5), as a Duration rounded to the nanosecond. NaN,
// infinities and values beyond Duration's range (about 292 years) are
// ErrBadValue.
func (s *Section) Duration(key string) (time.Duration, error) {
	return convert(s, key, parseSeconds)
}

func parseSeconds(v string) (time.Duration, error) {
	f, err := parseFloat(v)
	if err != nil {
		return 0, err
	}
	if math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f*1e9) >= math.MaxInt64 {
		return 0, errf(ErrBadValue, "not a number of seconds within ±292 years")
	}
	return time.Duration(math.Round(f * 1e9)), nil
}

// Interval returns key's value, a PostgreSQL interval as Skytools passes
// it to SQL (pgq_keep_lag = 10 min, pgq_batch_collect_interval = 1.5), as
// a Duration. See the package documentation for the forms it reads; any
// other is ErrBadValue rather than a guess. Months count as 30 days and
// years as 12 months, as PostgreSQL compares intervals.
func (s *Section) Interval(key string) (time.Duration, error) {
	return convert(s, key, parseInterval)
}

// List returns key's value split at commas, each item stripped
// (Config.getlist); an empty or blank value is an empty list. Empty items
// are kept ("a,,b" has three).
func (s *Section) List(key string) ([]string, error) {
	return convert(s, key, func(v string) ([]string, error) { return splitList(v), nil })
}

func splitList(v string) []string {
	v = pyStrip(v)
	if v == "" {
		return []string{}
	}
	items := strings.Split(v, ",")
	for i, it := range items {
		items[i] = pyStrip(it)
	}
	return items
}

// Dict returns key's value as a map (Config.getdict): comma-separated
// items, each "key:value" split at its first colon, or a bare "key" that
// maps to itself; keys and values are stripped, a later item replaces an
// earlier one with the same key.
func (s *Section) Dict(key string) (map[string]string, error) {
	return convert(s, key, func(v string) (map[string]string, error) {
		out := map[string]string{}
		v = pyStrip(v)
		if v == "" {
			return out, nil
		}
		for _, kv := range strings.Split(v, ",") {
			k, val, ok := strings.Cut(kv, ":")
			if ok {
				out[pyStrip(k)] = pyStrip(val)
			} else {
				out[pyStrip(kv)] = pyStrip(kv)
			}
		}
		return out, nil
	})
}

// File returns key's value as a file name (Config.getfile): "~" and
// "~user" at its start are expanded to home directories as Python's
// os.path.expanduser does; "" and "-" are returned as they are.
func (s *Section) File(key string) (string, error) {
	return convert(s, key, func(v string) (string, error) {
		if v == "" || v == "-" {
			return v, nil
		}
		return pyExpandUser(v), nil
	})
}

// Bytes returns key's value as a size in bytes (Config.getbytes): digits,
// optional spaces, an optional unit K, M, G, T, P, E, Z or Y (powers of
// 1024) and an optional B, in any case: "1", "2 B", "3K", "4 MB". Sizes
// beyond int64 are ErrBadValue.
func (s *Section) Bytes(key string) (int64, error) {
	return convert(s, key, parseBytes)
}

func parseBytes(v string) (int64, error) {
	a := pyStrip(v)
	i := 0
	for i < len(a) && isDigit(a[i]) {
		i++
	}
	digits, rest := a[:i], strings.TrimLeft(a[i:], " ")
	unit := 0
	if rest != "" {
		if u := strings.IndexByte("KMGTPEZY", upper(rest[0])); u >= 0 {
			unit = u + 1
			rest = rest[1:]
		}
	}
	if rest == "b" || rest == "B" {
		rest = ""
	}
	if digits == "" || rest != "" {
		return 0, errf(ErrBadValue, "not a size: write digits and an optional unit (K, M, G, T, P, E, Z, Y) and B, such as 512, 64K or 4 MB")
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return 0, errf(ErrBadValue, "size out of range")
	}
	for range unit {
		if n > math.MaxInt64/1024 {
			return 0, errf(ErrBadValue, "size out of range")
		}
		n *= 1024
	}
	return n, nil
}

func upper(c byte) byte {
	if c >= 'a' && c <= 'z' {
		return c - 'a' + 'A'
	}
	return c
}

// Wildcard returns the value of the most specific key a pattern names
// (Config.get_wildcard): each of values replaces the next "*" in key, and
// the key with the most replacements that is set wins ("*_filter" with
// "orders" looks for "orders_filter", then "*_filter").
func (s *Section) Wildcard(key string, values ...string) (string, error) {
	keys := []string{key}
	k := key
	for _, w := range values {
		k = strings.Replace(k, "*", w, 1)
		keys = append(keys, k)
	}
	for i := len(keys) - 1; i >= 0; i-- {
		if s.Has(keys[i]) {
			return s.String(keys[i])
		}
	}
	return "", &Error{File: s.file.filename, Section: s.name, Key: pyLower(key), Err: fmt.Errorf("%w (nor any key it names with %q)", ErrNoKey, values)}
}
