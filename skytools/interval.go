package skytools

import (
	"fmt"
	"math"
	"math/big"
	"strings"
	"time"
)

// Skytools hands pgq_keep_lag and pgq_batch_collect_interval to
// pgq.next_batch_custom as text, and PostgreSQL's interval input reads
// them. That input takes many shapes ("1h30" is 1 hour 30 seconds, "2 1
// day" is an error, "1.5:00:00" is 36 hours); parseInterval reads the
// unambiguous subset operators write and refuses the rest, so a value it
// accepts always means what PostgreSQL makes of it (TestIntervalMatches-
// Postgres checks this against a server).

// intervalUnits maps PostgreSQL's unit words (lowercase) to a unit.
var intervalUnits = map[string]intervalUnit{}

type intervalUnit struct {
	name string
	us   int64 // microseconds, months as 30 days as PostgreSQL compares them
	time bool  // an hours-or-smaller unit, which a hh:mm:ss field also sets
}

func init() {
	const day = 86400 * 1000000
	for _, u := range []struct {
		words []string
		unit  intervalUnit
	}{
		{[]string{"us", "usec", "usecs", "useconds", "microsecond", "microseconds"}, intervalUnit{"microsecond", 1, true}},
		{[]string{"ms", "msec", "msecs", "mseconds", "millisecond", "milliseconds"}, intervalUnit{"millisecond", 1000, true}},
		{[]string{"s", "sec", "secs", "second", "seconds"}, intervalUnit{"second", 1000000, true}},
		{[]string{"m", "min", "mins", "minute", "minutes"}, intervalUnit{"minute", 60 * 1000000, true}},
		{[]string{"h", "hr", "hrs", "hour", "hours"}, intervalUnit{"hour", 3600 * 1000000, true}},
		{[]string{"d", "day", "days"}, intervalUnit{"day", day, false}},
		{[]string{"w", "week", "weeks"}, intervalUnit{"week", 7 * day, false}},
		{[]string{"mon", "mons", "month", "months"}, intervalUnit{"month", 30 * day, false}},
		{[]string{"y", "yr", "yrs", "year", "years"}, intervalUnit{"year", 360 * day, false}},
	} {
		for _, w := range u.words {
			intervalUnits[w] = u.unit
		}
	}
}

// intervalHelp ends every refusal: the shapes that are read.
const intervalHelp = "write a PostgreSQL interval such as 10 min, 1.5 (seconds), 2 hours 30 minutes, 1 day, 00:05:00, 1 02:00:00 or PT5M"

func badInterval(format string, args ...any) error {
	return errf(ErrBadValue, "%s; %s", fmt.Sprintf(format, args...), intervalHelp)
}

// parseInterval reads a PostgreSQL interval written as
//   - a number of seconds: 1.5, 30, .5;
//   - number-unit pairs, each unit once, separated by blanks or not:
//     10 min, 1h30m, 2 hours 30 minutes, 1 week 2 days (units: us, ms, s,
//     m/min, h/hr, d/day, w/week, mon/month, y/yr/year, their plurals and
//     PostgreSQL's other spellings, any case);
//   - [[days] ]hh:mm[:ss[.ffffff]], alone or after day, week, month or
//     year pairs: 00:05:00, 1 02:00:00, 1 day 02:00;
//   - any of these with a leading "@" or a trailing "ago" (negative);
//   - ISO 8601 with designators: P1Y2M3W4DT5H6M7.5S, PT10M.
//
// A fraction is allowed except on years, on hours or minutes of a time
// field and on a day number (PostgreSQL rounds or reinterprets those), and
// a minus sign only on a lone field (with several, its reach depends on
// the server's IntervalStyle). Months are 30 days and years 12 months, as
// PostgreSQL compares intervals.
func parseInterval(v string) (time.Duration, error) {
	s := strings.Trim(v, " \t\n\r\f\v")
	if s == "" {
		return 0, badInterval("empty")
	}
	var total *big.Rat
	var err error
	if s[0] == 'P' {
		total, err = parseISOInterval(s)
	} else {
		total, err = parsePostgresInterval(s)
	}
	if err != nil {
		return 0, err
	}
	us := roundHalfEven(total)
	if us.CmpAbs(big.NewInt(math.MaxInt64/1000)) > 0 {
		return 0, badInterval("out of range (about ±292 years)")
	}
	return time.Duration(us.Int64()) * time.Microsecond, nil
}

// roundHalfEven rounds r to an integer, ties to even, as PostgreSQL's
// rint() rounds to microseconds.
func roundHalfEven(r *big.Rat) *big.Int {
	num, den := r.Num(), r.Denom()
	q, m := new(big.Int).QuoRem(num, den, new(big.Int))
	twice := new(big.Int).Mul(new(big.Int).Abs(m), big.NewInt(2))
	c := twice.Cmp(den)
	if c > 0 || c == 0 && q.Bit(0) == 1 {
		if num.Sign() < 0 {
			q.Sub(q, big.NewInt(1))
		} else {
			q.Add(q, big.NewInt(1))
		}
	}
	return q
}

type intervalToken struct {
	kind byte // 'n' number, 't' hh:mm:ss, 'w' word, '@'
	text string
}

func tokenizeInterval(s string) ([]intervalToken, error) {
	var toks []intervalToken
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
		case c == '@':
			toks = append(toks, intervalToken{'@', "@"})
			i++
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
			j := i
			for j < len(s) && (s[j] >= 'a' && s[j] <= 'z' || s[j] >= 'A' && s[j] <= 'Z') {
				j++
			}
			toks = append(toks, intervalToken{'w', strings.ToLower(s[i:j])})
			i = j
		case isDigit(c) || c == '.' || c == '+' || c == '-':
			j := i
			if c == '+' || c == '-' {
				j++
				if j == len(s) || !isDigit(s[j]) && s[j] != '.' {
					return nil, badInterval("sign %q not followed by a number", string(c))
				}
			}
			kind := byte('n')
			for j < len(s) && (isDigit(s[j]) || s[j] == '.' || s[j] == ':') {
				if s[j] == ':' {
					kind = 't'
				}
				j++
			}
			toks = append(toks, intervalToken{kind, s[i:j]})
			i = j
		default:
			return nil, badInterval("unexpected %q", clip(s[i:]))
		}
	}
	return toks, nil
}

// parseNumber parses [+-]digits[.digits], [+-].digits or [+-]digits.
// exactly.
func parseNumber(s string) (*big.Rat, bool) {
	body := strings.TrimLeft(s, "+-")
	if len(s)-len(body) > 1 {
		return nil, false
	}
	ip, fp, _ := strings.Cut(body, ".")
	if ip == "" && fp == "" || strings.ContainsAny(fp, ".") || !allDigits(ip) || !allDigits(fp) {
		return nil, false
	}
	r, ok := new(big.Rat).SetString(strings.TrimPrefix(s, "+"))
	return r, ok
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

// parseTimeField parses [+-]h:mm[:ss[.f]] into microseconds.
func parseTimeField(s string) (*big.Rat, error) {
	neg := strings.HasPrefix(s, "-")
	parts := strings.Split(strings.TrimLeft(s, "+-"), ":")
	if len(parts) > 3 || len(s)-len(strings.TrimLeft(s, "+-")) > 1 {
		return nil, badInterval("time field %q is not hh:mm or hh:mm:ss", s)
	}
	for i, p := range parts {
		if p == "" || !allDigits(p) && !(i == 2 && strings.Count(p, ".") == 1 && p[0] != '.') {
			return nil, badInterval("time field %q is not hh:mm or hh:mm:ss[.ffffff]", s)
		}
	}
	h, _ := new(big.Rat).SetString(parts[0])
	m, _ := new(big.Rat).SetString(parts[1])
	if m.Cmp(big.NewRat(60, 1)) >= 0 {
		return nil, badInterval("time field %q: minutes beyond 59", s)
	}
	total := new(big.Rat).Mul(h, big.NewRat(3600e6, 1))
	total.Add(total, new(big.Rat).Mul(m, big.NewRat(60e6, 1)))
	if len(parts) == 3 {
		sec, ok := new(big.Rat).SetString(parts[2])
		if !ok || sec.Cmp(big.NewRat(60, 1)) >= 0 {
			return nil, badInterval("time field %q: seconds beyond 59", s)
		}
		total.Add(total, new(big.Rat).Mul(sec, big.NewRat(1e6, 1)))
	}
	if neg {
		total.Neg(total)
	}
	return total, nil
}

func parsePostgresInterval(s string) (*big.Rat, error) {
	toks, err := tokenizeInterval(s)
	if err != nil {
		return nil, err
	}
	if len(toks) > 0 && toks[0].kind == '@' {
		toks = toks[1:]
	}
	ago := false
	if n := len(toks); n > 0 && toks[n-1].kind == 'w' && toks[n-1].text == "ago" {
		ago = true
		toks = toks[:n-1]
	}
	if len(toks) == 0 {
		return nil, badInterval("no value")
	}
	total := new(big.Rat)
	seen := map[string]bool{}
	fields, negative := 0, false
	hasTime, hasTimeUnit, bareDay := false, false, false
	add := func(r *big.Rat) {
		total.Add(total, r)
		fields++
		if r.Sign() < 0 {
			negative = true
		}
	}
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		switch t.kind {
		case 'n':
			r, ok := parseNumber(t.text)
			if !ok {
				return nil, badInterval("%q is not a number", t.text)
			}
			if strings.HasPrefix(t.text, "-") && r.Sign() == 0 {
				negative = true
			}
			switch {
			case len(toks) == 1:
				add(r.Mul(r, big.NewRat(1e6, 1))) // a lone number is seconds
			case i+1 < len(toks) && toks[i+1].kind == 'w':
				u, ok := intervalUnits[toks[i+1].text]
				if !ok {
					return nil, badInterval("unknown unit %q", toks[i+1].text)
				}
				if seen[u.name] {
					return nil, badInterval("%s given twice", u.name)
				}
				if u.name == "year" && !r.IsInt() {
					return nil, badInterval("fractional years (PostgreSQL rounds them to months): write months")
				}
				seen[u.name] = true
				hasTimeUnit = hasTimeUnit || u.time
				add(r.Mul(r, big.NewRat(u.us, 1)))
				i++
			case i+1 < len(toks) && toks[i+1].kind == 't':
				if !allDigits(t.text) {
					return nil, badInterval("the day count before a time field must be a whole number without sign, not %q", t.text)
				}
				bareDay = true
				add(r.Mul(r, big.NewRat(86400e6, 1)))
			default:
				return nil, badInterval("number %q without a unit", t.text)
			}
		case 't':
			if hasTime {
				return nil, badInterval("two time fields")
			}
			r, err := parseTimeField(t.text)
			if err != nil {
				return nil, err
			}
			if strings.HasPrefix(t.text, "-") {
				negative = true
			}
			hasTime = true
			add(r)
		case 'w':
			if t.text == "ago" {
				return nil, badInterval(`"ago" only at the end`)
			}
			return nil, badInterval("%q without a number before it", t.text)
		case '@':
			return nil, badInterval(`"@" only at the start`)
		}
	}
	if hasTime && hasTimeUnit {
		return nil, badInterval("a time field together with hours, minutes or seconds")
	}
	if bareDay && (seen["day"] || seen["week"]) {
		return nil, badInterval("a day count before the time field together with days or weeks")
	}
	if negative && fields > 1 {
		return nil, badInterval("a negative part among several (its reach depends on the server's IntervalStyle): write one field, or end with ago")
	}
	if ago {
		total.Neg(total)
	}
	return total, nil
}

// parseISOInterval reads ISO 8601 "format with designators":
// P[nY][nM][nW][nD][T[nH][nM][nS]], each field at most once and in order.
func parseISOInterval(s string) (*big.Rat, error) {
	date, tm, hasT := strings.Cut(s[1:], "T")
	if date == "" && tm == "" || hasT && tm == "" {
		return nil, badInterval("ISO 8601 interval %q has no fields", s)
	}
	const day = 86400e6
	total := new(big.Rat)
	fields, negative := 0, false
	read := func(part, designators string, units []int64) error {
		next := 0
		for part != "" {
			j := 0
			for j < len(part) && (isDigit(part[j]) || part[j] == '.' || part[j] == '+' || part[j] == '-') {
				j++
			}
			if j == len(part) {
				return badInterval("ISO 8601 field %q has no designator", part)
			}
			k := strings.IndexByte(designators[next:], part[j])
			if k < 0 {
				return badInterval("ISO 8601 designator %q out of order, repeated or unknown", string(part[j]))
			}
			k += next
			r, ok := parseNumber(part[:j])
			if !ok {
				return badInterval("ISO 8601 field %q is not a number", part[:j+1])
			}
			if designators == "YMWD" && k == 0 && !r.IsInt() {
				return badInterval("fractional years (PostgreSQL rounds them to months): write months")
			}
			if strings.HasPrefix(part, "-") {
				negative = true
			}
			total.Add(total, r.Mul(r, big.NewRat(units[k], 1)))
			fields++
			next = k + 1
			part = part[j+1:]
		}
		return nil
	}
	if err := read(date, "YMWD", []int64{360 * day, 30 * day, 7 * day, day}); err != nil {
		return nil, err
	}
	if err := read(tm, "HMS", []int64{3600e6, 60e6, 1e6}); err != nil {
		return nil, err
	}
	if negative && fields > 1 {
		return nil, badInterval("a negative part among several: write one field")
	}
	return total, nil
}
