package pgq

import (
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
