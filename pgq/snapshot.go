package pgq

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Snapshot is a transaction snapshot as PostgreSQL prints a txid_snapshot
// ("xmin:xmax:xip,..."): every transaction below Xmin had ended, none from
// Xmax on had started, and those in Xip were in progress. PgQ stores one
// per tick; a batch holds the events of the transactions its end tick's
// snapshot sees and its start tick's did not.
type Snapshot struct {
	Xmin, Xmax int64
	Xip        []int64 // ascending
}

// Visible reports whether the snapshot sees txid as ended (committed or
// aborted): below Xmax and not in progress. The zero Snapshot sees none.
func (s Snapshot) Visible(txid int64) bool {
	if txid < s.Xmin {
		return true
	}
	if txid >= s.Xmax {
		return false
	}
	_, found := slices.BinarySearch(s.Xip, txid)
	return !found
}

// String formats the snapshot as PostgreSQL does.
func (s Snapshot) String() string {
	var b strings.Builder
	b.WriteString(strconv.FormatInt(s.Xmin, 10))
	b.WriteByte(':')
	b.WriteString(strconv.FormatInt(s.Xmax, 10))
	b.WriteByte(':')
	for i, x := range s.Xip {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(x, 10))
	}
	return b.String()
}

// ParseSnapshot parses a txid_snapshot's (or pg_snapshot's) text form.
func ParseSnapshot(text string) (Snapshot, error) {
	bad := func(why string) (Snapshot, error) {
		return Snapshot{}, fmt.Errorf("pgq: snapshot %q: %s: %w", text, why, ErrInvalidArgument)
	}
	minS, rest, ok1 := strings.Cut(text, ":")
	maxS, xipS, ok2 := strings.Cut(rest, ":")
	if !ok1 || !ok2 {
		return bad("want xmin:xmax:xip")
	}
	var s Snapshot
	var err error
	if s.Xmin, err = strconv.ParseInt(minS, 10, 64); err != nil || s.Xmin <= 0 {
		return bad("bad xmin")
	}
	if s.Xmax, err = strconv.ParseInt(maxS, 10, 64); err != nil || s.Xmax < s.Xmin {
		return bad("bad xmax")
	}
	if xipS == "" {
		return s, nil
	}
	s.Xip = make([]int64, 0, strings.Count(xipS, ",")+1)
	for f := range strings.SplitSeq(xipS, ",") {
		x, err := strconv.ParseInt(f, 10, 64)
		if err != nil || x < s.Xmin || x >= s.Xmax {
			return bad("bad in-progress txid " + strconv.Quote(f))
		}
		if n := len(s.Xip); n > 0 && x <= s.Xip[n-1] {
			return bad("in-progress txids not ascending")
		}
		s.Xip = append(s.Xip, x)
	}
	return s, nil
}
