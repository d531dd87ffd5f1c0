package rollup

import (
	"math"
	"time"

	"github.com/alauda/costmeter/internal/sample"
)

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
