package rollup

import (
	"context"
	mathbits "math/bits"
)

// fillValues reads the rollups of rows and sets their Total and Days:
// one MGET per shard, a sum's parts added up. When presence is known
// (month -> mask of an entity), days without a sample are not asked for.
//
// With totals, a sum (project, cluster, project-cluster) is read by
// month where that is cheaper (Days stays nil): a whole month from its
// month parts; a month cut by the bucket but covering more than half of
// it (this month up to today) from its month parts minus the days
// outside the bucket that the parts' own day masks, written in the same
// commit as their values, say moved them (usually none: the days after
// today). A row whose month part saturated, or whose total would
// overflow int64, is read again day by day. With Days, Total wraps past
// int64: a caller that must be exact there sums Days itself (the API
// does).
//
// The steps: plan the reads, read them, add them into the rows, take off
// the days outside clipped month parts, and read again day by day the
// rows that a month part could not give exactly.
func (r *Reader) fillValues(ctx context.Context, sc Scope, rows []Row, presence func(Entity) map[string]uint32, totals bool) error {
	byMonth := totals && sc.isSum()
	reads := planFill(sc, rows, presence, byMonth)
	if err := r.readValues(ctx, valueReadsOf(reads, func(f *fillRead) *valueRead { return &f.valueRead })); err != nil {
		return err
	}
	again, outside := addReads(sc, rows, reads, byMonth)
	if err := r.takeOutside(ctx, rows, outside, again); err != nil {
		return err
	}
	return r.refill(ctx, sc, rows, again, presence)
}

// fillRead is one read of fillValues: the day rollup of a row's day (day
// is its index in the row's bucket), or a month part of a row's sum (day
// -1, p the part's days in the bucket).
type fillRead struct {
	row, day int
	p        part
	valueRead
}

// outsideDay is a day outside a clipped month part that moved the part:
// read, to be taken off the row's total.
type outsideDay struct {
	row int
	valueRead
}

// planFill lists the reads that fill rows, and clears the rows.
func planFill(sc Scope, rows []Row, presence func(Entity) map[string]uint32, byMonth bool) []fillRead {
	var reads []fillRead
	bits := map[Day]uint32{}
	for i := range rows {
		row := &rows[i]
		row.Total, row.Days = Values{}, nil
		n := int(row.Bucket.Last-row.Bucket.First) + 1
		member := row.Entity.Member(sc)
		if byMonth {
			for _, p := range partsOf(row.Bucket) {
				if inMonth := int(MonthLast(p.first)-MonthFirst(p.first)) + 1; 2*(int(p.last-p.first)+1) > inMonth {
					reads = append(reads, fillRead{row: i, day: -1, p: p, valueRead: valueRead{want: valueWant{month: p.month, scope: sc, member: member}}})
					continue
				}
				for d := p.first; d <= p.last; d++ {
					reads = append(reads, fillRead{row: i, day: int(d - row.Bucket.First), valueRead: valueRead{want: valueWant{day: d, scope: sc, member: member}}})
				}
			}
			continue
		}
		row.Days = make([]Values, n)
		var pm map[string]uint32
		if presence != nil {
			pm = presence(row.Entity)
		}
		for j := 0; j < n; j++ {
			d := row.Bucket.First + Day(j)
			if pm != nil {
				b, ok := bits[d]
				if !ok {
					b = 1 << uint(d.DayOfMonth()-1)
					bits[d] = b
				}
				if pm[d.Month()]&b == 0 {
					continue
				}
			}
			reads = append(reads, fillRead{row: i, day: j, valueRead: valueRead{want: valueWant{day: d, scope: sc, member: member}}})
		}
	}
	return reads
}

// addReads adds the reads into their rows. It returns the rows to read
// again day by day (a month part inexact, or a total past int64) and the
// days outside clipped month parts that moved them.
func addReads(sc Scope, rows []Row, reads []fillRead, byMonth bool) (map[int]bool, []outsideDay) {
	again := map[int]bool{}
	var outside []outsideDay
	for i := range reads {
		rd := &reads[i]
		row := &rows[rd.row]
		if rd.day >= 0 && row.Days != nil {
			row.Days[rd.day] = rd.v
		}
		if rd.day < 0 {
			if rd.inexact {
				again[rd.row] = true
				continue
			}
			first := MonthFirst(rd.p.first)
			for extra := rd.mask &^ rd.p.mask(); extra != 0; extra &= extra - 1 {
				d := first + Day(mathbits.TrailingZeros32(extra))
				outside = append(outside, outsideDay{row: rd.row, valueRead: valueRead{want: valueWant{day: d, scope: sc, member: rd.want.member}}})
			}
		}
		if !row.Total.addChecked(&rd.v) && byMonth {
			again[rd.row] = true
		}
	}
	return again, outside
}

// takeOutside reads the days outside clipped month parts and takes them
// off their rows' totals, marking in again the rows that overflow.
func (r *Reader) takeOutside(ctx context.Context, rows []Row, outside []outsideDay, again map[int]bool) error {
	if len(outside) == 0 {
		return nil
	}
	if err := r.readValues(ctx, valueReadsOf(outside, func(o *outsideDay) *valueRead { return &o.valueRead })); err != nil {
		return err
	}
	for i := range outside {
		o := &outside[i]
		neg := o.v
		for f := range neg {
			neg[f] = -neg[f]
		}
		if !rows[o.row].Total.addChecked(&neg) {
			again[o.row] = true
		}
	}
	return nil
}

// refill reads the rows in again day by day.
func (r *Reader) refill(ctx context.Context, sc Scope, rows []Row, again map[int]bool, presence func(Entity) map[string]uint32) error {
	if len(again) == 0 {
		return nil
	}
	redo := make([]Row, 0, len(again))
	for i := range rows {
		if again[i] {
			redo = append(redo, Row{Bucket: rows[i].Bucket, Entity: rows[i].Entity})
		}
	}
	if err := r.fillValues(ctx, sc, redo, presence, false); err != nil {
		return err
	}
	for i, j := 0, 0; i < len(rows); i++ {
		if again[i] {
			rows[i] = redo[j]
			j++
		}
	}
	return nil
}
