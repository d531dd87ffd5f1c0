package allocation_test

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alauda/costmeter/internal/allocation"
	"github.com/alauda/costmeter/internal/pricing"
	"github.com/alauda/costmeter/internal/rollup"
)

// policyYAML writes the model's policy as a file for the engine.
func policyYAML(p mPolicy, decimals int) string {
	var b strings.Builder
	split := func(even bool) string {
		if even {
			return "even"
		}
		return "weighted"
	}
	b.WriteString("shared:\n  namespaces:\n")
	for _, r := range p.nsRules {
		fmt.Fprintf(&b, "    - {cluster: %q, namespace: %q, split: %s}\n", r.cluster, r.namespace, split(r.even))
	}
	b.WriteString("  labels:\n")
	for _, r := range p.labelRules {
		fmt.Fprintf(&b, "    - {key: %q, values: [%s], split: %s}\n", r.key, strings.Join(r.values, ", "), split(r.even))
	}
	if p.idle != "" {
		fmt.Fprintf(&b, "idle: %s\n", p.idle)
	}
	b.WriteString("overheads:\n")
	for _, o := range p.overheads {
		fmt.Fprintf(&b, "  - {cluster: %q, monthly: %q, split: %s}\n", o.cluster, pricing.FormatDecimal(o.monthly, decimals), split(o.even))
	}
	return b.String()
}

func pricesYAML(p mPrices) string {
	var b strings.Builder
	fmt.Fprintf(&b, "decimals: %d\nprices:\n", p.decimals)
	items := []string{"Cpu", "Memory", "Storage"}
	for i, it := range items {
		fmt.Fprintf(&b, "  - {item: %s, method: Effective, from: '2000-01-01', price: '%s'}\n", it, pricing.FormatDecimal(p.all[i], 9))
		for c, v := range p.clusters {
			fmt.Fprintf(&b, "  - {item: %s, method: Effective, cluster: %s, from: '2000-01-01', price: '%s'}\n", it, c, pricing.FormatDecimal(v[i], 9))
		}
	}
	return b.String()
}

// scenario is one randomised case: a policy, prices, a zone, and a few
// cluster-days of one month around a DST change.
type scenario struct {
	pol     mPolicy
	prices  mPrices
	loc     *time.Location
	groupBy string
	days    []scenarioDay
}

type scenarioDay struct {
	cluster string
	y       int
	m       time.Month
	d       int
	cap     [3]mCapacity
	nss     []mNamespace
}

var zones = []struct {
	name string
	// DST days: (year, month, day) with 23 or 25 hours, or 23.5/24.5.
	y, m, d int
}{
	{"UTC", 2026, 3, 29},
	{"Europe/Berlin", 2026, 3, 29},   // 23 h
	{"Europe/Berlin", 2026, 10, 25},  // 25 h
	{"America/New_York", 2026, 3, 8}, // 23 h
	{"America/New_York", 2026, 11, 1},
	{"Australia/Lord_Howe", 2026, 4, 5}, // 24.5 h
	{"Asia/Shanghai", 2026, 2, 28},
}

func randomScenario(t *testing.T, r *rand.Rand) scenario {
	t.Helper()
	z := zones[r.IntN(len(zones))]
	loc, err := time.LoadLocation(z.name)
	if err != nil {
		t.Fatalf("load zone %s: %v (install tzdata: apt-get install tzdata)", z.name, err)
	}
	s := scenario{loc: loc, groupBy: "team"}
	if r.IntN(4) == 0 {
		s.groupBy = "example.com/cost-center"
	}
	clusters := []string{"east", "west.b", "gpu-1"}[:1+r.IntN(3)]
	s.prices = mPrices{decimals: []int{0, 2, 2, 3, 6}[r.IntN(5)], clusters: map[string][3]int64{}}
	randPrice := func() int64 {
		switch r.IntN(4) {
		case 0:
			return r.Int64N(1_000) // fractions of a micro-unit
		case 1:
			return 0
		default:
			return r.Int64N(5 * pricing.PriceScale)
		}
	}
	s.prices.all = [3]int64{randPrice(), randPrice(), randPrice()}
	for _, c := range clusters {
		if r.IntN(2) == 0 {
			s.prices.clusters[c] = [3]int64{randPrice(), randPrice(), randPrice()}
		}
	}
	splitEven := func() bool { return r.IntN(2) == 0 }
	if r.IntN(3) > 0 {
		s.pol.nsRules = append(s.pol.nsRules, mNsRule{cluster: "*", namespace: "kube-system", even: splitEven()})
	}
	if r.IntN(2) == 0 {
		s.pol.nsRules = append(s.pol.nsRules, mNsRule{cluster: []string{"*", "east", "*-1"}[r.IntN(3)], namespace: "mon*", even: splitEven()})
	}
	if r.IntN(2) == 0 {
		s.pol.labelRules = append(s.pol.labelRules, mLabelRule{key: s.groupBy, values: []string{"platform"}, even: splitEven()})
	}
	if r.IntN(3) == 0 {
		s.pol.labelRules = append(s.pol.labelRules, mLabelRule{key: "other", values: []string{"a"}})
	}
	s.pol.idle = []string{"", "own", "weighted", "even"}[r.IntN(4)]
	for range r.IntN(3) {
		s.pol.overheads = append(s.pol.overheads, mOverhead{cluster: []string{"*", "east", "gpu-*"}[r.IntN(3)], monthly: r.Int64N(1_000_000_000), even: splitEven()})
	}
	names := []string{"kube-system", "monitoring", "app-a", "app-b", "app-c", "db", "web", "batch"}
	groups := []string{"a", "b", "c", "platform", ""}
	for _, c := range clusters {
		for dd := -1; dd <= 1; dd++ {
			y, m, dn := time.Date(z.y, time.Month(z.m), z.d+dd, 12, 0, 0, 0, time.UTC).Date()
			day := scenarioDay{cluster: c, y: y, m: m, d: dn}
			for range r.IntN(9) {
				ns := mNamespace{name: names[r.IntN(len(names))], group: groups[r.IntN(len(groups))]}
				for i := range 3 {
					switch r.IntN(5) {
					case 0:
					case 1:
						ns.eff[i] = r.Int64N(1000)
					case 2:
						ns.eff[i] = r.Int64N(1e16) // up to 115 cores all day
					default:
						ns.eff[i] = r.Int64N(1e13)
					}
				}
				// A namespace appears once per cluster-day.
				if !slices.ContainsFunc(day.nss, func(o mNamespace) bool { return o.name == ns.name }) {
					day.nss = append(day.nss, ns)
				}
			}
			var sum [3]int64
			for _, ns := range day.nss {
				for i := range 3 {
					sum[i] += ns.eff[i]
				}
			}
			for i := range 3 {
				switch r.IntN(5) {
				case 0:
					// unknown
				case 1:
					day.cap[i] = mCapacity{known: true, value: sum[i] / 2} // overcommit
				case 2:
					day.cap[i] = mCapacity{known: true, value: 0}
				default:
					day.cap[i] = mCapacity{known: true, value: sum[i] + r.Int64N(1e15)}
				}
			}
			s.days = append(s.days, day)
		}
	}
	return s
}

func (s scenario) engine(t *testing.T) *allocation.Engine {
	t.Helper()
	prices, err := pricing.Parse([]byte(pricesYAML(s.prices)))
	if err != nil {
		t.Fatalf("prices: %v\n%s", err, pricesYAML(s.prices))
	}
	pol, err := allocation.Parse([]byte(policyYAML(s.pol, s.prices.decimals)), s.prices.decimals)
	if err != nil {
		t.Fatalf("policy: %v\n%s", err, policyYAML(s.pol, s.prices.decimals))
	}
	e, err := allocation.NewEngine(pol, prices, s.loc, s.groupBy)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (d scenarioDay) input() allocation.ClusterDay {
	cd := allocation.ClusterDay{Cluster: d.cluster, Day: rollup.DayFromDate(d.y, d.m, d.d)}
	for i, c := range d.cap {
		cd.Capacity[i] = allocation.Capacity{Known: c.known, Value: c.value}
	}
	for _, ns := range d.nss {
		cd.Namespaces = append(cd.Namespaces, allocation.Namespace{Project: "p", Namespace: ns.name, Group: ns.group, Effective: ns.eff})
	}
	return cd
}

// compare checks a bill's lines against the model's, field by field.
func compare(t *testing.T, what string, got []allocation.Line, want map[string]*mLine) {
	t.Helper()
	if len(got) != len(want) {
		var names []string
		for g := range want {
			names = append(names, g)
		}
		t.Fatalf("%s: %d lines, the model has %d (%v); got %+v", what, len(got), len(want), names, got)
	}
	for _, l := range got {
		w := want[l.Group]
		if w == nil {
			t.Fatalf("%s: line %q not in the model", what, l.Group)
		}
		for i, p := range l.Items {
			m := w.items[i]
			if p.Direct != m.direct || p.Shared != m.shared || p.Idle != m.idle || p.DirectQty != m.dq || p.SharedQty != m.sq || p.IdleQty != m.iq {
				t.Fatalf("%s: group %q item %d = %+v, the model says %+v", what, l.Group, i, p, m)
			}
			if p.Idle < 0 || p.IdleQty < 0 {
				t.Fatalf("%s: group %q: negative idle %+v", what, l.Group, p)
			}
		}
		if l.Overhead != w.overhead || l.Total != w.total() {
			t.Fatalf("%s: group %q overhead %d total %d, the model says %d, %d", what, l.Group, l.Overhead, l.Total, w.overhead, w.total())
		}
	}
}

// TestAllocationModel runs the engine and the model on randomised
// scenarios: every cluster-day's lines equal the model's, the bill adds up
// exactly, idle is never negative, a bucket's bill is the sum of its
// cluster-days, and filtering changes no kept number.
func TestAllocationModel(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 1124))
	n := 1000
	if testing.Short() {
		n = 200
	}
	var overcommits, unknown, shared, overheads, idleRows int
	for i := range n {
		s := randomScenario(t, r)
		e := s.engine(t)
		var bucket allocation.Bill
		var sum allocation.Sum
		modelLines := map[[2]string]*mLine{}
		var modelCost int64
		for _, d := range s.days {
			b, err := e.Allocate(d.input())
			if err != nil {
				t.Fatalf("scenario %d: %v", i, err)
			}
			what := fmt.Sprintf("scenario %d %s %d-%02d-%02d %s", i, d.cluster, d.y, d.m, d.d, s.loc)
			m := model(d.cluster, d.y, d.m, d.d, s.loc, d.cap, d.nss, s.pol, s.prices, s.groupBy)
			compare(t, what, b.Lines, m.lines)
			if b.ClusterCost != b.Allocated || b.ClusterCost != m.clusterCost {
				t.Fatalf("%s: clusterCost %d allocated %d, the model's cost %d", what, b.ClusterCost, b.Allocated, m.clusterCost)
			}
			for it, c := range b.Clusters[0].Items {
				if c.Idle < 0 || c.Overcommit < 0 || c.Idle != m.idle[it] || (c.UnknownDays == 0) != m.idleKnown[it] {
					t.Fatalf("%s: item %d totals %+v, model idle %d known %v", what, it, c, m.idle[it], m.idleKnown[it])
				}
				if c.Overcommit > 0 {
					overcommits++
				}
				if c.UnknownDays > 0 {
					unknown++
				}
			}
			if len(b.Pools) > 0 {
				shared++
			}
			if b.Clusters[0].Overhead > 0 {
				overheads++
			}
			for g, l := range m.lines {
				k := [2]string{d.cluster, g}
				if modelLines[k] == nil {
					modelLines[k] = &mLine{}
				}
				ml := modelLines[k]
				for it := range 3 {
					ml.items[it].direct += l.items[it].direct
					ml.items[it].shared += l.items[it].shared
					ml.items[it].idle += l.items[it].idle
					ml.items[it].dq += l.items[it].dq
					ml.items[it].sq += l.items[it].sq
					ml.items[it].iq += l.items[it].iq
				}
				ml.overhead += l.overhead
				if g == allocation.IdleGroup {
					idleRows++
				}
			}
			modelCost += m.clusterCost
			bucket.Add(b)
			sum.Add(b)
		}
		if s := sum.Bill(); !reflect.DeepEqual(s, bucket) {
			t.Fatalf("scenario %d: Sum gives %+v, Bill.Add %+v", i, s, bucket)
		}
		if bucket.ClusterCost != bucket.Allocated || bucket.ClusterCost != modelCost {
			t.Fatalf("scenario %d bucket: clusterCost %d allocated %d, model %d", i, bucket.ClusterCost, bucket.Allocated, modelCost)
		}
		for _, c := range bucket.Clusters {
			if c.ClusterCost != c.Allocated {
				t.Fatalf("scenario %d cluster %s: cost %d allocated %d", i, c.Cluster, c.ClusterCost, c.Allocated)
			}
		}
		for _, l := range bucket.Lines {
			w := modelLines[[2]string{l.Cluster, l.Group}]
			compare(t, fmt.Sprintf("scenario %d bucket %s", i, l.Cluster), []allocation.Line{l}, map[string]*mLine{l.Group: w})
			// Filtering to the line's group and cluster changes none of
			// its numbers.
			f := bucket.Filter(l.Group, l.Cluster)
			if len(f.Lines) != 1 || f.Lines[0] != l {
				t.Fatalf("scenario %d: filtered to %s/%s: %+v, unfiltered %+v", i, l.Cluster, l.Group, f.Lines, l)
			}
		}
		for _, g := range bucket.Groups() {
			f := bucket.Filter(g.Group, "")
			if fg := f.Groups(); len(fg) != 1 || fg[0] != g || f.ClusterCost != bucket.ClusterCost {
				t.Fatalf("scenario %d: filtered to %s: %+v, unfiltered %+v", i, g.Group, fg, g)
			}
		}
	}
	// The cases the test is about must have happened.
	if overcommits == 0 || unknown == 0 || shared == 0 || overheads == 0 || idleRows == 0 {
		t.Fatalf("overcommitted %d, unknown capacity %d, shared %d, overheads %d, idle rows %d: the test proves nothing for a zero", overcommits, unknown, shared, overheads, idleRows)
	}
	t.Logf("%d scenarios: %d overcommitted items, %d unknown capacities, %d cluster-days with shared pools, %d with overheads", n, overcommits, unknown, shared, overheads)
}
