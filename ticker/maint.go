package ticker

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/pgq"
)

// maxMaintRepeat bounds how many times one maintenance function is called
// in a row while it keeps asking to be called again (returns non-zero).
const maxMaintRepeat = 1000

// plainName is what pgq.maint_operations() may name: a function or table,
// optionally schema-qualified, as an unquoted SQL identifier.
var plainName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$`)

// quoteName turns a name from pgq.maint_operations() into a quoted,
// possibly schema-qualified identifier. The name comes from the server but
// is still never spliced raw: it must look like an unquoted identifier, and
// is folded to lower case as PostgreSQL (and pgqd) would read it unquoted.
func quoteName(name string) (string, error) {
	if !plainName.MatchString(name) {
		return "", fmt.Errorf("ticker: refusing maintenance name %q: not a plain [schema.]identifier", name)
	}
	return pgx.Identifier(strings.Split(strings.ToLower(name), ".")).Sanitize(), nil
}

func opString(op pgq.MaintOp) string {
	if op.Arg == nil {
		return op.Func + "()"
	}
	return op.Func + "(" + *op.Arg + ")"
}

// maintStatement returns the SQL for one maintenance operation: "vacuum
// <table>" (a statement, run outside any transaction block), or a function
// call with its argument bound as a parameter.
func maintStatement(op pgq.MaintOp) (sql string, args []any, err error) {
	if op.Func == "vacuum" {
		if op.Arg == nil {
			return "", nil, fmt.Errorf("ticker: vacuum without a table")
		}
		tbl, err := quoteName(*op.Arg)
		if err != nil {
			return "", nil, err
		}
		return "vacuum " + tbl, nil, nil
	}
	fn, err := quoteName(op.Func)
	if err != nil {
		return "", nil, err
	}
	if op.Arg == nil {
		return "select " + fn + "()", nil, nil
	}
	return "select " + fn + "($1::text)", []any{*op.Arg}, nil
}

// runMaintOp runs one operation, each call as its own autocommit
// statement (so its own transaction: rotation step2 never shares one with
// step1), repeating a function while it returns non-zero or true. between
// runs between repeated calls (the worker ticks there when due). It returns
// the number of calls made.
func runMaintOp(ctx context.Context, conn *pgx.Conn, op pgq.MaintOp, between func() error) (int, error) {
	sql, args, err := maintStatement(op)
	if err != nil {
		return 0, err
	}
	if op.Func == "vacuum" {
		// Without arguments pgx uses the simple protocol: one statement,
		// no implicit transaction block, as VACUUM requires.
		if _, err := conn.Exec(ctx, sql); err != nil {
			return 1, err
		}
		return 1, nil
	}
	for calls := 1; ; calls++ {
		var res any
		if err := conn.QueryRow(ctx, sql, args...).Scan(&res); err != nil {
			return calls, err
		}
		if !again(res) || calls >= maxMaintRepeat {
			return calls, nil
		}
		if between != nil {
			if err := between(); err != nil {
				return calls, err
			}
		}
	}
}

// again reports whether a maintenance function asked to be called again.
func again(v any) bool {
	switch x := v.(type) {
	case int16:
		return x != 0
	case int32:
		return x != 0
	case int64:
		return x != 0
	case bool:
		return x
	}
	return false
}
