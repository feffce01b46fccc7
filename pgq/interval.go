package pgq

import (
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// pgInterval scans a PostgreSQL interval (NULL reads as 0) into a Duration.
// Months count as 30 days, as PostgreSQL's extract(epoch) does.
type pgInterval struct{ d time.Duration }

func (p *pgInterval) ScanInterval(v pgtype.Interval) error {
	if !v.Valid {
		p.d = 0
		return nil
	}
	p.d = time.Duration(v.Microseconds)*time.Microsecond +
		time.Duration(v.Days)*24*time.Hour + time.Duration(v.Months)*30*24*time.Hour
	return nil
}
