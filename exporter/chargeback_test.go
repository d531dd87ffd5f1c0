package exporter_test

import (
	"context"
	"math/big"
	"path/filepath"
	"testing"
	"time"

	"github.com/alauda/costmeter/exporter"
	"github.com/alauda/costmeter/internal/allocation"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
)

// TestChargebackAllocationsAndTags: with the rollups' group-namespace
// rollups, the export tags each namespace with its team and splits the
// shared kube-system's charges over the teams by their Effective, read
// back by DuckDB: ratios 1:3, summing to 1; a relabelled namespace carries
// the team it used the most under.
func TestChargebackAllocationsAndTags(t *testing.T) {
	e := newEnv(t) // fixture data without labels: no team, nothing shared
	store, err := rollup.NewStore(e.redis.Client(), time.UTC, retention, rollup.WithGroupKeys([]string{"team"}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := store.LoadScripts(ctx); err != nil {
		t.Fatal(err)
	}
	day := time.Date(2026, time.November, 15, 0, 0, 0, 0, time.UTC)
	mk := func(project, ns, team string, from, to time.Duration, cores float64) sample.Sample {
		s := sample.Sample{Cluster: "prod", Project: project, Namespace: ns, Start: day.Add(from), End: day.Add(to),
			CPU: sample.Resources{Usage: cores, Request: cores}}
		if team != "" {
			s.Labels = map[string]string{"team": team}
		}
		return s
	}
	ss := []sample.Sample{
		mk("shop", "pay", "payments", 0, 24*time.Hour, 1),             // 24 core-hours
		mk("shop", "find", "search", 0, 24*time.Hour, 3),              // 72
		mk("infra", "kube-system", "", 0, 24*time.Hour, 2),            // shared
		mk("shop", "moved", "search", 0, 6*time.Hour, 1),              // 6 under search,
		mk("shop", "moved", "payments", 6*time.Hour, 24*time.Hour, 1), // 18 under payments
	}
	var cs []rollup.Contribution
	for i := range ss {
		if err := ss[i].Validate(); err != nil {
			t.Fatal(err)
		}
		for _, p := range rollup.Split(&ss[i], time.UTC) {
			cs = append(cs, rollup.Contribution{Entity: rollup.Entity{Project: ss[i].Project, Cluster: ss[i].Cluster, Namespace: ss[i].Namespace},
				Labels: ss[i].Labels, Piece: p})
		}
	}
	if _, err := store.Apply(ctx, cs, "test", nil, false); err != nil {
		t.Fatal(err)
	}
	policy, err := allocation.Parse([]byte("shared:\n  namespaces:\n    - namespace: kube-system\n"), e.prices.Decimals())
	if err != nil {
		t.Fatal(err)
	}
	cb, err := exporter.NewChargeback(rollup.NewReader(e.redis.Client()), []string{"team"}, "team", func() *allocation.Policy { return policy })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exporter.NewChargeback(rollup.NewReader(e.redis.Client()), []string{"team"}, "env", nil); err == nil {
		t.Fatal("a group key that is not kept was accepted")
	}
	dir := t.TempDir()
	x := e.exporter(t, e.config("file://"+dir), exporter.WithAllocator(cb), exporter.WithLabeler(cb))
	d := rollup.DayFromDate(2026, time.November, 15)
	if err := x.Backfill(ctx, d, d); err != nil {
		t.Fatal(err)
	}
	one := sqlString(filepath.Join(dir, exporter.ParquetPath(d)))
	res := duckdb(t,
		`SELECT ResourceName, CAST(Tags AS VARCHAR) AS tags FROM read_parquet(`+one+`)
		 WHERE x_Item = 'Cpu' AND x_Cluster = 'prod' AND AllocatedMethodId IS NULL ORDER BY ResourceName`,
		`SELECT AllocatedResourceId AS r, CAST(x_AllocatedRatio AS VARCHAR) AS ratio, AllocatedMethodId AS m,
		   CAST(AllocatedTags AS VARCHAR) AS tags, CAST(EffectiveCost AS VARCHAR) AS cost
		 FROM read_parquet(`+one+`) WHERE ResourceName = 'kube-system' AND x_Item = 'Cpu' ORDER BY r`,
		`SELECT CAST(SUM(EffectiveCost) AS VARCHAR) AS cost FROM read_parquet(`+one+`) WHERE ResourceName = 'kube-system' AND x_Item = 'Cpu'`,
	)
	wantTags := map[string]string{"find": `{"team":"search"}`, "moved": `{"team":"payments"}`, "pay": `{"team":"payments"}`}
	if len(res[0]) != len(wantTags) {
		t.Fatalf("origin rows %v", res[0])
	}
	for _, r := range res[0] {
		if got, want := val(r["tags"]), wantTags[val(r["ResourceName"])]; got != want {
			t.Errorf("%s: Tags %s, want %s", val(r["ResourceName"]), got, want)
		}
	}
	// Receivers by Effective: payments 24 + 18 = 42, search 72 + 6 = 78.
	if len(res[1]) != 2 {
		t.Fatalf("kube-system's Cpu is split into %d rows, want 2: %v", len(res[1]), res[1])
	}
	want := []struct{ r, ratio, tags string }{
		{"team=payments", "0.350000000", `{"team":"payments"}`},
		{"team=search", "0.650000000", `{"team":"search"}`},
	}
	for i, w := range want {
		r := res[1][i]
		if val(r["r"]) != w.r || val(r["ratio"]) != w.ratio || val(r["tags"]) != w.tags || val(r["m"]) != "costmeter-namespaces[0]-weighted" {
			t.Errorf("allocated row %d: %v, want %+v", i, r, w)
		}
	}
	// The allocated rows carry the whole of kube-system's cost: 2 cores ×
	// 24 h at the fixture's Cpu price of the day.
	wantCost := new(big.Rat).Mul(big.NewRat(48, 1), priceOf(rollup.Cpu, d))
	if got := val(res[2][0]["cost"]); got != decimal9(wantCost) {
		t.Errorf("kube-system's allocated cost %s, want %s", got, decimal9(wantCost))
	}
}
