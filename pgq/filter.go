package pgq

import (
	"errors"
	"fmt"
	"strings"
)

// Field names an event column a Filter can test.
type Field string

// Event columns usable in filters.
const (
	FieldType   Field = "ev_type"
	FieldData   Field = "ev_data"
	FieldExtra1 Field = "ev_extra1"
	FieldExtra2 Field = "ev_extra2"
	FieldExtra3 Field = "ev_extra3"
	FieldExtra4 Field = "ev_extra4"
)

func (f Field) valid() bool {
	switch f {
	case FieldType, FieldData, FieldExtra1, FieldExtra2, FieldExtra3, FieldExtra4:
		return true
	}
	return false
}

// Filter is a server-side event filter built from typed values only: it
// renders to an SQL condition with every value quoted as a literal, and is
// handed to PgQ's batch query (get_batch_cursor's extra_where). The zero
// Filter selects every event. Invalid input is reported when the filter is
// used (Err tells it earlier).
type Filter struct {
	sql string
	err error
}

// Err reports why the filter is invalid, or nil.
func (f Filter) Err() error { return f.err }

// IsZero reports whether f selects every event.
func (f Filter) IsZero() bool { return f.sql == "" && f.err == nil }

// String returns the SQL condition (for logs).
func (f Filter) String() string { return f.sql }

// Eq selects events whose field equals v.
func Eq(field Field, v string) Filter { return In(field, v) }

// In selects events whose field is one of vs (table_filter's
// "ev_extra1 in (...)"). An empty set selects nothing.
func In(field Field, vs ...string) Filter {
	if !field.valid() {
		return Filter{err: fmt.Errorf("unknown field %q: %w", field, ErrInvalidArgument)}
	}
	if len(vs) == 0 {
		return Filter{sql: "false"}
	}
	var sb strings.Builder
	sb.WriteString(string(field))
	if len(vs) == 1 {
		sb.WriteString(" = ")
	} else {
		sb.WriteString(" in (")
	}
	for i, v := range vs {
		if i > 0 {
			sb.WriteString(", ")
		}
		lit, err := quoteLiteral(v)
		if err != nil {
			return Filter{err: err}
		}
		sb.WriteString(lit)
	}
	if len(vs) > 1 {
		sb.WriteString(")")
	}
	return Filter{sql: sb.String()}
}

// TableIn selects events whose ev_extra1 names one of tables, the way
// Skytools' table_filter does: each name is normalised as skytools.fq_name
// does it, so a bare name gets the "public" schema ("orders" matches
// ev_extra1 "public.orders", which trigger-based producers such as
// pgq.logutriga write) and a name with a dot is kept as written (no case
// folding, no quote handling: match what the producer wrote). The names are
// quoted literals, never SQL. An empty name is invalid; no names select
// nothing (Skytools' empty table_filter means no filter: use the zero
// Filter).
func TableIn(tables ...string) Filter {
	fq := make([]string, len(tables))
	for i, t := range tables {
		if t == "" {
			return Filter{err: fmt.Errorf("pgq: table filter: empty table name: %w", ErrInvalidArgument)}
		}
		fq[i] = fqName(t)
	}
	return In(FieldExtra1, fq...)
}

// fqName schema-qualifies a table name the way Skytools' fq_name does: a
// name without a dot gets "public."; any other name is returned unchanged.
func fqName(table string) string {
	if strings.Contains(table, ".") {
		return table
	}
	return "public." + table
}

// IsNull selects events whose field is NULL.
func IsNull(field Field) Filter {
	if !field.valid() {
		return Filter{err: fmt.Errorf("unknown field %q: %w", field, ErrInvalidArgument)}
	}
	return Filter{sql: string(field) + " is null"}
}

// HasPrefix selects events whose field starts with prefix.
func HasPrefix(field Field, prefix string) Filter {
	if !field.valid() {
		return Filter{err: fmt.Errorf("unknown field %q: %w", field, ErrInvalidArgument)}
	}
	// The escape character is '!', not a backslash: an ordinary '\'
	// literal is an unterminated string when standard_conforming_strings
	// is off, and no emitted literal should depend on that setting.
	lit, err := quoteLiteral(likeEscaper.Replace(prefix) + "%")
	if err != nil {
		return Filter{err: err}
	}
	return Filter{sql: string(field) + " like " + lit + " escape '!'"}
}

var likeEscaper = strings.NewReplacer(`!`, `!!`, `%`, `!%`, `_`, `!_`)

// And selects events matching every filter.
func And(fs ...Filter) Filter { return combine(" and ", fs) }

// Or selects events matching any filter.
func Or(fs ...Filter) Filter { return combine(" or ", fs) }

// Not selects events not matching f (NULL fields never match either way).
func Not(f Filter) Filter {
	if f.err != nil {
		return f
	}
	if f.sql == "" {
		return Filter{sql: "false"}
	}
	return Filter{sql: "not (" + f.sql + ")"}
}

func combine(op string, fs []Filter) Filter {
	var parts []string
	for _, f := range fs {
		if f.err != nil {
			return f
		}
		if f.sql == "" {
			if op == " or " {
				return Filter{} // or with "everything" is everything
			}
			continue
		}
		parts = append(parts, "("+f.sql+")")
	}
	return Filter{sql: strings.Join(parts, op)}
}

// quoteLiteral quotes s as an SQL string literal that means s whatever
// standard_conforming_strings is set to: a value with a backslash becomes
// an escape string (E'...', backslashes doubled), read the same way under
// either setting; any other value is a plain '...' literal, which holds no
// backslash. NUL bytes are refused with ErrInvalidArgument (PostgreSQL text
// cannot hold them).
func quoteLiteral(s string) (string, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return "", fmt.Errorf("pgq: value contains a NUL byte: %w", ErrInvalidArgument)
	}
	q := "'" + strings.ReplaceAll(s, "'", "''") + "'"
	if strings.Contains(s, `\`) {
		q = "E" + strings.ReplaceAll(q, `\`, `\\`)
	}
	return q, nil
}

// SQLFilter returns a filter from an SQL condition an operator wrote in a
// job's configuration (a Skytools-style consumer_filter such as
// "ev_type in ('I', 'U') and ev_extra1 like 'public.%'"): raw SQL, as
// trusted as the configuration file itself. It is not for input from
// users or events: build such filters from typed values (Eq, In, TableIn,
// HasPrefix), which quote every value.
//
// The condition is evaluated on the batch's event rows (ev_id, ev_time,
// ev_txid, ev_retry, ev_type, ev_data, ev_extra1 .. ev_extra4) and is
// wrapped in parentheses, so it composes with And, Or and Not. To keep it
// one expression of the batch query, and not a way to end that query or
// to read differently under another server setting, SQLFilter refuses,
// with ErrInvalidArgument (reported by Err and when the filter is used):
//   - an empty condition, or one holding a NUL byte;
//   - a semicolon, a "--" or "/*" comment, or a parameter such as $1
//     outside string literals and quoted identifiers;
//   - parentheses that do not balance, a ")" closing what the condition
//     did not open, and unterminated literals, identifiers or dollar quotes;
//   - a backslash in an ordinary '...' literal, whose meaning depends on
//     standard_conforming_strings (write an E'...' literal instead).
//
// These checks stop a condition from breaking out of its place in the
// query; they do not make arbitrary SQL safe (a condition may still call
// any function its role may call).
func SQLFilter(expr string) Filter {
	if err := checkSQLCondition(expr); err != nil {
		return Filter{err: fmt.Errorf("pgq: sql filter %q: %w: %w", expr, err, ErrInvalidArgument)}
	}
	return Filter{sql: "(" + strings.TrimSpace(expr) + ")"}
}

// checkSQLCondition scans an SQL condition the way PostgreSQL's lexer
// splits it into tokens, far enough to find string literals, quoted
// identifiers, dollar quotes, comments, parameters, semicolons and
// parentheses outside them.
func checkSQLCondition(s string) error {
	if strings.TrimSpace(s) == "" {
		return errors.New("empty condition")
	}
	if strings.IndexByte(s, 0) >= 0 {
		return errors.New("NUL byte")
	}
	depth := 0
	prevIdent := "" // the identifier just before the current position, if adjacent
	for i := 0; i < len(s); {
		c := s[i]
		ident := ""
		switch {
		case c == ';':
			return fmt.Errorf("semicolon at byte %d outside a literal: one condition, not statements", i)
		case c == '-' && strings.HasPrefix(s[i:], "--"), c == '/' && strings.HasPrefix(s[i:], "/*"):
			return fmt.Errorf("comment at byte %d: it could hide the rest of the query", i)
		case c == '(':
			depth++
			i++
		case c == ')':
			if depth == 0 {
				return fmt.Errorf("')' at byte %d closes a parenthesis the condition did not open", i)
			}
			depth--
			i++
		case c == '\'':
			escape := prevIdent == "e" || prevIdent == "E"
			end, err := scanQuoted(s, i, '\'', escape)
			if err != nil {
				return err
			}
			i = end
		case c == '"':
			end, err := scanQuoted(s, i, '"', false)
			if err != nil {
				return err
			}
			i = end
		case c == '$':
			j := i + 1 // a dollar quote's tag is an identifier without '$'
			for j < len(s) && s[j] != '$' && isIdentByte(s[j], j > i+1) {
				j++
			}
			switch {
			case j < len(s) && s[j] == '$':
				tag := s[i : j+1]
				k := strings.Index(s[j+1:], tag)
				if k < 0 {
					return fmt.Errorf("unterminated dollar quote %s at byte %d", tag, i)
				}
				i = j + 1 + k + len(tag)
			case i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9':
				return fmt.Errorf("parameter at byte %d: a filter cannot use the query's parameters", i)
			default:
				i++
			}
		case isIdentByte(c, false):
			j := i + 1
			for j < len(s) && isIdentByte(s[j], true) {
				j++
			}
			ident = s[i:j]
			i = j
		default:
			i++
		}
		prevIdent = ident
	}
	if depth != 0 {
		return fmt.Errorf("%d unclosed parenthesis", depth)
	}
	return nil
}

// isIdentByte reports whether c may be in an unquoted identifier (later
// bytes also allow digits and '$'); bytes of multi-byte UTF-8 characters
// count as letters, as PostgreSQL's lexer takes them.
func isIdentByte(c byte, later bool) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_', c >= 0x80:
		return true
	case later && (c >= '0' && c <= '9' || c == '$'):
		return true
	}
	return false
}

// scanQuoted returns the index after the literal or quoted identifier
// opened by s[start] (q), where a doubled q stands for itself. In an escape
// string (E'...') a backslash escapes the next byte; in an ordinary string
// literal a backslash is refused.
func scanQuoted(s string, start int, q byte, escape bool) (int, error) {
	for i := start + 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if q != '\'' {
				continue
			}
			if !escape {
				return 0, fmt.Errorf("backslash in the literal at byte %d reads differently with standard_conforming_strings off: write E'...'", start)
			}
			i++
		case q:
			if i+1 < len(s) && s[i+1] == q {
				i++
				continue
			}
			return i + 1, nil
		}
	}
	what := "string literal"
	if q == '"' {
		what = "quoted identifier"
	}
	return 0, fmt.Errorf("unterminated %s at byte %d", what, start)
}
