package allocation_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/alauda/costmeter/internal/allocation"
	"github.com/alauda/costmeter/internal/pricing"
	"github.com/alauda/costmeter/internal/rollup"
)

// BenchmarkAllocateMonth allocates what the bill route's month would at
// the scale: 30 clusters × 30 days, 100,000 namespaces (3,334 a
// cluster) in 1,000 teams, two shared namespace rules and a shared team,
// then adds the cluster-days into one bucket.
func BenchmarkAllocateMonth(b *testing.B) {
	prices, err := pricing.Parse([]byte(`prices:
  - {item: Cpu, method: Effective, from: "2026-01-01", price: "0.05"}
  - {item: Memory, method: Effective, from: "2026-01-01", price: "0.004"}
  - {item: Cpu, method: Effective, cluster: "gpu-*", from: "2026-01-01", price: "0.5"}
`))
	if err != nil {
		b.Fatal(err)
	}
	pol, err := allocation.Parse([]byte(`
shared:
  namespaces:
    - namespace: kube-system
    - namespace: "monitoring*"
  labels:
    - {key: team, values: [team-0]}
idle: weighted
overheads:
  - {cluster: "*", monthly: "1000.00"}
`), 2)
	if err != nil {
		b.Fatal(err)
	}
	e, err := allocation.NewEngine(pol, prices, time.UTC, "team")
	if err != nil {
		b.Fatal(err)
	}
	const clusters, days, perCluster = 30, 30, 3334
	inputs := make([]allocation.ClusterDay, 0, clusters*days)
	for c := range clusters {
		nss := make([]allocation.Namespace, perCluster)
		for i := range nss {
			name := fmt.Sprintf("ns-%d", i)
			switch i {
			case 0:
				name = "kube-system"
			case 1:
				name = "monitoring"
			}
			nss[i] = allocation.Namespace{Project: "p", Namespace: name, Group: fmt.Sprintf("team-%d", (c*perCluster+i)%1000),
				Effective: [3]int64{int64(i+1) * 3_600_000_000, int64(i+7) * 7_200_000_000, 0}}
		}
		for d := range days {
			cd := allocation.ClusterDay{Cluster: fmt.Sprintf("gpu-%d", c), Day: rollup.DayFromDate(2026, time.March, 1+d), Namespaces: nss}
			for it := range cd.Capacity {
				cd.Capacity[it] = allocation.Capacity{Known: true, Value: 1 << 50}
			}
			inputs = append(inputs, cd)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		var sum allocation.Sum
		for _, cd := range inputs {
			x, err := e.Allocate(cd)
			if err != nil {
				b.Fatal(err)
			}
			sum.Add(x)
		}
		bill := sum.Bill()
		if bill.ClusterCost != bill.Allocated {
			b.Fatal("does not add up")
		}
	}
}
