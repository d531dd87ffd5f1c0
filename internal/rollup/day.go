package rollup

import (
	"fmt"
	"time"
)

// Day is a calendar day of the billing time zone, counted from 1970-01-01.
// It is a date, not an instant: its start depends on the zone.
type Day int32

// DayOf returns the calendar day of t in loc.
func DayOf(t time.Time, loc *time.Location) Day {
	y, m, d := t.In(loc).Date()
	return DayFromDate(y, m, d)
}

// DayFromDate returns the Day of a calendar date.
func DayFromDate(y int, m time.Month, d int) Day {
	return Day(time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Unix() / 86400)
}

// Date returns the calendar date of d.
func (d Day) Date() (int, time.Month, int) {
	return time.Unix(int64(d)*86400, 0).UTC().Date()
}

// Start returns the instant d begins in loc (its first existing second when
// a DST change skips midnight).
func (d Day) Start(loc *time.Location) time.Time {
	y, m, dd := d.Date()
	t := time.Date(y, m, dd, 0, 0, 0, 0, loc)
	if ty, tm, td := t.Date(); ty != y || tm != m || td != dd {
		// Midnight does not exist here (America/Santiago, America/Havana:
		// the clock jumps from 23:59:59 to 01:00), and time.Date gave the
		// hour before the jump, still on the previous date. The day begins
		// where that zone period ends.
		_, end := t.ZoneBounds()
		return end
	}
	return t
}

// String formats d as YYYYMMDD, the API's format.
func (d Day) String() string {
	y, m, dd := d.Date()
	return fmt.Sprintf("%04d%02d%02d", y, int(m), dd)
}

// Month returns the tag of d's month, YYYYMM: the Redis Cluster hash tag
// of every key that holds d's data.
func (d Day) Month() string {
	y, m, _ := d.Date()
	return fmt.Sprintf("%04d%02d", y, int(m))
}

// DayOfMonth returns 1..31.
func (d Day) DayOfMonth() int {
	_, _, dd := d.Date()
	return dd
}

// Weekday returns the day of the week.
func (d Day) Weekday() time.Weekday { return time.Weekday((int64(d) + 4) % 7) } // 1970-01-01 was a Thursday.

// DaysMask is the presence mask (bit DD-1) of the days first..last, which
// must lie in one month.
func DaysMask(first, last Day) uint32 {
	var m uint32
	for d := first; d <= last; d++ {
		m |= 1 << uint(d.DayOfMonth()-1)
	}
	return m
}

// MonthFirst and MonthLast return the first and last day of d's month.
func MonthFirst(d Day) Day {
	y, m, _ := d.Date()
	return DayFromDate(y, m, 1)
}

// MonthLast returns the last day of d's month.
func MonthLast(d Day) Day {
	y, m, _ := d.Date()
	return DayFromDate(y, m+1, 1) - 1
}
