package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/alauda/costmeter/api"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/testenv"
)

// billPath is the bill route of the platform, or of a project.
func billPath(project string) string {
	if project == "" {
		return "/platform/cost.alauda.io/v1beta1/costs/allocation"
	}
	return "/platform/cost.alauda.io/v1beta1/projects/" + project + "/costs/allocation"
}

// newChargebackServer is a conforming server over rdb keeping the label
// keys team and example.com/env, with cfg's pricing and policy.
func newChargebackServer(t testing.TB, rdb redis.UniversalClient, cfg api.Config) http.Handler {
	t.Helper()
	cfg.AllocationLabels = "team, example.com/env"
	if cfg.Listen == "" {
		cfg.Listen, cfg.Currency = api.DefaultConfig().Listen, api.DefaultConfig().Currency
	}
	srv, err := api.New(cfg, rollup.NewReader(rdb), time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	return conform(t, srv.Handler())
}

func TestGroupParameterErrors(t *testing.T) {
	r := testenv.StartRedis(t)
	h := newChargebackServer(t, r.Client(), api.Config{})
	ok := "start=2025-01-01&end=2025-01-31"
	usage := []struct{ name, query, msg string }{
		{"groupBy missing", ok + "&kind=group_all", "groupBy: required for kind=group_all"},
		{"groupBy missing for group", ok + "&kind=group&name=a", "groupBy: required for kind=group"},
		{"name missing for group", ok + "&kind=group&groupBy=team", "name: required for kind=group"},
		{"name not a label value", ok + "&kind=group&groupBy=team&name=-a", "name: "},
		{"groupBy not a label key", ok + "&kind=group_all&groupBy=a%20b", `groupBy: label key "a b"`},
		{"groupBy not kept", ok + "&kind=group_all&groupBy=cost-center", `groupBy: "cost-center" is not a kept label key (kept: team, example.com/env)`},
		{"groupBy with another kind", ok + "&kind=project_all&groupBy=team", "groupBy: only with kind=group or group_all, not kind=project_all"},
	}
	for _, tt := range usage {
		t.Run("usage/"+tt.name, func(t *testing.T) {
			for _, path := range []string{usagePath(""), usagePath("team")} {
				rec := get(h, path, mustQuery(t, tt.query))
				checkStatus(t, rec.Code, rec.Body.Bytes(), http.StatusBadRequest, "BadRequest", tt.msg)
			}
		})
	}
	bill := []struct{ name, query, msg string }{
		{"start missing", "end=2025-01-31&groupBy=team", "start: required"},
		{"step unknown", ok + "&step=year&groupBy=team", `step: "year"`},
		{"groupBy missing", ok, "groupBy: required"},
		{"groupBy not kept", ok + "&groupBy=cost-center", `groupBy: "cost-center" is not a kept label key`},
		{"name bad", ok + "&groupBy=team&name=a%20b", "name: "},
		{"cluster bad", ok + "&groupBy=team&cluster=East", "cluster: "},
	}
	for _, tt := range bill {
		t.Run("bill/"+tt.name, func(t *testing.T) {
			for _, path := range []string{billPath(""), billPath("team")} {
				rec := get(h, path, mustQuery(t, tt.query))
				checkStatus(t, rec.Code, rec.Body.Bytes(), http.StatusBadRequest, "BadRequest", tt.msg)
			}
		})
	}
	t.Run("no key kept", func(t *testing.T) {
		h := newServer(t, r.Client())
		rec := get(h, usagePath(""), mustQuery(t, ok+"&kind=group_all&groupBy=team"))
		checkStatus(t, rec.Code, rec.Body.Bytes(), http.StatusBadRequest, "BadRequest", `groupBy: "team" is not a kept label key: no key is kept (--allocation-labels is empty)`)
	})
	t.Run("bad project in the path", func(t *testing.T) {
		rec := get(h, billPath("Team"), mustQuery(t, ok+"&groupBy=team"))
		checkStatus(t, rec.Code, rec.Body.Bytes(), http.StatusBadRequest, "BadRequest", "project: ")
	})
}

func TestAllocationFlagsErrors(t *testing.T) {
	cfg := api.DefaultConfig()
	cfg.AllocationLabels = "team,team"
	cfg.AllocationFile = "/nonexistent/policy.yaml"
	err := cfg.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{`--allocation-labels: label key "team" is listed twice`, "--allocation-file: read allocation policy: open /nonexistent/policy.yaml"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// The chargeback scenario: 2026-03-10 (UTC), three clusters.
//
//   - prod-eu, the worked example of docs/chargeback.md: 100 cores of
//     capacity all day; app-a (team a, project pa, example.com/env=prod)
//     30 cores, app-b (team b, project pb) 20, kube-system (no label,
//     shared by the policy) 10. Cpu at 0.05 a core-hour, idle weighted, an
//     overhead of 100.00 a month on prod-*.
//   - gpu-1: no capacity sample (unknown); ml (team a, project pa) 2 cores,
//     at the cluster's own price 1.10.
//   - small: 1 core of capacity; batch (team c, project pc) 2 cores:
//     overcommitted by 24 core-hours.
var chargebackDay = time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC)

const chargebackPrices = `decimals: 2
prices:
  - {item: Cpu, method: Effective, from: "2026-01-01", price: "0.05"}
  - {item: Cpu, method: Effective, cluster: "gpu-*", from: "2026-01-01", price: "1.10"}
`

const chargebackPolicy = `shared:
  namespaces:
    - namespace: kube-system
idle: weighted
overheads:
  - cluster: "prod-*"
    name: control-plane
    monthly: "100.00"
`

func chargebackSamples() []sample.Sample {
	var out []sample.Sample
	for h := 0; h < 24; h += 12 {
		from := chargebackDay.Add(time.Duration(h) * time.Hour)
		to := from.Add(12 * time.Hour)
		ns := func(cluster, project, namespace string, cores float64, labels map[string]string) sample.Sample {
			return sample.Sample{Cluster: cluster, Project: project, Namespace: namespace, Start: from, End: to,
				CPU: sample.Resources{Usage: cores, Request: cores}, Labels: labels}
		}
		capacity := func(cluster string, cores float64) sample.Sample {
			return sample.Sample{Cluster: cluster, Start: from, End: to, Capacity: &sample.Capacity{CPU: cores}}
		}
		out = append(out,
			capacity("prod-eu", 100),
			ns("prod-eu", "pa", "app-a", 30, map[string]string{"team": "a", "example.com/env": "prod"}),
			ns("prod-eu", "pb", "app-b", 20, map[string]string{"team": "b"}),
			ns("prod-eu", "platform", "kube-system", 10, nil),
			ns("gpu-1", "pa", "ml", 2, map[string]string{"team": "a"}),
			capacity("small", 1),
			ns("small", "pc", "batch", 2, map[string]string{"team": "c"}),
		)
	}
	return out
}

// chargebackRedis is a Redis holding the scenario, written as the
// aggregator writes samples (rollup.Split, the contribution of a usage or
// a capacity sample, Store.Apply) keeping team and example.com/env.
func chargebackRedis(t *testing.T) redis.UniversalClient {
	t.Helper()
	r := testenv.StartRedis(t)
	store, err := rollup.NewStore(r.Client(), time.UTC, retention, rollup.WithGroupKeys([]string{"team", "example.com/env"}))
	if err != nil {
		t.Fatal(err)
	}
	var cs []rollup.Contribution
	for _, s := range chargebackSamples() {
		if err := s.Validate(); err != nil {
			t.Fatal(err)
		}
		c := rollup.Contribution{Entity: rollup.Entity{Project: s.Project, Cluster: s.Cluster, Namespace: s.Namespace}, Labels: s.Labels}
		if s.IsCapacity() {
			c = rollup.Contribution{Scope: rollup.ScopeCapacity, Entity: rollup.Entity{Cluster: s.Cluster}}
		}
		for _, p := range rollup.Split(&s, time.UTC) {
			c.Piece = p
			cs = append(cs, c)
		}
	}
	res, err := store.Apply(context.Background(), cs, "test", nil, false)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range res.Verdicts {
		if v != rollup.Applied {
			t.Fatalf("contribution %d: verdict %c", i, v)
		}
	}
	return r.Client()
}

// chargebackServer serves the scenario with its prices and policy.
func chargebackServer(t *testing.T, rdb redis.UniversalClient) http.Handler {
	t.Helper()
	dir := t.TempDir()
	cfg := api.DefaultConfig()
	cfg.PricingFile = filepath.Join(dir, "prices.yaml")
	cfg.AllocationFile = filepath.Join(dir, "policy.yaml")
	writeTestFile(t, cfg.PricingFile, chargebackPrices)
	writeTestFile(t, cfg.AllocationFile, chargebackPolicy)
	return newChargebackServer(t, rdb, cfg)
}

func writeTestFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

func getBill(t *testing.T, h http.Handler, path, query string) api.BillResponse {
	t.Helper()
	rec := get(h, path, mustQuery(t, query))
	if rec.Code != http.StatusOK {
		t.Fatalf("%s?%s: %d %s", path, query, rec.Code, rec.Body)
	}
	var b api.BillResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil {
		t.Fatal(err)
	}
	return b
}

// line is a bill line's amounts, in the order direct, shared, idle,
// overhead, total.
func line(l api.BillLine) [5]float64 {
	return [5]float64{l.Direct, l.Shared, l.Idle, l.Overhead, l.Total}
}

func TestBillAddsUp(t *testing.T) {
	h := chargebackServer(t, chargebackRedis(t))
	const day = "start=2026-03-10&end=2026-03-10&step=day&groupBy=team"
	b := getBill(t, h, billPath(""), day)
	if b.GroupBy != "team" || b.Currency != "CNY" || b.Decimals != 2 || len(b.Items) != 1 {
		t.Fatalf("bill: %+v", b)
	}
	bk := b.Items[0]
	// The worked example's 123.23, gpu-1's 48 core-hours at 1.10 (52.80;
	// capacity unknown: Effective priced), small's 1 core of capacity at
	// 0.05 (1.20).
	if bk.ClusterCost != 177.23 || bk.Allocated != 177.23 || bk.CapacityKnown || bk.Start != "20260310" || bk.End != "20260310" {
		t.Fatalf("bucket: clusterCost %v allocated %v capacityKnown %v %s..%s", bk.ClusterCost, bk.Allocated, bk.CapacityKnown, bk.Start, bk.End)
	}
	groups := map[string][5]float64{}
	for _, g := range bk.Groups {
		groups[g.Group] = line(g)
	}
	want := map[string][5]float64{
		"a": {36.00 + 52.80, 7.20, 28.80, 1.94, 126.74},
		"b": {24.00, 4.80, 19.20, 1.29, 49.29},
		"c": {1.20, 0, 0, 0, 1.20},
	}
	if len(groups) != len(want) {
		t.Errorf("groups %v, want %v", groups, want)
	}
	for g, w := range want {
		if got := groups[g]; got != w {
			t.Errorf("group %s: %v, want %v", g, got, w)
		}
	}
	lines := map[string][5]float64{}
	for _, l := range bk.Lines {
		lines[l.Cluster+"/"+l.Group] = line(l)
	}
	if got, w := lines["prod-eu/a"], [5]float64{36.00, 7.20, 28.80, 1.94, 73.94}; got != w {
		t.Errorf("prod-eu/a %v, want %v", got, w)
	}
	if got, w := lines["gpu-1/a"], [5]float64{52.80, 0, 0, 0, 52.80}; got != w {
		t.Errorf("gpu-1/a %v, want %v", got, w)
	}
	clusters := map[string]api.BillCluster{}
	for _, c := range bk.Clusters {
		clusters[c.Cluster] = c
	}
	cpu := func(c string) api.BillClusterItem { return clusters[c].Items[0] }
	if c := clusters["prod-eu"]; c.ClusterCost != 123.23 || c.Allocated != 123.23 || c.Overhead != 3.23 || c.Days != 1 ||
		cpu("prod-eu") != (api.BillClusterItem{Item: "Cpu", Capacity: 2400, Effective: 1440, Idle: 960, Cost: 120}) {
		t.Errorf("prod-eu: %+v", c)
	}
	if c := cpu("gpu-1"); c != (api.BillClusterItem{Item: "Cpu", Effective: 48, UnknownDays: 1, Cost: 52.80}) {
		t.Errorf("gpu-1 Cpu: %+v", c)
	}
	if c := cpu("small"); c != (api.BillClusterItem{Item: "Cpu", Capacity: 24, Effective: 48, Overcommit: 24, Cost: 1.20}) {
		t.Errorf("small Cpu: %+v", c)
	}
	if len(bk.Pools) != 1 || bk.Pools[0].Cluster != "prod-eu" || bk.Pools[0].Rule != "namespaces[0]" || bk.Pools[0].Items[0].Quantity != 240 || bk.Pools[0].Items[0].Amount != 12 {
		t.Errorf("pools: %+v", bk.Pools)
	}

	// A month bucket holds the same (one day of data), and adds up.
	m := getBill(t, h, billPath(""), "start=2026-03-01&end=2026-03-31&groupBy=team").Items[0]
	if m.ClusterCost != m.Allocated || m.ClusterCost != 177.23 {
		// Days without data bill nothing: no cluster had a sample.
		t.Errorf("month: clusterCost %v allocated %v", m.ClusterCost, m.Allocated)
	}

	t.Run("opencost#1124: filtering to one group changes none of its numbers", func(t *testing.T) {
		for _, g := range []string{"a", "b", "c"} {
			f := getBill(t, h, billPath(""), day+"&name="+g).Items[0]
			if len(f.Groups) != 1 || line(f.Groups[0]) != want[g] || f.ClusterCost != 177.23 || f.Allocated != 177.23 {
				t.Errorf("name=%s: groups %+v, clusterCost %v allocated %v", g, f.Groups, f.ClusterCost, f.Allocated)
			}
			for _, l := range f.Lines {
				if line(l) != lines[l.Cluster+"/"+l.Group] {
					t.Errorf("name=%s: line %s/%s %v, unfiltered %v", g, l.Cluster, l.Group, line(l), lines[l.Cluster+"/"+l.Group])
				}
			}
		}
		f := getBill(t, h, billPath(""), day+"&cluster=prod-eu").Items[0]
		if f.ClusterCost != 123.23 || f.Allocated != 123.23 || len(f.Clusters) != 1 || len(f.Lines) != 2 || line(f.Lines[0]) != lines["prod-eu/a"] {
			t.Errorf("cluster=prod-eu: %+v", f)
		}
	})
	t.Run("project twin", func(t *testing.T) {
		p := getBill(t, h, billPath("pb"), day).Items[0]
		if len(p.Lines) != 1 || p.Lines[0].Cluster != "prod-eu" || line(p.Lines[0]) != want["b"] || p.ClusterCost != 123.23 || p.Allocated != 123.23 || len(p.Clusters) != 1 {
			t.Errorf("project pb: %+v", p)
		}
		p = getBill(t, h, billPath("pa"), day).Items[0]
		if len(p.Groups) != 1 || line(p.Groups[0]) != want["a"] || p.ClusterCost != 176.03 {
			t.Errorf("project pa: %+v", p)
		}
	})
	t.Run("no policy file: idle its own group, nothing shared", func(t *testing.T) {
		dir := t.TempDir()
		cfg := api.DefaultConfig()
		cfg.PricingFile = filepath.Join(dir, "prices.yaml")
		writeTestFile(t, cfg.PricingFile, chargebackPrices)
		plain := getBill(t, newChargebackServer(t, chargebackRedis(t), cfg), billPath(""), day).Items[0]
		got := map[string][5]float64{}
		for _, g := range plain.Groups {
			got[g.Group] = line(g)
		}
		// prod-eu: 120.00 by 720:480:240:960; no overheads.
		w := map[string][5]float64{"a": {88.80, 0, 0, 0, 88.80}, "b": {24, 0, 0, 0, 24}, "c": {1.20, 0, 0, 0, 1.20},
			"__unallocated__": {12, 0, 0, 0, 12}, "__idle__": {0, 0, 48, 0, 48}}
		if len(got) != len(w) || plain.ClusterCost != 174 || plain.Allocated != 174 {
			t.Errorf("groups %v clusterCost %v allocated %v", got, plain.ClusterCost, plain.Allocated)
		}
		for g, x := range w {
			if got[g] != x {
				t.Errorf("%s: %v, want %v", g, got[g], x)
			}
		}
	})
}

// rowKey is what identifies a usage row here, with its usage and cost.
type groupRow struct {
	project, groupBy, group string
	usage, cost             float64
}

func groupRows(rows []api.Row) []groupRow {
	var out []groupRow
	for _, r := range rows {
		c := -1.0
		if r.Cost != nil {
			c = *r.Cost
		}
		out = append(out, groupRow{r.Project, r.GroupBy, r.Group, r.Usage, c})
	}
	return out
}

// TestGroupKinds: the group kinds' rows, priced on each cluster's price
// (a's 720 core-hours on prod-eu at 0.05 and 48 on gpu-1 at 1.10).
func TestGroupKinds(t *testing.T) {
	h := chargebackServer(t, chargebackRedis(t))
	const day = "start=2026-03-10&end=2026-03-10&step=day&item=Cpu"
	all := groupRows(decode(t, get(h, usagePath(""), mustQuery(t, day+"&kind=group_all&groupBy=team"))).Items)
	want := []groupRow{
		{"", "team", "__unallocated__", 240, 12},
		{"", "team", "a", 768, 88.8},
		{"", "team", "b", 480, 24},
		{"", "team", "c", 48, 2.4},
	}
	if !slices.Equal(all, want) {
		t.Errorf("group_all\n got %v\nwant %v", all, want)
	}
	one := groupRows(decode(t, get(h, usagePath(""), mustQuery(t, day+"&kind=group&groupBy=team&name=a"))).Items)
	if !slices.Equal(one, want[1:2]) {
		t.Errorf("group a: %v", one)
	}
	byUsage := groupRows(decode(t, get(h, usagePath(""), mustQuery(t, day+"&kind=group_all&groupBy=team&orderBy=usage"))).Items)
	if !slices.Equal(byUsage, []groupRow{want[1], want[2], want[0], want[3]}) {
		t.Errorf("orderBy=usage: %v", byUsage)
	}
	page := decode(t, get(h, usagePath(""), mustQuery(t, day+"&kind=group_all&groupBy=team&pageSize=2&currentPage=2")))
	if page.Total != 4 || !slices.Equal(groupRows(page.Items), want[2:]) {
		t.Errorf("page 2: %+v", page)
	}
	env := groupRows(decode(t, get(h, usagePath(""), mustQuery(t, day+"&kind=group_all&groupBy=example.com/env"))).Items)
	if !slices.Equal(env, []groupRow{{"", "example.com/env", "__unallocated__", 816, 12 + 24 + 52.8 + 2.4}, {"", "example.com/env", "prod", 720, 36}}) {
		t.Errorf("example.com/env: %v", env)
	}
	// The project route: the project's namespaces only.
	pa := groupRows(decode(t, get(h, usagePath("pa"), mustQuery(t, day+"&kind=group_all&groupBy=team"))).Items)
	if !slices.Equal(pa, []groupRow{{"pa", "team", "a", 768, 88.8}}) {
		t.Errorf("project pa: %v", pa)
	}
	pb := groupRows(decode(t, get(h, usagePath("pb"), mustQuery(t, day+"&kind=group&groupBy=team&name=a"))).Items)
	if len(pb) != 0 {
		t.Errorf("project pb, group a: %v", pb)
	}
	rec := get(h, usagePath(""), mustQuery(t, day+"&kind=group_all&groupBy=team&format=csv"))
	wantCSV := "project,cluster,namespace,item,method,usage,currency,start,end,cost,groupBy,group\n" +
		",,,Cpu,Effective,240,CNY,20260310,20260310,12,team,__unallocated__\n" +
		",,,Cpu,Effective,768,CNY,20260310,20260310,88.8,team,a\n" +
		",,,Cpu,Effective,480,CNY,20260310,20260310,24,team,b\n" +
		",,,Cpu,Effective,48,CNY,20260310,20260310,2.4,team,c\n"
	if rec.Code != http.StatusOK || rec.Body.String() != wantCSV {
		t.Errorf("csv %d:\n%s\nwant\n%s", rec.Code, rec.Body, wantCSV)
	}
}

// TestClusterCapacityColumns: capacity, idle and overcommit on the
// platform's cluster rows, and the day without capacity said so.
func TestClusterCapacityColumns(t *testing.T) {
	h := chargebackServer(t, chargebackRedis(t))
	rows := decode(t, get(h, usagePath(""), mustQuery(t, "start=2026-03-09&end=2026-03-10&step=week&kind=cluster_all&item=Cpu"))).Items
	type capRow struct {
		cluster              string
		usage                float64
		capacity, idle, over float64
		known, unknown       int
	}
	var got []capRow
	for _, r := range rows {
		if r.CapacityFields == nil {
			t.Fatalf("row %+v has no capacity", r)
		}
		c := r.CapacityFields
		got = append(got, capRow{r.Cluster, r.Usage, c.Capacity, c.Idle, c.Overcommit, c.CapacityKnownDays, c.CapacityUnknownDays})
	}
	// The week's bucket is 9 to 10 March: the 9th has no capacity sample.
	want := []capRow{
		{"gpu-1", 48, 0, 0, 0, 0, 2},
		{"prod-eu", 1440, 2400, 960, 0, 1, 1},
		{"small", 48, 24, 0, 24, 1, 1},
	}
	if !slices.Equal(got, want) {
		t.Errorf("cluster rows\n got %v\nwant %v", got, want)
	}
	// The project route's cluster rows carry none.
	for _, r := range decode(t, get(h, usagePath("pa"), mustQuery(t, "start=2026-03-10&end=2026-03-10&kind=cluster_all"))).Items {
		if r.CapacityFields != nil {
			t.Errorf("project row with capacity: %+v", r)
		}
	}
	rec := get(h, usagePath(""), mustQuery(t, "start=2026-03-10&end=2026-03-10&kind=cluster&name=small&format=csv"))
	wantCSV := "project,cluster,namespace,item,method,usage,currency,start,end,cost,capacity,idle,overcommit,capacityKnownDays,capacityUnknownDays\n" +
		",small,,Cpu,Effective,48,CNY,20260310,20260310,2.4,24,0,24,1,0\n"
	if rec.Body.String() != wantCSV {
		t.Errorf("csv:\n%s\nwant\n%s", rec.Body, wantCSV)
	}
}
