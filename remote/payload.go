package remote

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

// MaxPayload is the default limit on the size in bytes of one targeted
// row's payload (ev_extra2). Encode refuses larger payloads; appliers take
// their own limit (FuncApplier.MaxPayload, RowApplier.MaxPayload) that
// defaults to this.
const MaxPayload = 1 << 20

// ErrBadPayload is wrapped by every error caused by the content of a
// payload rather than by the database: undecodable encoding, unknown or
// missing columns, an unknown action, an oversized row. Such an event can
// never succeed as it is, so the copier parks it at once instead of
// retrying it. Test with errors.Is.
var ErrBadPayload = errors.New("remote: bad payload")

// Payload is what a targeted event carries in ev_extra2: Raw text, or
// Fields encoded as a Skytools urlencoded row.
type Payload interface {
	Encode() (string, error)
}

// Raw is a payload sent as it is, for appliers that read their own format
// (a FuncApplier's SQL function, a custom Applier).
type Raw string

// Encode returns r verbatim. It fails, wrapping ErrBadPayload, if r holds
// a NUL byte or invalid UTF-8 (PostgreSQL text cannot store either) or is
// longer than MaxPayload bytes.
func (r Raw) Encode() (string, error) {
	s := string(r)
	if len(s) > MaxPayload {
		return "", fmt.Errorf("%w: raw payload is %d bytes, more than %d", ErrBadPayload, len(s), MaxPayload)
	}
	if err := payloadCheckText(s); err != nil {
		return "", fmt.Errorf("%w: raw payload %v", ErrBadPayload, err)
	}
	return s, nil
}

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

// Encode encodes f as a Skytools urlencoded row. Errors wrap ErrBadPayload.
func (f Fields) Encode() (string, error) {
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if k == "" {
			return "", fmt.Errorf("%w: empty key", ErrBadPayload)
		}
		if err := payloadCheckText(k); err != nil {
			return "", fmt.Errorf("%w: key %q: %v", ErrBadPayload, k, err)
		}
		v, null, err := fieldText(f[k])
		if err != nil {
			return "", fmt.Errorf("%w: key %q: %v", ErrBadPayload, k, err)
		}
		if i > 0 {
			b.WriteByte('&')
		}
		payloadEscape(&b, k)
		if !null {
			if err := payloadCheckText(v); err != nil {
				return "", fmt.Errorf("%w: key %q: value %v", ErrBadPayload, k, err)
			}
			b.WriteByte('=')
			payloadEscape(&b, v)
		}
		if b.Len() > MaxPayload {
			return "", fmt.Errorf("%w: encoded row is more than %d bytes (at key %q)", ErrBadPayload, MaxPayload, k)
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

// payloadCheckText rejects what a PostgreSQL text value cannot hold.
func payloadCheckText(s string) error {
	if strings.IndexByte(s, 0) >= 0 {
		return errors.New("contains a NUL byte")
	}
	if !utf8.ValidString(s) {
		return errors.New("is not valid UTF-8")
	}
	return nil
}

const payloadHex = "0123456789ABCDEF"

// payloadEscape writes s escaped as Python's urllib.parse.quote_plus does.
func payloadEscape(b *strings.Builder, s string) {
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
			b.WriteByte(payloadHex[c>>4])
			b.WriteByte(payloadHex[c&15])
		}
	}
}

// Field is one key and value of a decoded urlencoded row; Value.Valid is
// false for NULL.
type Field struct {
	Key   string
	Value pgq.Text
}

// ParseFields decodes a Skytools urlencoded row (see Fields and
// ParseFieldsOrdered) into a map.
func ParseFields(s string) (map[string]pgq.Text, error) {
	fields, err := ParseFieldsOrdered(s)
	if err != nil {
		return nil, err
	}
	m := make(map[string]pgq.Text, len(fields))
	for _, f := range fields {
		m[f.Key] = f.Value
	}
	return m, nil
}

// ParseFieldsOrdered decodes a Skytools urlencoded row in the order of s.
// It reads what skytools.db_urlencode writes, by either of its
// implementations (the C one writes lowercase hex and escapes '~', the
// Python one does not): "key=value" pairs joined by '&', '+' for space,
// %XX escapes in either case, a bare key (no '=') for NULL and "key=" for
// the empty string. Empty pairs ("a=1&&b=2", a trailing '&') are skipped,
// as Skytools does.
//
// It is stricter than Skytools where Skytools would silently read
// something else than was meant; these are errors wrapping ErrBadPayload:
// a malformed % escape, an empty key, a key given twice (Skytools keeps
// the last), an unescaped '=' inside a value (Skytools' C decoder reads
// "a=b=c" as two pairs, its Python decoder as a="b=c"), and decoded text
// that is not valid UTF-8 or holds a NUL byte.
func ParseFieldsOrdered(s string) ([]Field, error) {
	var fields []Field
	seen := make(map[string]struct{})
	for pair := range strings.SplitSeq(s, "&") {
		if pair == "" {
			continue
		}
		rawKey, rawVal, hasVal := strings.Cut(pair, "=")
		key, err := payloadUnescape(rawKey)
		if err != nil {
			return nil, fmt.Errorf("%w: key %q: %v", ErrBadPayload, rawKey, err)
		}
		if key == "" {
			return nil, fmt.Errorf("%w: empty key in %q", ErrBadPayload, pair)
		}
		if _, dup := seen[key]; dup {
			return nil, fmt.Errorf("%w: key %q given twice", ErrBadPayload, key)
		}
		seen[key] = struct{}{}
		f := Field{Key: key}
		if hasVal {
			if strings.IndexByte(rawVal, '=') >= 0 {
				return nil, fmt.Errorf("%w: key %q: unescaped '=' in value", ErrBadPayload, key)
			}
			v, err := payloadUnescape(rawVal)
			if err != nil {
				return nil, fmt.Errorf("%w: key %q: value: %v", ErrBadPayload, key, err)
			}
			f.Value = pgq.T(v)
		}
		fields = append(fields, f)
	}
	return fields, nil
}

// payloadUnescape decodes '+' and %XX escapes and checks the result is
// valid text.
func payloadUnescape(s string) (string, error) {
	if strings.IndexByte(s, '%') < 0 && strings.IndexByte(s, '+') < 0 {
		return s, payloadCheckText(s)
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
			hi, ok1 := payloadUnhex(s[i+1])
			lo, ok2 := payloadUnhex(s[i+2])
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
	return out, payloadCheckText(out)
}

func payloadUnhex(c byte) (byte, bool) {
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
