package allocation_test

import (
	"strings"
	"testing"
	"time"

	"github.com/alauda/costmeter/internal/allocation"
	"github.com/alauda/costmeter/internal/rollup"
)

// TestPolicyErrors: every problem of a policy file, each with its exact
// message and path, all at once.
func TestPolicyErrors(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       []string
	}{
		{"unknown top-level field", "shard: {}", []string{`shard: unknown field (known: idle, overheads, shared)`}},
		{"unknown nested field", "shared:\n  namespaces:\n    - {namesapce: kube-system}", []string{
			`shared.namespaces[0].namesapce: unknown field (known: cluster, namespace, split)`,
			`shared.namespaces[0].namespace: required (a namespace name or glob)`}},
		{"unknown label field", "shared:\n  labels:\n    - {key: team, value: [platform]}", []string{
			`shared.labels[0].value: unknown field (known: key, split, values)`,
			`shared.labels[0].values: required (a list of label values)`}},
		{"given twice", "idle: own\nidle: even", []string{`idle: given twice`}},
		{"not a mapping", "- a\n- b", []string{`(document): a mapping is required`}},
		{"not a list", "overheads: {cluster: a}", []string{`overheads: a list is required`}},
		{"bad split", "shared:\n  namespaces:\n    - {namespace: kube-system, split: fair}", []string{`shared.namespaces[0].split: "fair" is not weighted or even`}},
		{"bad idle", "idle: nobody", []string{`idle: "nobody" is not own, weighted or even`}},
		{"bad namespace glob", "shared:\n  namespaces:\n    - {namespace: Kube_System}", []string{
			`shared.namespaces[0].namespace: "Kube_System" is not a namespace name or a glob of one (lowercase DNS labels, '*', '?')`}},
		{"bad cluster glob", "shared:\n  namespaces:\n    - {namespace: kube-system, cluster: 'EU/*'}", []string{
			`shared.namespaces[0].cluster: "EU/*" is not a cluster name or a glob of one (lowercase DNS labels, '.', '*', '?')`}},
		{"empty namespace", "shared:\n  namespaces:\n    - {namespace: ''}", []string{`shared.namespaces[0].namespace: empty (a namespace name or glob is required)`}},
		{"bad label key", "shared:\n  labels:\n    - {key: 'team name', values: [a]}", []string{`shared.labels[0].key: "team name" is not a Kubernetes label key: `}},
		{"bad label value", "shared:\n  labels:\n    - {key: team, values: ['-x']}", []string{`shared.labels[0].values[0]: "-x" is not a Kubernetes label value`}},
		{"no key", "shared:\n  labels:\n    - {values: [a]}", []string{`shared.labels[0].key: required (the label key, as in --allocation-labels)`}},
		{"no values", "shared:\n  labels:\n    - {key: team, values: []}", []string{`shared.labels[0].values: required (a list of label values)`}},
		{"overhead without cluster", "overheads:\n  - {monthly: 10}", []string{`overheads[0].cluster: required (a cluster name or glob)`}},
		{"overhead without amount", "overheads:\n  - {cluster: a}", []string{`overheads[0].monthly: required (an amount per month in the billing currency)`}},
		{"overhead too precise", "overheads:\n  - {cluster: a, monthly: 1200.005}", []string{`overheads[0].monthly: 1200.005 has more than 2 decimal places`}},
		{"overhead negative", "overheads:\n  - {cluster: a, monthly: -5}", []string{`overheads[0].monthly: -5 is negative`}},
		{"overhead not a number", "overheads:\n  - {cluster: a, monthly: lots}", []string{`overheads[0].monthly: "lots" is not a decimal number`}},
		{"overhead a list", "overheads:\n  - {cluster: a, monthly: [1]}", []string{`overheads[0].monthly: a decimal amount is required`}},
		{"overhead too large", "overheads:\n  - {cluster: a, monthly: 10000000000000.01}", []string{`overheads[0].monthly: 10000000000000.01 is above the bound 10000000000000.00`}},
		{"bad yaml", "shared: [", []string{`decode: yaml: line 1: did not find expected node content`}},
		{"every problem at once", "idle: x\nshared:\n  namespaces:\n    - {cluster: a}\noverheads:\n  - {cluster: '', monthly: 1.001}\nextra: 1", []string{
			`idle: "x" is not own, weighted or even`,
			`shared.namespaces[0].namespace: required (a namespace name or glob)`,
			`overheads[0].cluster: empty (a cluster name or glob is required)`,
			`overheads[0].monthly: 1.001 has more than 2 decimal places`,
			`extra: unknown field (known: idle, overheads, shared)`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := allocation.Parse([]byte(tc.body), 2)
			if err == nil {
				t.Fatalf("accepted %s", tc.body)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error:\n%s\ndoes not say %q", err, w)
				}
			}
			if n := strings.Count(err.Error(), "\n") + 1; n != len(tc.want) {
				t.Errorf("%d problems reported, want %d:\n%s", n, len(tc.want), err)
			}
		})
	}
	if _, err := allocation.Parse([]byte(""), 2); err != nil {
		t.Errorf("an empty policy: %v", err)
	}
	if _, err := allocation.Parse([]byte("idle: own"), 7); err == nil {
		t.Error("7 decimals accepted")
	}
}

// TestOverheadSpread: a month's days add up to the monthly amount exactly,
// a 23-hour day carries less than a 24-hour one and a 25-hour day more.
func TestOverheadSpread(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatalf("load Europe/Berlin: %v (install tzdata: apt-get install tzdata)", err)
	}
	p, err := allocation.Parse([]byte(`
overheads:
  - {cluster: "prod-*", name: control-plane, monthly: "1000.00"}
  - {cluster: prod-eu, monthly: "0.07", split: even}
`), 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		month             time.Month
		short, long, norm int // day numbers
	}{{time.March, 29, 0, 28}, {time.October, 0, 25, 24}} {
		first := rollup.DayFromDate(2026, tc.month, 1)
		var sums [2]int64
		amounts := map[int]int64{}
		for d := first; d.Month() == first.Month(); d++ {
			ch := p.Overheads("prod-eu", d, berlin)
			if len(ch) != 2 || ch[0].Name != "control-plane" || ch[1].Name != "overheads[1]" || ch[1].Split != allocation.Even {
				t.Fatalf("%s: %+v", d, ch)
			}
			sums[0] += ch[0].Amount
			sums[1] += ch[1].Amount
			amounts[d.DayOfMonth()] = ch[0].Amount
		}
		if sums[0] != 100000 || sums[1] != 7 {
			t.Errorf("%s: the days add up to %v, want [100000 7]", tc.month, sums)
		}
		if tc.short > 0 && !(amounts[tc.short] < amounts[tc.norm]) {
			t.Errorf("the 23-hour day carries %d, a 24-hour day %d", amounts[tc.short], amounts[tc.norm])
		}
		if tc.long > 0 && !(amounts[tc.long] > amounts[tc.norm]) {
			t.Errorf("the 25-hour day carries %d, a 24-hour day %d", amounts[tc.long], amounts[tc.norm])
		}
	}
	if ch := p.Overheads("dev", rollup.DayFromDate(2026, 3, 1), berlin); len(ch) != 0 {
		t.Errorf("dev has overheads %+v", ch)
	}
}
