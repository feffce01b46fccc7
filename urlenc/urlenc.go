// Package urlenc encodes and decodes rows in Skytools' urlencoded format
// (skytools.db_urlencode / db_urldecode): "key=value&key2=value2", the
// format of londiste's row events and of the targeted copy's rows. Any
// londiste-style producer or consumer can use it; it depends on nothing but
// the pgq package's Text type.
package urlenc

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pgq-go/pgq/pgq"
)

// MaxRowSize is the default limit on the size in bytes of one encoded
// row. Fields.Encode refuses larger rows; the targeted copy's appliers take
// their own limit that defaults to this.
const MaxRowSize = 1 << 20

// ErrInvalid is wrapped by every error about the content of a row: a value
// that cannot be encoded, or text that does not decode. Test with
// errors.Is.
var ErrInvalid = errors.New("urlenc: invalid row")

// Fields is a typed row, encoded as a Skytools urlencoded row
// (skytools.db_urlencode): "key=value&key2=value2", keys in sorted order so
// equal rows encode equally, keys and values escaped like Python's
// urllib.parse.quote_plus (space as '+', A-Z a-z 0-9 - _ . ~ kept, every
// other byte of the UTF-8 text as %XX), and a NULL value written as the
// bare key without '='.
//
// Accepted values and their text:
//
//	nil, a nil pointer           NULL
//	string                       itself
//	*string                      the string; nil is NULL
//	pgq.Text                     String; Valid=false is NULL
//	bool                         t or f
//	int, int8..int64, uint..     decimal
//	float32, float64             strconv 'g' with the shortest exact form (NaN, +Inf, -Inf)
//	time.Time                    RFC 3339 with nanoseconds
//	fmt.Stringer                 String()
//
// Anything else is an error naming the key. Keys must be non-empty; keys
// and values must be valid UTF-8 without NUL bytes.
type Fields map[string]any

// Encode encodes f as a Skytools urlencoded row. Errors wrap ErrInvalid.
func (f Fields) Encode() (string, error) {
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if k == "" {
			return "", fmt.Errorf("%w: empty key", ErrInvalid)
		}
		if err := checkText(k); err != nil {
			return "", fmt.Errorf("%w: key %q: %v", ErrInvalid, k, err)
		}
		v, null, err := fieldText(f[k])
		if err != nil {
			return "", fmt.Errorf("%w: key %q: %v", ErrInvalid, k, err)
		}
		if i > 0 {
			b.WriteByte('&')
		}
		escape(&b, k)
		if !null {
			if err := checkText(v); err != nil {
				return "", fmt.Errorf("%w: key %q: value %v", ErrInvalid, k, err)
			}
			b.WriteByte('=')
			escape(&b, v)
		}
		if b.Len() > MaxRowSize {
			return "", fmt.Errorf("%w: encoded row is more than %d bytes (at key %q)", ErrInvalid, MaxRowSize, k)
		}
	}
	return b.String(), nil
}

// fieldText returns the text of one Fields value, or null.
func fieldText(v any) (s string, null bool, err error) {
	switch v := v.(type) {
	case nil:
		return "", true, nil
	case string:
		return v, false, nil
	case *string:
		if v == nil {
			return "", true, nil
		}
		return *v, false, nil
	case pgq.Text:
		return v.String, !v.Valid, nil
	case bool:
		if v {
			return "t", false, nil
		}
		return "f", false, nil
	case int:
		return strconv.FormatInt(int64(v), 10), false, nil
	case int8:
		return strconv.FormatInt(int64(v), 10), false, nil
	case int16:
		return strconv.FormatInt(int64(v), 10), false, nil
	case int32:
		return strconv.FormatInt(int64(v), 10), false, nil
	case int64:
		return strconv.FormatInt(v, 10), false, nil
	case uint:
		return strconv.FormatUint(uint64(v), 10), false, nil
	case uint8:
		return strconv.FormatUint(uint64(v), 10), false, nil
	case uint16:
		return strconv.FormatUint(uint64(v), 10), false, nil
	case uint32:
		return strconv.FormatUint(uint64(v), 10), false, nil
	case uint64:
		return strconv.FormatUint(v, 10), false, nil
	case uintptr:
		return strconv.FormatUint(uint64(v), 10), false, nil
	case float32:
		return strconv.FormatFloat(float64(v), 'g', -1, 32), false, nil
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64), false, nil
	case time.Time:
		return v.Format(time.RFC3339Nano), false, nil
	case fmt.Stringer:
		// A typed nil pointer would panic in String (or print "<nil>"):
		// it means NULL, like a nil *string.
		if rv := reflect.ValueOf(v); rv.Kind() == reflect.Pointer && rv.IsNil() {
			return "", true, nil
		}
		return v.String(), false, nil
	default:
		return "", false, fmt.Errorf("unsupported value type %T", v)
	}
}

// checkText rejects what a PostgreSQL text value cannot hold.
func checkText(s string) error {
	if strings.IndexByte(s, 0) >= 0 {
		return errors.New("contains a NUL byte")
	}
	if !utf8.ValidString(s) {
		return errors.New("is not valid UTF-8")
	}
	return nil
}

const hexDigits = "0123456789ABCDEF"

// escape writes s escaped as Python's urllib.parse.quote_plus does.
func escape(b *strings.Builder, s string) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '-', c == '_', c == '.', c == '~':
			b.WriteByte(c)
		case c == ' ':
			b.WriteByte('+')
		default:
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&15])
		}
	}
}

// Field is one key and value of a decoded urlencoded row; Value.Valid is
// false for NULL.
type Field struct {
	Key   string
	Value pgq.Text
}

// Parse decodes a Skytools urlencoded row (see Fields and
// ParseOrdered) into a map.
func Parse(s string) (map[string]pgq.Text, error) {
	fields, err := ParseOrdered(s)
	if err != nil {
		return nil, err
	}
	m := make(map[string]pgq.Text, len(fields))
	for _, f := range fields {
		m[f.Key] = f.Value
	}
	return m, nil
}

// ParseOrdered decodes a Skytools urlencoded row in the order of s.
// It reads what skytools.db_urlencode writes, by either of its
// implementations (the C one writes lowercase hex and escapes '~', the
// Python one does not): "key=value" pairs joined by '&', '+' for space,
// %XX escapes in either case, a bare key (no '=') for NULL and "key=" for
// the empty string. Empty pairs ("a=1&&b=2", a trailing '&') are skipped,
// as Skytools does.
//
// It is stricter than Skytools where Skytools would silently read
// something else than was meant; these are errors wrapping ErrInvalid:
// a malformed % escape, an empty key, a key given twice (Skytools keeps
// the last), an unescaped '=' inside a value (Skytools' C decoder reads
// "a=b=c" as two pairs, its Python decoder as a="b=c"), and decoded text
// that is not valid UTF-8 or holds a NUL byte.
func ParseOrdered(s string) ([]Field, error) {
	fields := make([]Field, 0, strings.Count(s, "&")+1)
	var seen map[string]struct{} // only for wide rows; narrow ones scan fields
	for pair := range strings.SplitSeq(s, "&") {
		if pair == "" {
			continue
		}
		rawKey, rawVal, hasVal := strings.Cut(pair, "=")
		key, err := unescape(rawKey)
		if err != nil {
			return nil, fmt.Errorf("%w: key %q: %v", ErrInvalid, rawKey, err)
		}
		if key == "" {
			return nil, fmt.Errorf("%w: empty key in %q", ErrInvalid, pair)
		}
		if dupKey(fields, &seen, key) {
			return nil, fmt.Errorf("%w: key %q given twice", ErrInvalid, key)
		}
		f := Field{Key: key}
		if hasVal {
			if strings.IndexByte(rawVal, '=') >= 0 {
				return nil, fmt.Errorf("%w: key %q: unescaped '=' in value", ErrInvalid, key)
			}
			v, err := unescape(rawVal)
			if err != nil {
				return nil, fmt.Errorf("%w: key %q: value: %v", ErrInvalid, key, err)
			}
			f.Value = pgq.T(v)
		}
		fields = append(fields, f)
	}
	return fields, nil
}

// dupKey reports whether key is among fields' keys, and records it: a
// linear scan for the usual narrow rows, a map once a row is wide.
func dupKey(fields []Field, seen *map[string]struct{}, key string) bool {
	const wide = 16
	if len(fields) < wide {
		for _, f := range fields {
			if f.Key == key {
				return true
			}
		}
		return false
	}
	if *seen == nil {
		*seen = make(map[string]struct{}, 2*wide)
		for _, f := range fields {
			(*seen)[f.Key] = struct{}{}
		}
	}
	if _, dup := (*seen)[key]; dup {
		return true
	}
	(*seen)[key] = struct{}{}
	return false
}

// unescape decodes '+' and %XX escapes and checks the result is
// valid text.
func unescape(s string) (string, error) {
	if strings.IndexByte(s, '%') < 0 && strings.IndexByte(s, '+') < 0 {
		return s, checkText(s)
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '+':
			b = append(b, ' ')
		case '%':
			if i+2 >= len(s) {
				return "", fmt.Errorf("incomplete escape %q", s[i:])
			}
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if !ok1 || !ok2 {
				return "", fmt.Errorf("invalid escape %q", s[i:i+3])
			}
			b = append(b, hi<<4|lo)
			i += 2
		default:
			b = append(b, c)
		}
	}
	out := string(b)
	return out, checkText(out)
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
