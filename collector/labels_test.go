package collector_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/alauda/costmeter/collector"
)

func TestParseLabelKeys(t *testing.T) {
	got, err := collector.ParseLabelKeys(" team, cost-center ,example.com/env")
	if err != nil || !reflect.DeepEqual(got, []string{"team", "cost-center", "example.com/env"}) {
		t.Fatalf("got %q, %v", got, err)
	}
	if got, err := collector.ParseLabelKeys(""); err != nil || got != nil {
		t.Fatalf("empty: %q, %v", got, err)
	}
	for in, want := range map[string]string{
		"team,,env":             `label key "": the name is empty`,
		"team,team":             `label key "team" is listed twice`,
		"Example.com/env":       "the prefix must be a lowercase DNS subdomain",
		"team/":                 `label key "team/"`,
		"-team":                 "must start and end with a letter or digit",
		"a,b,c,d,e,f,g,h,i":     "9 label keys, at most 8",
		"/team":                 "the prefix before '/' is empty",
		"team,cost center,x":    `label key "cost center"`,
		strings.Repeat("a", 64): "longer than 63 characters",
	} {
		if _, err := collector.ParseLabelKeys(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error containing %q", in, err, want)
		}
	}
}

func writeMap(t *testing.T, doc string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "map.yaml")
	if err := os.WriteFile(f, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestLabeler: a namespace's own value wins per key; the map's first
// matching glob gives the rest; empty own values count as absent; keys
// that are not configured are never attached.
func TestLabeler(t *testing.T) {
	keys := []string{"team", "example.com/env"}
	l, err := collector.NewLabeler(keys, writeMap(t, `namespaces:
  - namespace: kube-system
    labels: {team: platform, example.com/env: prod}
  - namespace: "kube-*"
    labels: {team: infra}
  - namespace: "*"
    labels: {example.com/env: dev}
`))
	if err != nil {
		t.Fatal(err)
	}
	type labels = map[string]string
	for _, tc := range []struct {
		ns   string
		own  labels
		want labels
	}{
		{"kube-system", nil, labels{"team": "platform", "example.com/env": "prod"}},
		{"kube-system", labels{"team": "sre", "other": "x"}, labels{"team": "sre", "example.com/env": "prod"}},
		{"kube-public", nil, labels{"team": "infra"}}, // first match wins: no env from "*"
		{"shop", labels{"team": "payments"}, labels{"team": "payments", "example.com/env": "dev"}},
		{"shop", labels{"team": "", "example.com/env": "prod"}, labels{"example.com/env": "prod"}},
	} {
		if got := l.Labels(tc.ns, tc.own); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s %v: got %v, want %v", tc.ns, tc.own, got, tc.want)
		}
	}
	none, err := collector.NewLabeler(nil, "")
	if err != nil || none.Labels("shop", labels{"team": "a"}) != nil {
		t.Fatalf("no keys: %v, %v", none.Labels("shop", labels{"team": "a"}), err)
	}
	var nilLabeler *collector.Labeler
	if nilLabeler.Labels("shop", labels{"team": "a"}) != nil || nilLabeler.Keys() != nil {
		t.Fatal("a nil labeler attaches labels")
	}
}

// TestLabelMapStrict: what is wrong in a label map is an error naming
// where.
func TestLabelMapStrict(t *testing.T) {
	keys := []string{"team"}
	for doc, want := range map[string]string{
		"namespaces:\n  - namespace: a\n    labels: {team: x}\n    colour: red\n": "field colour not found",
		"spaces: []\n": "field spaces not found",
		"namespaces:\n  - namespace: A_B\n    labels: {team: x}\n":         "namespaces[0].namespace",
		"namespaces:\n  - namespace: ''\n    labels: {team: x}\n":          "namespaces[0].namespace: empty pattern",
		"namespaces:\n  - namespace: a\n":                                  "namespaces[0].labels: required",
		"namespaces:\n  - namespace: a\n    labels: {owner: x}\n":          `namespaces[0].labels: key "owner" is not one of --allocation-labels (team)`,
		"namespaces:\n  - namespace: a\n    labels: {team: 'no spaces'}\n": `namespaces[0].labels: label "team": value "no spaces"`,
		"namespaces:\n  - namespace: a\n    labels: {team: ''}\n":          "the value is empty",
		"namespaces:\n  - namespace: a\n    labels: {team: x, team: y}\n":  "already defined",
		"namespaces: [\n": "did not find expected",
	} {
		_, err := collector.NewLabeler(keys, writeMap(t, doc))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error containing %q", doc, err, want)
		}
	}
}
