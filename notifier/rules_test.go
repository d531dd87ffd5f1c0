package notifier_test

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alauda/costmeter/internal/pipelinetest"
	"github.com/alauda/costmeter/internal/testenv"
	"github.com/alauda/costmeter/notifier"
)

// testSecret is a Standard Webhooks secret of 32 bytes.
var testSecret = "whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

func readFiles(files map[string]string) func(string) ([]byte, error) {
	return func(p string) ([]byte, error) {
		if s, ok := files[p]; ok {
			return []byte(s), nil
		}
		return nil, os.ErrNotExist
	}
}

func TestParseRules(t *testing.T) {
	files := readFiles(map[string]string{
		"/s":     testSecret,
		"/short": "whsec_" + base64.StdEncoding.EncodeToString([]byte("short")),
		"/plain": "not-a-secret",
	})
	good := `rules:
- name: payments-cpu-month
  kind: project
  entity: payments
  item: Cpu
  method: Effective
  period: month
  thresholds: [500, 100]
  webhook: https://hooks.example.internal/cost
  secretFile: /s
- name: ns-mem-week
  kind: namespace
  item: Memory
  method: Usage
  period: week
  budget: 1000
  percent: [50, 80, 100]
  webhook: http://127.0.0.1:9/hook
  secretFile: /s
`
	set, err := notifier.ParseRules([]byte(good), files)
	if err != nil {
		t.Fatalf("good rules: %v", err)
	}
	if len(set.Rules) != 2 || len(set.Warnings) != 0 {
		t.Fatalf("rules %d warnings %v", len(set.Rules), set.Warnings)
	}
	r := set.Rules[0]
	if r.Thresholds[0].Value != 100 || r.Thresholds[1].Value != 500 || r.Thresholds[0].Fixed != 100*3_600_000_000 {
		t.Errorf("thresholds not sorted or scaled: %+v", r.Thresholds)
	}
	p := set.Rules[1].Thresholds
	if len(p) != 3 || p[1].Value != 800 || *p[1].Percent != 80 || *set.Rules[1].Budget != 1000 {
		t.Errorf("percent thresholds: %+v", p)
	}

	groups, err := notifier.ParseRules([]byte(`rules:
- {name: team, kind: group, groupBy: example.com/team, entity: payments, item: Cpu, method: Effective, period: month, budget: 100, percent: [80, 100], webhook: "https://h/x", secretFile: /s}
- {name: unallocated, kind: group, groupBy: team, entity: __unallocated__, item: Memory, method: Effective, period: day, thresholds: [1], webhook: "https://h/x", secretFile: /s}
`), files)
	if err != nil || groups.Rules[0].GroupBy != "example.com/team" || groups.Rules[0].Entity != "payments" || groups.Rules[1].Entity != "__unallocated__" {
		t.Fatalf("group rules: %v %+v", err, groups)
	}

	warn, err := notifier.ParseRules([]byte(strings.Replace(good, "http://127.0.0.1:9/hook", "http://hooks.example.internal/x", 1)), files)
	if err != nil || len(warn.Warnings) != 1 || !strings.Contains(warn.Warnings[0], `rule 2 ("ns-mem-week")`) {
		t.Errorf("plain http to a remote host: err %v warnings %v", err, warn.Warnings)
	}

	cases := []struct {
		name string
		yaml string
		want []string
	}{
		{"unknown field", "rules:\n- name: a\n  kindd: project\n", []string{`unknown field "kindd"`}},
		{"every field broken", `rules:
- name: Bad_Name
  kind: pod
  item: Gpu
  method: Max
  period: year
  thresholds: [0]
  webhook: ftp://x
  secretFile: /missing
`, []string{
			`rule 1 ("Bad_Name"): name: "Bad_Name" is not a lowercase name`,
			`rule 1 ("Bad_Name"): kind: "pod" is not project, namespace, cluster or group`,
			`rule 1 ("Bad_Name"): item: "Gpu" is not Cpu, Memory or Storage`,
			`rule 1 ("Bad_Name"): method: "Max" is not Effective, Request, Usage or ProjectQuota`,
			`rule 1 ("Bad_Name"): period: "year" is not day, week or month`,
			`rule 1 ("Bad_Name"): thresholds: item 1: 0 is not a positive number`,
			`rule 1 ("Bad_Name"): webhook: scheme "ftp" is not http or https`,
			`rule 1 ("Bad_Name"): secretFile: read /missing`,
		}},
		{"second rule missing fields", `rules:
- {name: ok, kind: cluster, item: Cpu, method: Usage, period: day, thresholds: [1], webhook: "https://h/x", secretFile: /s}
- {name: two, kind: cluster, item: Cpu, method: Usage, period: day}
`, []string{
			`rule 2 ("two"): thresholds: required (or budget with percent)`,
			`rule 2 ("two"): webhook: required`,
			`rule 2 ("two"): secretFile: required`,
		}},
		{"both thresholds and budget", `rules:
- {name: a, kind: project, item: Cpu, method: Usage, period: day, thresholds: [1], budget: 5, percent: [10], webhook: "https://h/x", secretFile: /s}
`, []string{`rule 1 ("a"): thresholds: give either thresholds or budget with percent, not both`}},
		{"budget without percent, duplicates, bad secrets", `rules:
- {name: a, kind: project, item: Cpu, method: Usage, period: day, budget: 5, webhook: "https://h/x", secretFile: /short}
- {name: a, kind: project, item: Cpu, method: Usage, period: day, thresholds: [2, 2], webhook: "https://h/x", secretFile: /plain}
- {kind: project, entity: Payments, item: Cpu, method: Usage, period: day, percent: [5], webhook: "https://h/x", secretFile: /s}
`, []string{
			`rule 1 ("a"): percent: required with budget`,
			`rule 1 ("a"): secretFile: /short: the key is 5 bytes, want 24 to 64`,
			`rule 2 ("a"): name: already used by rule 1`,
			`rule 2 ("a"): thresholds: 2 appears twice`,
			`rule 2 ("a"): secretFile: /plain does not hold whsec_<base64>`,
			`rule 3: name: required`,
			`rule 3: entity: "Payments" is not a lowercase DNS label`,
			`rule 3: budget: required with percent`,
		}},
	}
	cases = append(cases, struct {
		name string
		yaml string
		want []string
	}{"group rules broken", `rules:
- {name: a, kind: group, entity: payments, item: Cpu, method: Effective, period: month, thresholds: [1], webhook: "https://h/x", secretFile: /s}
- {name: b, kind: group, groupBy: "bad key", entity: "-x", item: Cpu, method: Effective, period: month, thresholds: [1], webhook: "https://h/x", secretFile: /s}
- {name: c, kind: project, groupBy: team, item: Cpu, method: Effective, period: month, thresholds: [1], webhook: "https://h/x", secretFile: /s}
`, []string{
		`rule 1 ("a"): groupBy: required with kind: group`,
		`rule 2 ("b"): groupBy: label key "bad key"`,
		`rule 2 ("b"): entity: label "bad key": value "-x": must start and end with a letter or digit (a value of bad key, or __unallocated__)`,
		`rule 3 ("c"): groupBy: only with kind: group`,
	}})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := notifier.ParseRules([]byte(c.yaml), files)
			if !errors.Is(err, notifier.ErrInvalidRules) {
				t.Fatalf("err = %v, want ErrInvalidRules", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

// TestRuleEntityNameRule: a rule's entity is held to the samples' name
// rule (sample.CheckName), so a rule that no sample could ever match is
// refused with an error naming the rule, the field and the problem,
// instead of being accepted and never firing. Names a sample can carry
// stay accepted.
func TestRuleEntityNameRule(t *testing.T) {
	files := readFiles(map[string]string{"/s": testSecret})
	rule := func(kind, entity string) string {
		return fmt.Sprintf("rules:\n- {name: r, kind: %s, entity: %q, item: Cpu, method: Usage, period: day, thresholds: [1], webhook: \"https://h/x\", secretFile: /s}\n", kind, entity)
	}
	long := strings.Repeat("a", 253)
	tests := []struct {
		name, kind, entity string
		want               string // "" accepted
	}{
		{name: "253-character cluster", kind: "cluster", entity: long, want: `rule 1 ("r"): entity: longer than 63 characters (a cluster name)`},
		{name: "64-character cluster", kind: "cluster", entity: strings.Repeat("b", 64), want: `rule 1 ("r"): entity: longer than 63 characters (a cluster name)`},
		{name: "double dot cluster", kind: "cluster", entity: "a..b", want: `rule 1 ("r"): entity: "a..b" is not a lowercase DNS label (a-z, 0-9, '-', '.') at byte 2 (a cluster name)`},
		{name: "dot dash cluster", kind: "cluster", entity: "a.-b", want: `rule 1 ("r"): entity: "a.-b" is not a lowercase DNS label (a-z, 0-9, '-', '.') at byte 2 (a cluster name)`},
		{name: "trailing dot cluster", kind: "cluster", entity: "east.", want: `rule 1 ("r"): entity: "east." must end with a letter or digit (a cluster name)`},
		{name: "dotted project", kind: "project", entity: "a.b", want: `rule 1 ("r"): entity: "a.b" is not a lowercase DNS label (a-z, 0-9, '-') at byte 1 (a project name)`},
		{name: "64-character namespace", kind: "namespace", entity: strings.Repeat("n", 64), want: `rule 1 ("r"): entity: longer than 63 characters (a namespace name)`},
		{name: "dotted cluster", kind: "cluster", entity: "east.prod-1"},
		{name: "63-character cluster", kind: "cluster", entity: strings.Repeat("c", 63)},
		{name: "project", kind: "project", entity: "payments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, err := notifier.ParseRules([]byte(rule(tt.kind, tt.entity)), files)
			if tt.want == "" {
				if err != nil || len(set.Rules) != 1 || set.Rules[0].Entity != tt.entity {
					t.Fatalf("ParseRules = %v, %v; want the rule on %q accepted", set, err, tt.entity)
				}
				return
			}
			if !errors.Is(err, notifier.ErrInvalidRules) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v\nwant ErrInvalidRules with %q", err, tt.want)
			}
		})
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	// Write then rename, as a Kubernetes volume update does: the poller
	// never reads half a file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestRulesReloadKeepsPreviousOnBrokenEdit(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, testSecret)
	path := filepath.Join(dir, "rules.yaml")
	rule := func(name string) string {
		return "- {name: " + name + ", kind: project, item: Cpu, method: Usage, period: day, thresholds: [1], webhook: \"https://h/x\", secretFile: " + secret + "}\n"
	}
	writeFile(t, path, "rules:\n"+rule("one"))
	rules, err := notifier.LoadRules(path, 10*time.Millisecond, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	pipelinetest.Start(t, rules)
	writeFile(t, path, "rules:\n"+rule("one")+rule("two"))
	testenv.Eventually(t, 10*time.Second, "the added rule is in force", func() (bool, string) {
		return len(rules.Current().Rules) == 2 && rules.Err() == nil, fmt.Sprint(rules.Err())
	})
	writeFile(t, path, "rules:\n"+rule("one")+"- {name: three, kind: pod}\n")
	testenv.Eventually(t, 10*time.Second, "the broken edit is reported", func() (bool, string) {
		return rules.Err() != nil, "no error"
	})
	if err := rules.Err(); !strings.Contains(err.Error(), `rule 2 ("three"): kind: "pod"`) {
		t.Errorf("reload error: %v", err)
	}
	if n := len(rules.Current().Rules); n != 2 {
		t.Fatalf("after a broken edit %d rules are in force, want the previous 2", n)
	}
	// A rotated secret alone is a change too.
	writeFile(t, path, "rules:\n"+rule("one"))
	testenv.Eventually(t, 10*time.Second, "the fixed file is in force", func() (bool, string) {
		return len(rules.Current().Rules) == 1 && rules.Err() == nil, "not yet"
	})
	rotated := "whsec_" + base64.StdEncoding.EncodeToString([]byte("another key of 32 bytes........."))
	writeFile(t, secret, rotated)
	want, _ := notifier.ParseSecret(rotated)
	testenv.Eventually(t, 10*time.Second, "the rotated secret is in force", func() (bool, string) {
		return string(rules.Current().Rules[0].Secret) == string(want), "old secret"
	})
}
