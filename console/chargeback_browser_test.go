package console_test

import (
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/alauda/costmeter/api"
	"github.com/alauda/costmeter/internal/pipelinetest"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/testenv"
)

// The teams of the chargeback data: alpha's namespaces belong to payments,
// beta's to search, gamma's carry no team (__unallocated__), and
// kube-system is shared by every team on its cluster.
func teamOf(project string) string {
	switch project {
	case "alpha":
		return "payments"
	case "beta":
		return "search"
	}
	return ""
}

// TestChargebackView: the Chargeback page's bars and table equal the bill
// route's answer, read from the page, and its reconciliation line shows
// cluster cost = allocated; the usage view's team aggregation equals the
// group kind's rows.
func TestChargebackView(t *testing.T) {
	dir := t.TempDir()
	policy := filepath.Join(dir, "allocation.yaml")
	if err := os.WriteFile(policy, []byte(`shared:
  namespaces:
    - namespace: kube-system
overheads:
  - cluster: east
    name: control-plane
    monthly: "310.00"
`), 0o600); err != nil {
		t.Fatal(err)
	}
	prices := "prices:\n" +
		"- {item: Cpu, method: Effective, from: \"2020-01-01\", price: 0.05}\n" +
		"- {item: Cpu, method: Effective, cluster: west, from: \"2020-01-01\", price: 0.08}\n" +
		"- {item: Memory, method: Effective, from: \"2020-01-01\", price: 0.004}\n"
	s := startServersWith(t, false, stackOptions{groupKeys: []string{"team"}, allocationFile: policy, prices: prices})
	now := time.Now().UTC()
	s.today = now.Truncate(24 * time.Hour)
	first := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	// Whole days from the month's first to yesterday, and today so far.
	end := now.Truncate(time.Minute)
	if !end.After(s.today) {
		end = s.today.Add(time.Minute)
	}
	gib := float64(1 << 30)
	for i, ns := range namespaces {
		var batch []sample.Sample
		for d := first; d.Before(end); d = d.Add(24 * time.Hour) {
			to := earlier(d.Add(24*time.Hour), end)
			smp := s.sample(i, d, to, cpu(i, d))
			if team := teamOf(ns.project); team != "" {
				smp.Labels = map[string]string{"team": team}
			}
			batch = append(batch, smp)
		}
		s.publish(t, ns.cluster, batch)
	}
	for _, c := range []string{"east", "west"} {
		var batch []sample.Sample
		sys := sample.Sample{Cluster: c, Project: "platform", Namespace: "kube-system",
			CPU: sample.Resources{Usage: 1.5, Request: 2}, Memory: sample.Resources{Usage: 3 * gib, Request: 4 * gib}}
		for d := first; d.Before(end); d = d.Add(24 * time.Hour) {
			to := earlier(d.Add(24*time.Hour), end)
			k := sys
			k.Start, k.End = d, to
			batch = append(batch, k)
			batch = append(batch, sample.Sample{Cluster: c, Start: d, End: to,
				Capacity: &sample.Capacity{CPU: 400, Memory: 384 * gib, Storage: 4096 * gib}})
		}
		s.publish(t, c, batch)
	}
	testenv.Eventually(t, 60*time.Second, "chargeback data applied", func() (bool, string) {
		return pipelinetest.Drained(s.js)
	})

	// What the console must show: the bill route's answer for this month.
	q := url.Values{"start": {first.Format(time.DateOnly)}, "end": {now.Format(time.DateOnly)}, "step": {"month"}, "groupBy": {"team"}}
	code, body := s.get(t, adminToken, strings.TrimSuffix(api.PlatformPath, "/usage")+"/allocation", q)
	if code != 200 {
		t.Fatalf("bill: %d %s", code, body)
	}
	var bill struct {
		Decimals int `json:"decimals"`
		Items    []struct {
			ClusterCost   float64 `json:"clusterCost"`
			Allocated     float64 `json:"allocated"`
			CapacityKnown bool    `json:"capacityKnown"`
			Groups        []struct {
				Group                                 string
				Direct, Shared, Idle, Overhead, Total float64
			} `json:"groups"`
		} `json:"items"`
	}
	if err := json.Unmarshal(body, &bill); err != nil {
		t.Fatal(err)
	}
	if len(bill.Items) != 1 || len(bill.Items[0].Groups) == 0 {
		t.Fatalf("bill of %d buckets: %s", len(bill.Items), body)
	}
	it := bill.Items[0]
	units := func(v float64) int64 { return int64(math.Round(v * math.Pow10(bill.Decimals))) }
	if units(it.ClusterCost) != units(it.Allocated) || units(it.ClusterCost) == 0 || !it.CapacityKnown {
		t.Fatalf("the bill does not reconcile: cluster cost %v, allocated %v, capacity known %v", it.ClusterCost, it.Allocated, it.CapacityKnown)
	}
	groups := map[string][5]int64{}
	for _, g := range it.Groups {
		groups[g.Group] = [5]int64{units(g.Direct), units(g.Shared), units(g.Idle), units(g.Overhead), units(g.Total)}
	}
	for _, want := range []string{"payments", "search", "__unallocated__", "__idle__"} {
		if _, ok := groups[want]; !ok {
			t.Fatalf("the bill lacks group %s: %s", want, body)
		}
	}

	b := newBrowser(t)
	b.do(chromedp.Navigate(s.base + "/console/chargeback.html?groupBy=team"))
	b.signIn(adminToken)
	waitTrue(b, `document.body.dataset.busy === 'false' && !document.getElementById('main').hidden`, "the chargeback page loaded")
	b.takeProblems() // the 401 that led to the prompt

	// The table, read from the page: each group's parts in printed units.
	var table map[string][5]float64
	if err := json.Unmarshal([]byte(eval[string](b, `JSON.stringify(Object.fromEntries([...document.querySelectorAll('#bill-table tbody tr')].map((r) =>
	  [r.dataset.group, [...r.querySelectorAll('td.num')].map((c) => Number(c.dataset.value))])))`)), &table); err != nil {
		t.Fatal(err)
	}
	if len(table) != len(groups) {
		t.Fatalf("the page shows %d groups, the bill has %d: %v", len(table), len(groups), table)
	}
	for g, want := range groups {
		got := table[g]
		for k := range want {
			if units(got[k]) != want[k] {
				t.Errorf("group %s part %d: page %v, bill %d units", g, k, got[k], want[k])
			}
		}
	}
	// The bars: one series per part, one bar per group, the same amounts.
	var bars map[string]map[string]float64
	if err := json.Unmarshal([]byte(eval[string](b, `(() => {
	  const opt = echarts.getInstanceByDom(document.getElementById('chart')).getOption();
	  const x = opt.xAxis[0].data;
	  return JSON.stringify(Object.fromEntries(opt.series.map((s) => [s.id, Object.fromEntries(x.map((g, i) => [g, s.data[i]]))])));
	})()`)), &bars); err != nil {
		t.Fatal(err)
	}
	for g, want := range groups {
		for k, part := range []string{"direct", "shared", "idle", "overhead"} {
			if units(bars[part][g]) != want[k] {
				t.Errorf("bar %s of %s: %v, bill %d units", part, g, bars[part][g], want[k])
			}
		}
	}
	// The reconciliation line: equality, with the bill's own figures.
	recon := eval[string](b, `JSON.stringify(document.getElementById('recon').dataset)`)
	var r struct{ ClusterCost, Allocated, Equal string }
	if err := json.Unmarshal([]byte(recon), &r); err != nil {
		t.Fatal(err)
	}
	if r.Equal != "true" || units(atof(t, r.ClusterCost)) != units(it.ClusterCost) || units(atof(t, r.Allocated)) != units(it.Allocated) {
		t.Fatalf("reconciliation %+v, bill cluster cost %v", r, it.ClusterCost)
	}
	if text := eval[string](b, `document.getElementById('recon').textContent`); !strings.Contains(text, " = allocated ") {
		t.Fatalf("reconciliation line %q shows no equality", text)
	}
	b.clean("chargeback view")

	// Teams in the usage view: the group kind's rows, as the API gives them.
	b.navigate(s.base + "/console/?agg=group&groupBy=team&step=month&item=Cpu&method=Effective")
	v := b.readView()
	rows := s.rows(t, "", url.Values{"kind": {"group_all"}, "groupBy": {"team"}, "start": {first.Format(time.DateOnly)}, "end": {now.Format(time.DateOnly)},
		"step": {"month"}, "item": {"Cpu"}, "method": {"Effective"}})
	if len(v.Table) != len(rows) {
		t.Fatalf("the usage view shows %d team rows, the API %d: %v", len(v.Table), len(rows), v.Table)
	}
	for i, row := range rows {
		if v.Table[i][0] != row.Group || !near(v.Exact[i], row.Usage) {
			t.Errorf("row %d: page %v (%v), API %s %v", i, v.Table[i], v.Exact[i], row.Group, row.Usage)
		}
	}
	b.clean("teams in the usage view")
}

func atof(t *testing.T, s string) float64 {
	t.Helper()
	var f float64
	if _, err := fmt.Sscan(s, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
