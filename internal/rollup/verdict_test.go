package rollup_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/alauda/costmeter/internal/rollup"
)

// TestVerdictsAgainstModel applies random windows of a few namespaces
// (adjacent ones, gaps, exact repeats, partial overlaps with earlier
// batches, in random order and random batches, some under another
// project) and checks every
// verdict and the final day values against a model of the counted
// seconds: the apply script's coverage bookkeeping (its fast path for a
// window that continues the last span, and the general merge) decides
// exactly as the model does.
func TestVerdictsAgainstModel(t *testing.T) {
	store, _ := newTestStore(t)
	ctx := context.Background()
	day := rollup.DayFromDate(2025, time.June, 3)
	rng := rand.New(rand.NewPCG(7, 11))
	type key struct{ cluster, ns string }
	counted := map[key][]bool{} // minute -> counted
	want := map[key]int64{}     // counted CPU usage
	field := rollup.Field(rollup.Cpu, rollup.Usage)
	const minutes = 120
	for round := 0; round < 100; round++ {
		var cs []rollup.Contribution
		// Per batch, a namespace's project (it may move between batches),
		// and its pieces either disjoint or exact repeats: pieces of one
		// batch that overlap each other are judged in order of their
		// start, not the batch's (Store.Apply), which a model in batch
		// order cannot tell apart.
		proj := map[key]string{}
		inBatch := map[key][][2]int{}
		for j := rng.IntN(30) + 1; j > 0; j-- {
			k := key{"c", fmt.Sprintf("ns-%d", rng.IntN(4))}
			from := rng.IntN(minutes - 1)
			to := from + 1
			if rng.IntN(3) == 0 {
				to = min(minutes, from+1+rng.IntN(5))
			}
			clash := false
			for _, w := range inBatch[k] {
				if w[0] < to && from < w[1] && (w[0] != from || w[1] != to) {
					clash = true
				}
			}
			if clash {
				continue
			}
			inBatch[k] = append(inBatch[k], [2]int{from, to})
			if proj[k] == "" {
				proj[k] = "p"
				if rng.IntN(5) == 0 {
					proj[k] = "q" // the namespace moved (or a sample says so)
				}
			}
			proj := proj[k]
			var v rollup.Values
			v[field] = int64(to-from) * 60 * rollup.Scale
			cs = append(cs, rollup.Contribution{Entity: rollup.Entity{Project: proj, Cluster: k.cluster, Namespace: k.ns},
				Piece: rollup.Piece{Day: day, From: int32(from * 60), To: int32(to * 60), Values: v}})
		}
		res, err := store.Apply(ctx, cs, "S", nil, false)
		if err != nil {
			t.Fatal(err)
		}
		for i, c := range cs {
			k := key{c.Entity.Cluster, c.Entity.Namespace}
			if counted[k] == nil {
				counted[k] = make([]bool, minutes)
			}
			from, to := int(c.From/60), int(c.To/60)
			n := 0
			for m := from; m < to; m++ {
				if counted[k][m] {
					n++
				}
			}
			wantV := rollup.Applied
			switch {
			case n == to-from:
				wantV = rollup.Duplicate
			case n > 0:
				wantV = rollup.Overlap
			}
			if res.Verdicts[i] != wantV {
				t.Fatalf("round %d, piece %d %v [%d,%d) min: verdict %c, want %c", round, i, k, from, to, res.Verdicts[i], wantV)
			}
			if wantV == rollup.Applied {
				for m := from; m < to; m++ {
					counted[k][m] = true
				}
				want[k] += c.Values[field]
			}
		}
	}
	for k, w := range want {
		var got int64
		for _, p := range []string{"p", "q"} {
			v, _, err := store.DayValues(ctx, day, rollup.ScopeNamespace, rollup.Entity{Project: p, Cluster: k.cluster, Namespace: k.ns}.Member(rollup.ScopeNamespace))
			if err != nil {
				t.Fatal(err)
			}
			got += v[field]
		}
		if got != w {
			t.Fatalf("%v: counted %d, want %d", k, got, w)
		}
	}
}

// TestApplyManyRoundTrips: a batch of more pieces than one round trip
// holds, with two disjoint runs per
// namespace-day and exact repeats in the batch (applied after the runs, in
// order): every verdict, the namespace and cluster totals and the changes
// are exact, and applying it again counts nothing.
func TestApplyManyRoundTrips(t *testing.T) {
	store, _ := newTestStore(t)
	ctx := context.Background()
	day := rollup.DayFromDate(2025, time.June, 3)
	field := rollup.Field(rollup.Cpu, rollup.Usage)
	const namespaces = 4000
	var cs []rollup.Contribution
	var want []rollup.Verdict
	piece := func(ns, from, to int) rollup.Contribution {
		var v rollup.Values
		v[field] = int64(to-from) * int64(ns%7+1) * rollup.Scale
		return rollup.Contribution{Entity: rollup.Entity{Project: fmt.Sprintf("p%d", ns%5), Cluster: "c", Namespace: fmt.Sprintf("ns-%d", ns)},
			Piece: rollup.Piece{Day: day, From: int32(from), To: int32(to), Values: v}}
	}
	var total int64
	for ns := range namespaces {
		for _, w := range [][2]int{{0, 60}, {60, 120}, {180, 240}} { // two runs: [0,120) and [180,240)
			c := piece(ns, w[0], w[1])
			cs = append(cs, c)
			want = append(want, rollup.Applied)
			total += c.Values[field]
		}
		if ns%10 == 0 { // the same window twice in one batch
			cs = append(cs, piece(ns, 60, 120))
			want = append(want, rollup.Duplicate)
		}
	}
	for round, wantAll := range []rollup.Verdict{0, rollup.Duplicate} {
		res, err := store.Apply(ctx, cs, "S", nil, true)
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range res.Verdicts {
			w := want[i]
			if wantAll != 0 {
				w = wantAll
			}
			if v != w {
				t.Fatalf("apply %d, piece %d (%s [%d,%d)): verdict %c, want %c", round+1, i, cs[i].Entity.Namespace, cs[i].From, cs[i].To, v, w)
			}
		}
		changed := map[string]bool{} // an entity may be listed by several scripts
		for _, ch := range res.Changes {
			if ch.Scope == rollup.ScopeNamespace {
				changed[ch.Member] = true
			}
		}
		if len(changed) != namespaces {
			t.Errorf("apply %d: %d namespaces changed, want %d", round+1, len(changed), namespaces)
		}
		got, _, err := store.DayValues(ctx, day, rollup.ScopeCluster, "c")
		if err != nil {
			t.Fatal(err)
		}
		if got[field] != total {
			t.Fatalf("apply %d: cluster total %d, want %d", round+1, got[field], total)
		}
	}
	for _, ns := range []int{0, 1, 1999, 3999} {
		e := piece(ns, 0, 1).Entity
		got, _, err := store.DayValues(ctx, day, rollup.ScopeNamespace, e.Member(rollup.ScopeNamespace))
		if err != nil {
			t.Fatal(err)
		}
		if w := int64(180) * int64(ns%7+1) * rollup.Scale; got[field] != w {
			t.Errorf("%s: %d, want %d", e.Namespace, got[field], w)
		}
	}
}
