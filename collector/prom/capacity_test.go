package prom_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/collector/prom"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/testenv"
)

// The cluster of collector/kube's TestClusterLabelsAndCapacity, as
// kube-state-metrics exports it, scraped every minute for 40 minutes and
// read in 10-minute windows: three namespaces with allocation labels (one
// relabelled, one covered by the label map), nodes that join, are
// cordoned or are not Ready, volumes bound and released. Values change
// in place (kube-state-metrics exports every condition and phase with 0 or
// 1), as Prometheus holds them; a vanished series would linger for the
// 5-minute lookback in a TSDB built without staleness markers.
func capacityHistory() []byte {
	var b bytes.Buffer
	ts := func(m int) int64 { return t0.Add(time.Duration(m) * time.Minute).Unix() }
	const total = 40
	series := func(name, labels string, from, to int, v func(m int) float64) {
		for m := from; m < to; m++ {
			fmt.Fprintf(&b, "%s{%s} %g %d\n", name, labels, v(m), ts(m))
		}
	}
	one := func(int) float64 { return 1 }
	b.WriteString("# TYPE kube_namespace_labels gauge\n")
	series("kube_namespace_labels", `namespace="lbl-shop",label_team="a",label_example_com_env="prod"`, 0, 12, one)
	series("kube_namespace_labels", `namespace="lbl-shop",label_team="c",label_example_com_env="prod"`, 12, total, one)
	series("kube_namespace_labels", `namespace="lbl-bare"`, 0, total, one)
	series("kube_namespace_labels", `namespace="lbl-mixed",label_team="b",label_other="x"`, 0, total, one)
	type node struct {
		name         string
		from         int
		cpu, mem     float64
		ready        func(m int) bool
		cordonedFrom int
	}
	always := func(int) bool { return true }
	nodes := []node{
		{"n1", 0, 4, 16 * gib, always, 15},
		{"n2", 10, 8, 32 * gib, always, total},
		{"n3", 25, 8, 32 * gib, func(int) bool { return false }, total},
	}
	b.WriteString("# TYPE kube_node_status_allocatable gauge\n")
	for _, n := range nodes {
		series("kube_node_status_allocatable", fmt.Sprintf(`node="%s",resource="cpu",unit="core"`, n.name), n.from, total, func(int) float64 { return n.cpu })
		series("kube_node_status_allocatable", fmt.Sprintf(`node="%s",resource="memory",unit="byte"`, n.name), n.from, total, func(int) float64 { return n.mem })
		series("kube_node_status_allocatable", fmt.Sprintf(`node="%s",resource="pods",unit="integer"`, n.name), n.from, total, func(int) float64 { return 110 })
	}
	b.WriteString("# TYPE kube_node_status_condition gauge\n")
	for _, n := range nodes {
		for _, st := range []string{"true", "false", "unknown"} {
			series("kube_node_status_condition", fmt.Sprintf(`node="%s",condition="Ready",status="%s"`, n.name, st), n.from, total, func(m int) float64 {
				if (st == "true") == n.ready(m) && st != "unknown" {
					return 1
				}
				return 0
			})
		}
		series("kube_node_status_condition", fmt.Sprintf(`node="%s",condition="MemoryPressure",status="true"`, n.name), n.from, total, func(int) float64 { return 1 })
	}
	b.WriteString("# TYPE kube_node_spec_unschedulable gauge\n")
	for _, n := range nodes {
		series("kube_node_spec_unschedulable", fmt.Sprintf(`node="%s"`, n.name), n.from, total, func(m int) float64 {
			if m >= n.cordonedFrom {
				return 1
			}
			return 0
		})
	}
	type volume struct {
		name  string
		bytes float64
		phase func(m int) string
	}
	volumes := []volume{
		{"pv1", 100 * gib, func(m int) string {
			if m < 17 {
				return "Available"
			}
			return "Bound"
		}},
		{"pv2", 50 * gib, func(m int) string {
			if m < 30 {
				return "Bound"
			}
			return "Released"
		}},
	}
	b.WriteString("# TYPE kube_persistentvolume_capacity_bytes gauge\n")
	for _, v := range volumes {
		series("kube_persistentvolume_capacity_bytes", fmt.Sprintf(`persistentvolume="%s"`, v.name), 0, total, func(int) float64 { return v.bytes })
	}
	b.WriteString("# TYPE kube_persistentvolume_status_phase gauge\n")
	for _, v := range volumes {
		for _, ph := range []string{"Pending", "Available", "Bound", "Released", "Failed"} {
			series("kube_persistentvolume_status_phase", fmt.Sprintf(`persistentvolume="%s",phase="%s"`, v.name, ph), 0, total, func(m int) float64 {
				if v.phase(m) == ph {
					return 1
				}
				return 0
			})
		}
	}
	b.WriteString("# EOF\n")
	return b.Bytes()
}

// TestPrometheusLabelsAndCapacity: from kube_namespace_labels the samples
// carry the same allocation labels the Kubernetes source sends (keys
// verbatim, read from their sanitised label_ names; own value first, then
// the label map), and from node allocatable and volume capacity the same
// capacity samples: Ready, schedulable nodes and bound volumes,
// time-weighted.
func TestPrometheusLabelsAndCapacity(t *testing.T) {
	p := testenv.StartPrometheus(t, capacityHistory())
	mapFile := filepath.Join(t.TempDir(), "map.yaml")
	doc := "namespaces:\n  - namespace: lbl-bare\n    labels: {team: platform, example.com/env: dev}\n  - namespace: \"lbl-*\"\n    labels: {example.com/env: shared}\n"
	if err := os.WriteFile(mapFile, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := collector.NewLabeler([]string{"team", "example.com/env"}, mapFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config(p.URL())
	cfg.Labeler = l
	src := newSource(t, cfg)
	got, err := src.Collect(context.Background(), t0, t0.Add(4*iv))
	if err != nil {
		t.Fatal(err)
	}
	type labels = map[string]string
	shop := func(team string) labels { return labels{"team": team, "example.com/env": "prod"} }
	var want []sample.Sample
	for w, c := range []sample.Capacity{
		{CPU: 4, Memory: 16 * gib, Storage: 50 * gib},
		// n2 joins; n1 is cordoned after 5 minutes; pv1 is bound for 3.
		{CPU: 4*5/10.0 + 8, Memory: 16*gib*5/10.0 + 32*gib, Storage: 100*gib*3/10.0 + 50*gib},
		// n3 joins not Ready.
		{CPU: 8, Memory: 32 * gib, Storage: 150 * gib},
		// pv2 is released.
		{CPU: 8, Memory: 32 * gib, Storage: 100 * gib},
	} {
		start := t0.Add(time.Duration(w) * iv)
		team := "a"
		if w > 0 {
			team = "c"
		}
		for _, ns := range []struct {
			name   string
			labels labels
		}{
			{"lbl-bare", labels{"team": "platform", "example.com/env": "dev"}},
			{"lbl-mixed", labels{"team": "b", "example.com/env": "shared"}},
			{"lbl-shop", shop(team)},
		} {
			zero := 0.0
			want = append(want, sample.Sample{Cluster: cluster, Project: "unassigned", Namespace: ns.name, Start: start, End: start.Add(iv),
				CPU: sample.Resources{Effective: &zero}, Memory: sample.Resources{Effective: &zero}, Labels: ns.labels})
		}
		want = append(want, sample.Sample{Cluster: cluster, Start: start, End: start.Add(iv), Capacity: &c})
	}
	if len(got) != len(want) {
		t.Fatalf("%d samples, want %d: %v", len(got), len(want), got)
	}
	for i := range want {
		if err := got[i].Validate(); err != nil {
			t.Errorf("sample %d invalid: %v", i, err)
		}
		if g, w := sample.AppendJSON(nil, &got[i]), sample.AppendJSON(nil, &want[i]); !reflect.DeepEqual(g, w) {
			t.Errorf("sample %d:\n got %s\nwant %s", i, g, w)
		}
	}
}

// TestLabelKeysSanitisedAlike: keys kube-state-metrics exports under one
// label name are refused, naming both.
func TestLabelKeysSanitisedAlike(t *testing.T) {
	if err := prom.CheckLabelKeys("cpaas.io/project", []string{"team", "example.com/env", "cpaas.io/project"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		keys []string
		want string
	}{
		{[]string{"example.com/env", "example-com.env"}, `"example.com/env" and "example-com.env" are both label_example_com_env`},
		{[]string{"cpaas-io/project"}, `"cpaas.io/project" and "cpaas-io/project" are both label_cpaas_io_project`},
		{[]string{"team_a", "team-a", "team.a"}, `"team_a" and "team.a" are both label_team_a`},
	} {
		err := prom.CheckLabelKeys("cpaas.io/project", tc.keys)
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
			t.Errorf("%q: got %v, want %q", tc.keys, err, tc.want)
		}
	}
}
