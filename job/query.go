package job

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/urlenc"
)

// Query is a Skytools dst_query: SQL with psycopg2-style %(key)s
// placeholders, run once per event. Skytools interpolated the values into
// the text as quoted literals; here each placeholder becomes a bound
// parameter ($1, $2, ...; the same key, the same parameter), sent as text
// of unknown type so that PostgreSQL types it from its context as it typed
// the quoted literal (a column, a function argument). %(pgq.ev_time)s is
// cast to timestamptz, as psycopg2 casts a datetime.
//
// Keys are the event's urldecoded ev_data fields (a key without '=' is
// NULL), and pgq.tick_id, pgq.ev_id, pgq.ev_time, pgq.ev_type,
// pgq.ev_data, pgq.ev_extra1 .. pgq.ev_extra4. A key the event lacks fails
// the batch, as Skytools' KeyError did.
type Query struct {
	// SQL is the statement with $n parameters.
	SQL string
	// Keys[i] is the key bound to parameter $i+1.
	Keys []string
}

// ParseQuery parses a dst_query as Skytools wrote it (after the ini's own
// interpolation, which turned %%(key)s into %(key)s): %(key)s is a
// placeholder and %% a literal %, everywhere as in psycopg2. Refused with
// a clear error: any other % sequence, a placeholder inside a quoted
// string, quoted identifier or comment (psycopg2 would have pasted a
// quoted literal into it), and $n parameters of the text's own.
func ParseQuery(q string) (*Query, error) {
	if strings.TrimSpace(q) == "" {
		return nil, fmt.Errorf("job: dst_query is empty")
	}
	var (
		out   strings.Builder
		keys  []string
		index = map[string]int{}
	)
	// where: "" outside quotes; else what we are in, for errors.
	where := ""
	var endTag string // the closing delimiter of a dollar-quoted string
	escapes := false  // in an E'...' string: backslash escapes the quote
	depth := 0        // /* */ comments nest in PostgreSQL
	for i := 0; i < len(q); i++ {
		c := q[i]
		if c == '%' {
			switch {
			case i+1 < len(q) && q[i+1] == '%':
				out.WriteByte('%')
				i++
			case i+1 < len(q) && q[i+1] == '(':
				end := strings.IndexByte(q[i+2:], ')')
				if end < 0 || i+2+end+1 >= len(q) || q[i+2+end+1] != 's' {
					return nil, fmt.Errorf("job: dst_query: placeholder at byte %d is not %%(key)s: %q", i, clip(q[i:]))
				}
				key := q[i+2 : i+2+end]
				if key == "" {
					return nil, fmt.Errorf("job: dst_query: empty placeholder key at byte %d", i)
				}
				if where != "" {
					return nil, fmt.Errorf("job: dst_query: placeholder %%(%s)s inside a %s: Skytools pasted a quoted literal there; "+
						"write it outside quotes and comments", key, where)
				}
				n, ok := index[key]
				if !ok {
					keys = append(keys, key)
					n = len(keys)
					index[key] = n
				}
				out.WriteString("$" + strconv.Itoa(n))
				if key == "pgq.ev_time" {
					out.WriteString("::timestamptz")
				}
				i += 2 + end + 1
			default:
				return nil, fmt.Errorf("job: dst_query: %q at byte %d is not a placeholder; write %%%% for a literal %%", clip(q[i:]), i)
			}
			continue
		}
		out.WriteByte(c)
		switch where {
		case "":
			switch {
			case c == '\'':
				where = "quoted string"
				escapes = i > 0 && (q[i-1] == 'E' || q[i-1] == 'e') && (i == 1 || !identChar(q[i-2]))
			case c == '"':
				where = "quoted identifier"
			case c == '-' && i+1 < len(q) && q[i+1] == '-':
				where = "comment"
				out.WriteByte('-')
				i++
			case c == '/' && i+1 < len(q) && q[i+1] == '*':
				where, depth = "block comment", 1
				out.WriteByte('*')
				i++
			case c == '$' && (i == 0 || !identChar(q[i-1])):
				rest := q[i+1:]
				if len(rest) > 0 && rest[0] >= '0' && rest[0] <= '9' {
					return nil, fmt.Errorf("job: dst_query has a parameter of its own (%q); use %%(key)s placeholders", clip(q[i:]))
				}
				j := 0
				for j < len(rest) && identChar(rest[j]) && !(j == 0 && rest[j] >= '0' && rest[j] <= '9') {
					j++
				}
				if j < len(rest) && rest[j] == '$' {
					endTag = q[i : i+1+j+1]
					where = "dollar-quoted string"
					out.WriteString(rest[:j+1])
					i += j + 1
				}
			}
		case "quoted string":
			switch {
			case escapes && c == '\\' && i+1 < len(q) && q[i+1] != '%':
				out.WriteByte(q[i+1])
				i++
			case c == '\'' && i+1 < len(q) && q[i+1] == '\'':
				out.WriteByte('\'')
				i++
			case c == '\'':
				where = ""
			}
		case "quoted identifier":
			if c == '"' {
				if i+1 < len(q) && q[i+1] == '"' {
					out.WriteByte('"')
					i++
				} else {
					where = ""
				}
			}
		case "comment":
			if c == '\n' {
				where = ""
			}
		case "block comment":
			switch {
			case c == '/' && i+1 < len(q) && q[i+1] == '*':
				depth++
				out.WriteByte('*')
				i++
			case c == '*' && i+1 < len(q) && q[i+1] == '/':
				out.WriteByte('/')
				i++
				if depth--; depth == 0 {
					where = ""
				}
			}
		case "dollar-quoted string":
			if c == '$' && strings.HasPrefix(q[i:], endTag) {
				out.WriteString(endTag[1:])
				i += len(endTag) - 1
				where = ""
			}
		}
	}
	if where != "" && where != "comment" {
		return nil, fmt.Errorf("job: dst_query: unterminated %s", where)
	}
	return &Query{SQL: out.String(), Keys: keys}, nil
}

func identChar(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80
}

func clip(s string) string {
	if len(s) > 20 {
		return s[:20] + "..."
	}
	return s
}

// eventKeys are the pgq.* keys Skytools added to the payload.
var eventKeys = map[string]func(ev *pgq.Event, tick int64) any{
	"pgq.tick_id":   func(_ *pgq.Event, tick int64) any { return strconv.FormatInt(tick, 10) },
	"pgq.ev_id":     func(ev *pgq.Event, _ int64) any { return strconv.FormatInt(ev.ID, 10) },
	"pgq.ev_time":   func(ev *pgq.Event, _ int64) any { return ev.Time.Format(pgTime) },
	"pgq.ev_type":   func(ev *pgq.Event, _ int64) any { return text(ev.Type) },
	"pgq.ev_data":   func(ev *pgq.Event, _ int64) any { return text(ev.Data) },
	"pgq.ev_extra1": func(ev *pgq.Event, _ int64) any { return text(ev.Extra1) },
	"pgq.ev_extra2": func(ev *pgq.Event, _ int64) any { return text(ev.Extra2) },
	"pgq.ev_extra3": func(ev *pgq.Event, _ int64) any { return text(ev.Extra3) },
	"pgq.ev_extra4": func(ev *pgq.Event, _ int64) any { return text(ev.Extra4) },
}

// pgTime is timestamptz input PostgreSQL reads exactly (microseconds).
const pgTime = "2006-01-02 15:04:05.999999Z07:00"

func text(t pgq.Text) any {
	if !t.Valid {
		return nil
	}
	return t.String
}

// Args returns the parameters of q for ev in a batch ending at tick: the
// event's urldecoded ev_data fields and the pgq.* keys, each a string or
// nil (NULL). A NULL ev_data has no fields; one that is not urlencoded
// fails, naming the event, as does a key the event lacks.
func (q *Query) Args(ev *pgq.Event, tick int64) ([]any, error) {
	var fields map[string]pgq.Text
	args := make([]any, len(q.Keys))
	for i, k := range q.Keys {
		if f, ok := eventKeys[k]; ok {
			args[i] = f(ev, tick)
			continue
		}
		if fields == nil && ev.Data.Valid {
			var err error
			if fields, err = urlenc.Parse(ev.Data.String); err != nil {
				return nil, fmt.Errorf("event %d: ev_data is not urlencoded: %w", ev.ID, err)
			}
		}
		v, ok := fields[k]
		if !ok {
			return nil, fmt.Errorf("event %d has no key %q for dst_query (ev_type %q)", ev.ID, k, ev.Type.String)
		}
		args[i] = text(v)
	}
	return args, nil
}

// rowEvent reports whether Skytools' simple consumers apply ev: only
// events whose type starts with I:, U: or D: (londiste row events); the
// others are skipped and count as done.
func rowEvent(ev *pgq.Event) bool {
	t := ev.Type.String
	return len(t) >= 2 && (t[:2] == "I:" || t[:2] == "U:" || t[:2] == "D:")
}
