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
// memory and storage in GiB. A capacity sample's pieces hold each item's
// capacity so, in the item's Effective field (the other fields 0): apply
// them as ScopeCapacity contributions of the cluster. A window of at most 24 h touches at most two
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
		if c := s.Capacity; c != nil {
			p.Values[Field(Cpu, Effective)] = fixed(c.CPU, secs, 1)
			p.Values[Field(Memory, Effective)] = fixed(c.Memory, secs, bytesPerGiB)
			p.Values[Field(Storage, Effective)] = fixed(c.Storage, secs, bytesPerGiB)
		} else {
			contribute(&p.Values, Cpu, s.CPU, secs, 1)
			contribute(&p.Values, Memory, s.Memory, secs, bytesPerGiB)
			contribute(&p.Values, Storage, s.Storage, secs, bytesPerGiB)
		}
		out = append(out, p)
		t = end
	}
	return out
}

// fixed is x × secs × Scale / divisor, rounded, as contribute computes it.
func fixed(x, secs, divisor float64) int64 { return int64(math.Round(x * (secs * Scale / divisor))) }

func contribute(v *Values, item Item, r sample.Resources, secs, divisor float64) {
	f := secs * Scale / divisor
	v[Field(item, Usage)] = int64(math.Round(r.Usage * f))
	v[Field(item, Request)] = int64(math.Round(r.Request * f))
	v[Field(item, Effective)] = int64(math.Round(r.EffectiveValue() * f))
	v[Field(item, ProjectQuota)] = int64(math.Round(r.Quota * f))
}
