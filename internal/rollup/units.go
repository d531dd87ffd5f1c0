// Package rollup owns the exact day rollups: how a sample is split into
// per-day fixed-point contributions, and how those are kept in Redis (key
// layout, atomic apply with exactly-once coverage, the entity indexes that
// paging needs, and the applied-sequence watermark that heals lost writes).
//
// Everything numeric that users depend on is defined here, once.
package rollup

import (
	"fmt"
	"math"
	"time"

	"github.com/alauda/costmeter/internal/sample"
)

// Scale is the fixed-point resolution: a stored integer counts millionths of
// a unit-second (a core-second for CPU, a GiB-second for memory and
// storage). One sample's contribution is rounded once, on its own, so sums
// are exact integers independent of order and batching; the rounding error
// of one sample is at most 0.5/Scale unit-seconds (1.4e-10 unit-hours).
// A day of the largest accepted namespace (sample.MaxCores) is 8.6e16, so
// int64 day sums have room for ~100 such namespaces in one project-day.
const Scale = 1_000_000

// UnitSecondsPerHour converts unit-seconds to the API's unit-hours.
const UnitSecondsPerHour = 3600

// bytesPerGiB converts memory and storage bytes to GiB.
const bytesPerGiB = 1 << 30

// Item is a metered resource.
type Item int

// The metered items, in their stored order.
const (
	Cpu Item = iota
	Memory
	Storage
	numItems
)

// Method is how an item is measured.
type Method int

// The methods, in their stored order.
const (
	Usage Method = iota
	Request
	Effective
	ProjectQuota
	numMethods
)

// Fields is the number of integers kept per entity and day.
const Fields = int(numItems) * int(numMethods)

var (
	itemNames   = [...]string{"Cpu", "Memory", "Storage"}
	methodNames = [...]string{"Usage", "Request", "Effective", "ProjectQuota"}
)

func (i Item) String() string {
	if i < 0 || i >= numItems {
		return fmt.Sprintf("Item(%d)", int(i))
	}
	return itemNames[i]
}

func (m Method) String() string {
	if m < 0 || m >= numMethods {
		return fmt.Sprintf("Method(%d)", int(m))
	}
	return methodNames[m]
}

// Items lists every item in stored order.
func Items() []Item { return []Item{Cpu, Memory, Storage} }

// Methods lists every method in stored order.
func Methods() []Method { return []Method{Usage, Request, Effective, ProjectQuota} }

// ParseItem maps an API name (Cpu, Memory, Storage) to an Item.
func ParseItem(s string) (Item, bool) {
	for i, n := range itemNames {
		if n == s {
			return Item(i), true
		}
	}
	return 0, false
}

// ParseMethod maps an API name (Usage, Request, Effective, ProjectQuota).
func ParseMethod(s string) (Method, bool) {
	for i, n := range methodNames {
		if n == s {
			return Method(i), true
		}
	}
	return 0, false
}

// Field is the index of (item, method) in Values.
func Field(i Item, m Method) int { return int(i)*int(numMethods) + int(m) }

// Values are the fixed-point sums of one entity for one day, indexed by
// Field.
type Values [Fields]int64

// Add adds o to v.
func (v *Values) Add(o *Values) {
	for i := range v {
		v[i] += o[i]
	}
}

// addChecked adds o to v field by field and reports whether no sum
// overflowed int64 (where one did, v holds the wrapped sum).
func (v *Values) addChecked(o *Values) bool {
	ok := true
	for i, x := range o {
		n := v[i] + x
		if (x > 0 && n < v[i]) || (x < 0 && n > v[i]) {
			ok = false
		}
		v[i] = n
	}
	return ok
}

// Hours converts a fixed-point sum to unit-hours (core-hours, GiB-hours).
func Hours(fixed int64) float64 {
	// Split to keep full precision for sums above 2^53.
	const perHour = Scale * UnitSecondsPerHour
	whole := fixed / perHour
	rest := fixed % perHour
	return float64(whole) + float64(rest)/perHour
}

// Piece is the part of one sample that falls on one day of the billing time
// zone: [From, To) in seconds from that day's start, and its contributions.
type Piece struct {
	Day      Day
	From, To int32
	Values   Values
}

// Split cuts a valid sample at the day boundaries of loc and computes each
// day's fixed-point contributions: value × seconds-of-overlap × Scale, with
// memory and storage in GiB. A window of at most 24 h touches at most two
// days, or three around a 23-hour DST day.
func Split(s *sample.Sample, loc *time.Location) []Piece {
	out := make([]Piece, 0, 2)
	d := DayOf(s.Start, loc)
	for t := s.Start; t.Before(s.End); d++ {
		dayStart, next := d.Start(loc), (d + 1).Start(loc)
		end := s.End
		if next.Before(end) {
			end = next
		}
		secs := end.Sub(t).Seconds()
		p := Piece{Day: d, From: int32(t.Sub(dayStart) / time.Second), To: int32(end.Sub(dayStart) / time.Second)}
		contribute(&p.Values, Cpu, s.CPU, secs, 1)
		contribute(&p.Values, Memory, s.Memory, secs, bytesPerGiB)
		contribute(&p.Values, Storage, s.Storage, secs, bytesPerGiB)
		out = append(out, p)
		t = end
	}
	return out
}

func contribute(v *Values, item Item, r sample.Resources, secs, divisor float64) {
	f := secs * Scale / divisor
	v[Field(item, Usage)] = int64(math.Round(r.Usage * f))
	v[Field(item, Request)] = int64(math.Round(r.Request * f))
	v[Field(item, Effective)] = int64(math.Round(r.EffectiveValue() * f))
	v[Field(item, ProjectQuota)] = int64(math.Round(r.Quota * f))
}

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
