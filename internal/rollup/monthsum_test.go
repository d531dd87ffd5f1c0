package rollup_test

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/alauda/costmeter/internal/rollup"
)

// TestMonthSums: a project's, cluster's and project-cluster's month read
// from its month parts (Selection.Totals), whole or cut by the bucket,
// equals the sum of its day rollups, through duplicates and overlaps (which subtract their share of
// the sums again), and a month part that saturated int64 is read day by
// day instead of being reported saturated.
func TestMonthSums(t *testing.T) {
	store, _ := newTestStore(t)
	ctx := context.Background()
	june := rollup.DayFromDate(2025, time.June, 1)
	var cs []rollup.Contribution
	for i := range 60 {
		e := rollup.Entity{Project: fmt.Sprintf("p%d", i%4), Cluster: fmt.Sprintf("c%d", i%3), Namespace: fmt.Sprintf("ns-%02d", i)}
		for d := june; d < june+30; d += rollup.Day(1 + i%3) {
			var v rollup.Values
			for f := range v {
				v[f] = int64((i+1)*(f+1)) * rollup.Scale
			}
			cs = append(cs, rollup.Contribution{Entity: e, Piece: rollup.Piece{Day: d, From: 3600, To: 7200, Values: v}})
		}
	}
	apply := func(cs []rollup.Contribution) {
		t.Helper()
		for i := 0; i < len(cs); i += 250 {
			if _, err := store.Apply(ctx, cs[i:min(i+250, len(cs))], "S", nil, false); err != nil {
				t.Fatal(err)
			}
		}
	}
	apply(cs)
	// Again: duplicates; and overlaps (half a window already counted).
	apply(cs)
	over := make([]rollup.Contribution, len(cs))
	copy(over, cs)
	for i := range over {
		over[i].From, over[i].To = 5400, 9000
	}
	apply(over)

	// The whole month, and months cut by the bucket (this month up to
	// today, with data after it; a range cut at both ends): month parts
	// minus the days outside the bucket that moved them.
	for _, month := range [][]rollup.Bucket{{{First: june, Last: june + 29}}, {{First: june, Last: june + 19}}, {{First: june + 3, Last: june + 28}}} {
		for _, sc := range []rollup.Scope{rollup.ScopeProject, rollup.ScopeCluster, rollup.ScopeProjectCluster} {
			byDay, err := store.Page(ctx, rollup.Selection{Scope: sc}, month, 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			byMonth, err := store.Page(ctx, rollup.Selection{Scope: sc, Totals: true}, month, 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			if len(byDay.Rows) == 0 || len(byDay.Rows) != len(byMonth.Rows) {
				t.Fatalf("%s: %d rows by day, %d by month", sc, len(byDay.Rows), len(byMonth.Rows))
			}
			for i, row := range byMonth.Rows {
				if row.Days != nil {
					t.Fatalf("%s %v: read day by day, want the month part", sc, row.Entity)
				}
				var want rollup.Values
				for _, d := range byDay.Rows[i].Days {
					want.Add(&d)
				}
				if row.Total != want || byDay.Rows[i].Total != want || want == (rollup.Values{}) {
					t.Fatalf("%s %v %v: month part %v, days %v (their Total %v)", sc, row.Entity, month, row.Total, want, byDay.Rows[i].Total)
				}
			}
		}
	}

	// A project whose days each fit int64 but whose month does not.
	july := rollup.DayFromDate(2025, time.July, 1)
	var big []rollup.Contribution
	for d := july; d < july+31; d++ {
		var v rollup.Values
		v[rollup.Field(rollup.Cpu, rollup.Usage)] = math.MaxInt64 / 20
		big = append(big, rollup.Contribution{Entity: rollup.Entity{Project: "huge", Cluster: "c", Namespace: "n"}, Piece: rollup.Piece{Day: d, From: 0, To: 86400, Values: v}})
	}
	apply(big)
	p, err := store.Page(ctx, rollup.Selection{Scope: rollup.ScopeProject, Member: "huge", Totals: true}, []rollup.Bucket{{First: july, Last: july + 30}}, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Rows) != 1 || len(p.Rows[0].Days) != 31 {
		t.Fatalf("saturated month: %d rows, want one read day by day", len(p.Rows))
	}
	for _, d := range p.Rows[0].Days {
		if d[rollup.Field(rollup.Cpu, rollup.Usage)] != math.MaxInt64/20 {
			t.Fatalf("day value %d", d[rollup.Field(rollup.Cpu, rollup.Usage)])
		}
	}
}
