package rollup_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/alauda/costmeter/internal/rollup"
)

// TestTopByUsage checks the rankings the apply script keeps against totals
// computed here from the contributions, through a redelivered batch
// (duplicates must not count twice, in the namespace's ranking or in the
// project sums), for a whole month (one ZRANGE) and for ranges across two
// months (the threshold algorithm).
func TestTopByUsage(t *testing.T) {
	store, rdb := newTestStore(t)
	ctx := context.Background()
	usage, eff := rollup.Field(rollup.Cpu, rollup.Usage), rollup.Field(rollup.Cpu, rollup.Effective)
	first, last := rollup.DayFromDate(2025, time.June, 20), rollup.DayFromDate(2025, time.July, 31)
	// model[field][scope][member][day] = value
	model := map[int]map[rollup.Scope]map[string]map[rollup.Day]int64{usage: {}, eff: {}}
	add := func(f int, sc rollup.Scope, m string, d rollup.Day, v int64) {
		if model[f][sc] == nil {
			model[f][sc] = map[string]map[rollup.Day]int64{}
		}
		if model[f][sc][m] == nil {
			model[f][sc][m] = map[rollup.Day]int64{}
		}
		model[f][sc][m][d] += v
	}
	var cs []rollup.Contribution
	for i := range 300 {
		e := rollup.Entity{Project: fmt.Sprintf("p%d", i%7), Cluster: fmt.Sprintf("c%d", i%2), Namespace: fmt.Sprintf("ns-%03d", i)}
		for d := first; d <= last; d++ {
			if (i+int(d))%5 == 0 {
				continue // days without a sample
			}
			// Close totals (many ties), shifting from day to day: the
			// order of a range is not the order of its months.
			v := int64((i*37+int(d)*11)%50+100) * rollup.Scale
			if i%10 == 0 {
				v = 0 // zero totals: rows, but never in a ranking
			}
			var vals rollup.Values
			vals[usage] = v
			// Effective is at least usage (it bounds it), in another order.
			vals[eff] = v + int64((i*13+int(d))%40)*rollup.Scale
			if i%10 == 0 {
				vals[eff] = 0
			}
			cs = append(cs, rollup.Contribution{Entity: e, Piece: rollup.Piece{Day: d, From: 0, To: 86400, Values: vals}})
			for _, sc := range rollup.Scopes() {
				add(usage, sc, e.Member(sc), d, vals[usage])
				add(eff, sc, e.Member(sc), d, vals[eff])
			}
		}
	}
	for _, again := range []bool{false, true} { // the second time all are duplicates
		for i := 0; i < len(cs); i += 1000 {
			if _, err := store.Apply(ctx, cs[i:min(i+1000, len(cs))], "S", nil, false); err != nil {
				t.Fatalf("apply (again=%v): %v", again, err)
			}
		}
	}
	reader := rollup.NewReader(rdb)
	type rankCase struct {
		name        string
		sc          rollup.Scope
		first, last rollup.Day
		n           int
	}
	for _, field := range []int{eff, usage} {
		for _, c := range []rankCase{
			{"whole month, namespaces", rollup.ScopeNamespace, rollup.DayFromDate(2025, time.July, 1), rollup.DayFromDate(2025, time.July, 31), 25},
			{"across months, namespaces", rollup.ScopeNamespace, rollup.DayFromDate(2025, time.June, 28), rollup.DayFromDate(2025, time.July, 3), 25},
			{"across months, top 1", rollup.ScopeNamespace, rollup.DayFromDate(2025, time.June, 30), rollup.DayFromDate(2025, time.July, 1), 1},
			{"inside a month, namespaces", rollup.ScopeNamespace, rollup.DayFromDate(2025, time.July, 5), rollup.DayFromDate(2025, time.July, 6), 40},
			{"across months, projects", rollup.ScopeProject, rollup.DayFromDate(2025, time.June, 21), rollup.DayFromDate(2025, time.July, 30), 7},
			{"whole month, project-clusters", rollup.ScopeProjectCluster, rollup.DayFromDate(2025, time.July, 1), rollup.DayFromDate(2025, time.July, 31), 5},
		} {
			t.Run(fmt.Sprintf("field %d: %s", field, c.name), func(t *testing.T) {
				var want []rollup.Ranked
				for m, days := range model[field][c.sc] {
					var tot int64
					for d, v := range days {
						if d >= c.first && d <= c.last {
							tot += v
						}
					}
					if tot > 0 {
						want = append(want, rollup.Ranked{Member: m, Total: tot})
					}
				}
				slices.SortFunc(want, func(a, b rollup.Ranked) int {
					if x := cmp.Compare(b.Total, a.Total); x != 0 {
						return x
					}
					return cmp.Compare(a.Member, b.Member)
				})
				if len(want) < c.n || want[len(want)-1].Total == want[0].Total {
					t.Fatalf("model too flat: the test proves nothing")
				}
				got, err := reader.TopByUsage(ctx, c.sc, c.first, c.last, field, c.n)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(got, want[:c.n]) {
					t.Fatalf("top %d:\n got %v\nwant %v", c.n, got, want[:c.n])
				}
				// Asking past the members with a non-zero total says so.
				all, err := reader.TopByUsage(ctx, c.sc, c.first, c.last, field, len(want)+1)
				if !errors.Is(err, rollup.ErrRankingIncomplete) || !slices.Equal(all, want) {
					t.Fatalf("past the end: %d members, %v; want all %d and ErrRankingIncomplete", len(all), err, len(want))
				}
			})
		}
	}
	// ProjectQuota has no ranking to bound it: the caller reads whole.
	if _, err := reader.TopByUsage(ctx, rollup.ScopeNamespace, first, last, rollup.Field(rollup.Cpu, rollup.ProjectQuota), 5); !errors.Is(err, rollup.ErrRankingIncomplete) {
		t.Fatalf("ProjectQuota: %v, want ErrRankingIncomplete", err)
	}
}

// TestTopByUsageLooseBound: a sample whose Effective is below its Usage
// (the file source takes what it is sent) breaks the bound the Effective
// rankings give Usage. The month is then marked, and Usage over a range in
// it is not ranked (the caller reads the selection whole) instead of being
// misordered; Effective stays ranked, exactly, and a month without such a
// sample is unaffected.
func TestTopByUsageLooseBound(t *testing.T) {
	store, rdb := newTestStore(t)
	ctx := context.Background()
	usage, eff := rollup.Field(rollup.Cpu, rollup.Usage), rollup.Field(rollup.Cpu, rollup.Effective)
	piece := func(ns string, d rollup.Day, u, e int64) rollup.Contribution {
		var v rollup.Values
		v[usage], v[eff] = u*rollup.Scale, e*rollup.Scale
		return rollup.Contribution{Entity: rollup.Entity{Project: "p", Cluster: "c", Namespace: ns}, Piece: rollup.Piece{Day: d, From: 0, To: 86400, Values: v}}
	}
	june, july := rollup.DayFromDate(2025, time.June, 10), rollup.DayFromDate(2025, time.July, 10)
	var cs []rollup.Contribution
	for i := range 40 {
		ns := fmt.Sprintf("ns-%02d", i)
		// June: Effective bounds Usage everywhere.
		cs = append(cs, piece(ns, june, int64(10+i), int64(100-i)))
		// July: ns-00 sends usage 1000 with effective 1, the largest usage
		// under the smallest effective.
		if i == 0 {
			cs = append(cs, piece(ns, july, 1000, 1))
		} else {
			cs = append(cs, piece(ns, july, int64(10+i), int64(100-i)))
		}
	}
	if _, err := store.Apply(ctx, cs, "S", nil, false); err != nil {
		t.Fatal(err)
	}
	reader := rollup.NewReader(rdb)
	// July, part of the month: Usage is not ranked.
	if _, err := reader.TopByUsage(ctx, rollup.ScopeNamespace, july-1, july+1, usage, 3); !errors.Is(err, rollup.ErrRankingIncomplete) {
		t.Fatalf("Usage over a loose month: %v, want ErrRankingIncomplete", err)
	}
	if _, err := reader.TopByUsage(ctx, rollup.ScopeProject, june, july, usage, 1); !errors.Is(err, rollup.ErrRankingIncomplete) {
		t.Fatalf("Usage over a range meeting a loose month: %v, want ErrRankingIncomplete", err)
	}
	// Effective is ranked exactly: ns-01 (99) first, ns-00 (1) is last.
	got, err := reader.TopByUsage(ctx, rollup.ScopeNamespace, july-1, july+1, eff, 2)
	if err != nil {
		t.Fatal(err)
	}
	want := []rollup.Ranked{{Member: "p c ns-01", Total: 99 * rollup.Scale}, {Member: "p c ns-02", Total: 98 * rollup.Scale}}
	if !slices.Equal(got, want) {
		t.Fatalf("Effective top 2 = %v, want %v", got, want)
	}
	// June holds no loose sample: Usage is ranked there.
	got, err = reader.TopByUsage(ctx, rollup.ScopeNamespace, june-1, june+1, usage, 2)
	if err != nil {
		t.Fatal(err)
	}
	want = []rollup.Ranked{{Member: "p c ns-39", Total: 49 * rollup.Scale}, {Member: "p c ns-38", Total: 48 * rollup.Scale}}
	if !slices.Equal(got, want) {
		t.Fatalf("June Usage top 2 = %v, want %v", got, want)
	}
}
