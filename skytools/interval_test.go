package skytools_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/pgq-go/pgq/internal/pgtest"
	"github.com/pgq-go/pgq/skytools"
	"github.com/stretchr/testify/require"
)

const day = 24 * time.Hour

// intervalAccepted are intervals the reader takes, with what PostgreSQL
// makes of them (months as 30 days, as interval comparison counts them).
var intervalAccepted = map[string]time.Duration{
	"10 min":                10 * time.Minute,
	"1.5":                   1500 * time.Millisecond,
	"30":                    30 * time.Second,
	".5":                    500 * time.Millisecond,
	"5.":                    5 * time.Second,
	"-5":                    -5 * time.Second,
	"2 hours":               2 * time.Hour,
	"1 day":                 day,
	"00:05:00":              5 * time.Minute,
	"00:05":                 5 * time.Minute,
	"05:00":                 5 * time.Hour,
	"1:2:3.5":               time.Hour + 2*time.Minute + 3500*time.Millisecond,
	"100:00:00":             100 * time.Hour,
	"0:0:59.9999999":        time.Minute,
	"-00:05":                -5 * time.Minute,
	"+1:02:03":              time.Hour + 2*time.Minute + 3*time.Second,
	"1 02:00:00":            day + 2*time.Hour,
	"1 02:00":               day + 2*time.Hour,
	"1 day 02:00:00":        day + 2*time.Hour,
	"02:00:00 1 day":        day + 2*time.Hour,
	"1 mon 00:01":           30*day + time.Minute,
	"1h30m":                 90 * time.Minute,
	"1h 30m":                90 * time.Minute,
	"1.5h":                  90 * time.Minute,
	"1 hour 30 minutes":     90 * time.Minute,
	"90s":                   90 * time.Second,
	"90sec":                 90 * time.Second,
	"10 MIN":                10 * time.Minute,
	"10 Minutes":            10 * time.Minute,
	"10\tmin":               10 * time.Minute,
	"10\nmin":               10 * time.Minute,
	"  10 mins  ":           10 * time.Minute,
	"1 min 30 s":            90 * time.Second,
	"1 h 1 m 1 s 1 ms 1 us": time.Hour + time.Minute + time.Second + time.Millisecond + time.Microsecond,
	"10 microseconds":       10 * time.Microsecond,
	"10 milliseconds":       10 * time.Millisecond,
	"1.5 ms":                1500 * time.Microsecond,
	"3 usecs":               3 * time.Microsecond,
	"2 msecs":               2 * time.Millisecond,
	"1 hr":                  time.Hour,
	"2 hrs":                 2 * time.Hour,
	"1 d":                   day,
	"1 w":                   7 * day,
	"1 week 1 day":          8 * day,
	"1.5 week":              10*day + 12*time.Hour,
	"1.5 days":              36 * time.Hour,
	"1 mon":                 30 * day,
	"2 months":              60 * day,
	"1.33 mon":              39*day + 21*time.Hour + 36*time.Minute,
	"1 year":                360 * day,
	"3 yrs":                 3 * 360 * day,
	"1 y 1 mon 1 w 1 d":     (360 + 30 + 7 + 1) * day,
	"-5 min":                -5 * time.Minute,
	"+5 min":                5 * time.Minute,
	"@ 1 minute":            time.Minute,
	"@1 min":                time.Minute,
	"@ 1 minute ago":        -time.Minute,
	"5 min ago":             -5 * time.Minute,
	"1 min 1 sec ago":       -61 * time.Second,
	"0.0000001":             0,
	"0":                     0,
	"PT10M":                 10 * time.Minute,
	"P1D":                   day,
	"P1DT2H":                day + 2*time.Hour,
	"P1Y2M":                 (360 + 60) * day,
	"P1W":                   7 * day,
	"P1.5D":                 36 * time.Hour,
	"PT1.5S":                1500 * time.Millisecond,
	"PT1.5M":                90 * time.Second,
	"PT-1H":                 -time.Hour,
	"P1Y2M3W4DT5H6M7.5S":    (360+60+21+4)*day + 5*time.Hour + 6*time.Minute + 7500*time.Millisecond,
	"290 years":             290 * 360 * day,
}

// intervalRefused are shapes the reader refuses: PostgreSQL refuses them
// too, or reads them in a way an operator would not guess.
var intervalRefused = []string{
	"", " ", "abc", "min",
	"1 2", "2 1 day", "1 day 1 day", "1 hour 1 hours", "1 sec 1 secs",
	"1h30", "1 day 2", "1 minute 30", "30 1 minute", "1 minutes second",
	"1 hour 02:00:00", "02:00:00 1 hour", "1 min 02:00", "1 s 02:00", "1 day 2 02:00:00", "1 day 1 02:00",
	"1.5:00:00", "1:00.5", "1:60:00", "1:00:60", "1:2:3:4", "1:-2:3", "1.5 02:00:00", "-1 02:00:00",
	"1 hour -5 min", "1 day -02:00:00", "-1 day 2 hours",
	"1.01 year", "1.5 year", "P1.5Y",
	"1 decade", "1 century", "1 millennium", "1 mil", "1 quarter", "1 fortnight",
	"10 millisecondsx", "10 secondsxyzw",
	"1e3", "1e3 s", "0x10 s", "1,5", "1_000", "infinity", "-infinity", "nan",
	"1.5.5 s", "1..5 s", ". s", ".", "- 5", "5 -", "+", "--5 min",
	"5 min ago ago", "ago", "ago 5 min", "1 @", "@", "@ @ 1 min",
	"10 min'", "10 min; drop table x", "10 min -- x",
	"p1d", "pt10m", "PT10m", "P", "PT", "P1DT", "P1H", "PT1D", "P 1D", "-P1D", "T10M",
	"P0000-00-01T00:00:00", "1-2", "P1D1Y", "PT1M1H", "P1D1D",
	"1 day ago 2 hours",
	"300 years", "100000000 years",
	"10 мин", "１０ min",
}

func TestIntervalForms(t *testing.T) {
	t.Parallel()
	for in, want := range intervalAccepted {
		got, err := skytools.ParseIntervalForTest(in)
		require.NoError(t, err, "%q", in)
		require.Equal(t, want, got, "%q", in)
	}
	for _, in := range intervalRefused {
		_, err := skytools.ParseIntervalForTest(in)
		require.ErrorIs(t, err, skytools.ErrBadValue, "%q", in)
		require.Contains(t, err.Error(), "10 min", "%q: the error shows the forms read", in)
	}
}

// TestIntervalMatchesPostgres reads every accepted and refused form with
// PostgreSQL's interval input too: whatever this package accepts,
// PostgreSQL accepts with the same value (months as 30 days), and what
// PostgreSQL refuses this package refuses.
func TestIntervalMatchesPostgres(t *testing.T) {
	t.Parallel()
	c, err := pgtest.Start()
	require.NoError(t, err, "start PostgreSQL (run scripts/ensure-deps, or set %s)", pgtest.EnvDSN)
	t.Cleanup(c.Close)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })

	var corpus []string
	for in := range intervalAccepted {
		corpus = append(corpus, in)
	}
	corpus = append(corpus, intervalRefused...)
	accepted := 0
	for _, in := range corpus {
		var iv pgtype.Interval
		pgErr := conn.QueryRow(ctx, "select $1::text::interval", in).Scan(&iv)
		got, err := skytools.ParseIntervalForTest(in)
		if err != nil {
			continue // refusing more than PostgreSQL is allowed
		}
		accepted++
		require.NoError(t, pgErr, "%q: accepted here, refused by PostgreSQL", in)
		pg := time.Duration(iv.Microseconds)*time.Microsecond + time.Duration(iv.Days)*day + time.Duration(iv.Months)*30*day
		require.Equal(t, pg, got, "%q: PostgreSQL reads %d months %d days %d us", in, iv.Months, iv.Days, iv.Microseconds)
	}
	require.Equal(t, len(intervalAccepted), accepted, "every accepted form was compared")
}
