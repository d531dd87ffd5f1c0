package notifier

import (
	"fmt"
	"time"

	"github.com/alauda/costmeter/internal/rollup"
)

// periodRange is the days of one period, both inclusive.
type periodRange struct{ first, last rollup.Day }

// periodOf returns the period of kind p holding day d: the day itself, its
// ISO week (Monday to Sunday) or its calendar month.
func periodOf(p Period, d rollup.Day) periodRange {
	switch p {
	case PeriodWeek:
		back := (int(d.Weekday()) + 6) % 7 // days since Monday
		first := d - rollup.Day(back)
		return periodRange{first, first + 6}
	case PeriodMonth:
		return periodRange{rollup.MonthFirst(d), rollup.MonthLast(d)}
	default:
		return periodRange{d, d}
	}
}

// parseDay reads an event's YYYYMMDD day.
func parseDay(s string) (rollup.Day, error) {
	t, err := time.Parse("20060102", s)
	if err != nil || len(s) != 8 {
		return 0, fmt.Errorf("day %q is not YYYYMMDD", s)
	}
	return rollup.DayFromDate(t.Date()), nil
}

// endOf is the instant after the period's last day (as a UTC date: it
// only decides expiries, which a day either way does not matter to).
func (p periodRange) end() time.Time {
	y, m, d := p.last.Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC)
}
