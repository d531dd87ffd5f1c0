package allocation_test

import (
	"testing"
	"time"

	"github.com/alauda/costmeter/internal/allocation"
	"github.com/alauda/costmeter/internal/pricing"
	"github.com/alauda/costmeter/internal/rollup"
)

// coresDay is n cores for a whole 24-hour day, in the rollups' fixed point.
func coresDay(n int64) int64 { return n * 86400 * rollup.Scale }

// workedExample is docs/chargeback.md's example: prod-eu on 2026-03-10, a
// 100-core cluster at 0.05 a core-hour, teams a and b, kube-system shared,
// idle shared by weight, 100.00 a month of overhead.
func workedExample(t *testing.T) (*allocation.Engine, allocation.ClusterDay) {
	t.Helper()
	prices, err := pricing.Parse([]byte(`
currency: EUR
prices:
  - {item: Cpu, method: Effective, from: "2026-01-01", price: "0.05"}
`))
	if err != nil {
		t.Fatal(err)
	}
	pol, err := allocation.Parse([]byte(`
shared:
  namespaces:
    - namespace: kube-system
idle: weighted
overheads:
  - {cluster: "prod-*", name: control-plane, monthly: "100.00"}
`), prices.Decimals())
	if err != nil {
		t.Fatal(err)
	}
	e, err := allocation.NewEngine(pol, prices, time.UTC, "team")
	if err != nil {
		t.Fatal(err)
	}
	cd := allocation.ClusterDay{Cluster: "prod-eu", Day: rollup.DayFromDate(2026, time.March, 10)}
	cd.Capacity[rollup.Cpu] = allocation.Capacity{Known: true, Value: coresDay(100)}
	cd.Capacity[rollup.Memory] = allocation.Capacity{Known: true}
	cd.Capacity[rollup.Storage] = allocation.Capacity{Known: true}
	cd.Namespaces = []allocation.Namespace{
		{Project: "shop", Namespace: "app-a", Group: "a", Effective: [3]int64{coresDay(30)}},
		{Project: "shop", Namespace: "app-b", Group: "b", Effective: [3]int64{coresDay(20)}},
		{Project: "system", Namespace: "kube-system", Group: "", Effective: [3]int64{coresDay(10)}},
	}
	return e, cd
}

// TestWorkedExample checks every number of the documented example.
func TestWorkedExample(t *testing.T) {
	e, cd := workedExample(t)
	b, err := e.Allocate(cd)
	if err != nil {
		t.Fatal(err)
	}
	// 2400 core-hours at 0.05 = 120.00; March's 100.00 over 31 days:
	// 10000 cents = 31 × 322 + 18, so days 1 to 18 carry 323.
	if b.ClusterCost != 12323 || b.Allocated != 12323 {
		t.Fatalf("clusterCost %d allocated %d, want 12323", b.ClusterCost, b.Allocated)
	}
	want := map[string]allocation.Line{
		"a": {Cluster: "prod-eu", Group: "a", Direct: 3600, Shared: 720, Idle: 2880, Overhead: 194, Total: 7394},
		"b": {Cluster: "prod-eu", Group: "b", Direct: 2400, Shared: 480, Idle: 1920, Overhead: 129, Total: 4929},
	}
	wantQty := map[string][3]int64{"a": {coresDay(30), coresDay(6), coresDay(24)}, "b": {coresDay(20), coresDay(4), coresDay(16)}}
	if len(b.Lines) != 2 {
		t.Fatalf("lines %+v", b.Lines)
	}
	for _, l := range b.Lines {
		w := want[l.Group]
		w.Items = l.Items
		if l != w {
			t.Errorf("line %+v, want %+v", l, w)
		}
		p := l.Items[rollup.Cpu]
		if q := wantQty[l.Group]; p.DirectQty != q[0] || p.SharedQty != q[1] || p.IdleQty != q[2] {
			t.Errorf("%s quantities %+v, want %v", l.Group, p, q)
		}
	}
	c := b.Clusters[0].Items[rollup.Cpu]
	if c.Capacity != coresDay(100) || c.Effective != coresDay(60) || c.Idle != coresDay(40) || c.Overcommit != 0 || c.Cost != 12000 {
		t.Errorf("cpu totals %+v", c)
	}
	if len(b.Pools) != 1 || b.Pools[0].Rule != "namespaces[0]" || b.Pools[0].Items[rollup.Cpu].Amount != 1200 {
		t.Errorf("pools %+v", b.Pools)
	}
}

// TestOpencost1124 is opencost#1124's case: a filter, a shared namespace
// and shared idle together. Filtered to one team, the team's numbers are
// those of the unfiltered bill, and across the filtered answers idle is
// counted exactly once.
func TestOpencost1124(t *testing.T) {
	e, cd := workedExample(t)
	full, err := e.Allocate(cd)
	if err != nil {
		t.Fatal(err)
	}
	var idle, total int64
	for _, g := range []string{"a", "b"} {
		f := full.Filter(g, "")
		if len(f.Lines) != 1 || f.Lines[0].Group != g {
			t.Fatalf("filtered to %s: %+v", g, f.Lines)
		}
		for _, l := range full.Lines {
			if l.Group == g && l != f.Lines[0] {
				t.Errorf("filtered to %s: %+v, unfiltered %+v", g, f.Lines[0], l)
			}
		}
		idle += f.Lines[0].Idle
		total += f.Lines[0].Total
	}
	if idle != 4800 || total != full.ClusterCost {
		t.Errorf("the filtered answers carry idle %d (the idle cost is 4800) and %d in all (the cluster cost is %d)", idle, total, full.ClusterCost)
	}
	if f := full.Filter("", "prod-us"); len(f.Lines) != 0 || f.ClusterCost != 0 {
		t.Errorf("another cluster: %+v", f)
	}
	if f := full.Filter("", "prod-eu"); f.ClusterCost != full.ClusterCost || len(f.Lines) != 2 {
		t.Errorf("its own cluster: %+v", f)
	}
}

// TestUnknownCapacity: without capacity the item's idle is unknown, said
// so, and never billed as zero-cost capacity: the namespaces' Effective is
// priced and nothing lands on __idle__.
func TestUnknownCapacity(t *testing.T) {
	e, cd := workedExample(t)
	cd.Capacity[rollup.Cpu] = allocation.Capacity{}
	b, err := e.Allocate(cd)
	if err != nil {
		t.Fatal(err)
	}
	c := b.Clusters[0].Items[rollup.Cpu]
	if c.UnknownDays != 1 || c.Idle != 0 || c.Cost != 7200 || b.ClusterCost != 7523 || b.Allocated != 7523 {
		t.Errorf("cpu %+v, clusterCost %d allocated %d", c, b.ClusterCost, b.Allocated)
	}
	for _, l := range b.Lines {
		if l.Group == allocation.IdleGroup || l.Idle != 0 {
			t.Errorf("idle billed without capacity: %+v", l)
		}
	}
}

// TestOvercommit: Effective above capacity bills the capacity's cost by
// Effective, idle 0, the excess reported.
func TestOvercommit(t *testing.T) {
	e, cd := workedExample(t)
	cd.Capacity[rollup.Cpu] = allocation.Capacity{Known: true, Value: coresDay(40)}
	b, err := e.Allocate(cd)
	if err != nil {
		t.Fatal(err)
	}
	c := b.Clusters[0].Items[rollup.Cpu]
	if c.Idle != 0 || c.Overcommit != coresDay(20) || c.Cost != 4800 || b.ClusterCost != b.Allocated {
		t.Errorf("cpu %+v, clusterCost %d allocated %d", c, b.ClusterCost, b.Allocated)
	}
	for _, l := range b.Lines {
		if l.Idle != 0 {
			t.Errorf("idle when overcommitted: %+v", l)
		}
	}
}

// TestEveryNamespaceShared: with no group left to carry them, shared cost
// lands on __shared__ and idle and overheads on __idle__.
func TestEveryNamespaceShared(t *testing.T) {
	e, cd := workedExample(t)
	cd.Namespaces = cd.Namespaces[2:]
	b, err := e.Allocate(cd)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]allocation.Line{}
	for _, l := range b.Lines {
		got[l.Group] = l
	}
	if got[allocation.SharedGroup].Shared != 1200 || got[allocation.IdleGroup].Idle != 10800 || got[allocation.IdleGroup].Overhead != 323 || b.Allocated != 12323 {
		t.Errorf("lines %+v", b.Lines)
	}
}
