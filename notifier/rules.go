package notifier

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/alauda/costmeter/internal/allocation"
	"github.com/alauda/costmeter/internal/event"
	"github.com/alauda/costmeter/internal/filewatch"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
)

// RuleSpec is one rule as written in the rules file:
//
//	rules:
//	- name: payments-cpu-month   # unique in the file
//	  kind: project              # project | namespace | cluster | group
//	  entity: payments           # omit for every entity of the kind
//	  # kind: group needs groupBy: a kept label key (the aggregator's
//	  # --allocation-labels); entity is then a value of it (a team)
//	  groupBy: team
//	  item: Cpu                  # Cpu | Memory | Storage
//	  method: Effective          # Effective | Request | Usage | ProjectQuota
//	  period: month              # day | week (ISO) | month
//	  thresholds: [100, 500]     # in the item's unit (core-hours, GiB-hours)
//	  # or: budget: 1000 with percent: [50, 80, 100]
//	  webhook: https://hooks.example.internal/cost
//	  secretFile: /etc/cost/webhook-secret   # whsec_<base64>
type RuleSpec struct {
	Name       string    `json:"name"`
	Kind       string    `json:"kind"`
	Entity     string    `json:"entity,omitempty"`
	GroupBy    string    `json:"groupBy,omitempty"`
	Item       string    `json:"item"`
	Method     string    `json:"method"`
	Period     string    `json:"period"`
	Thresholds []float64 `json:"thresholds,omitempty"`
	Budget     *float64  `json:"budget,omitempty"`
	Percent    []float64 `json:"percent,omitempty"`
	Webhook    string    `json:"webhook"`
	SecretFile string    `json:"secretFile"`
}

// RulesFile is the whole rules file.
type RulesFile struct {
	Rules []RuleSpec `json:"rules"`
}

// Period is the length of the period a rule totals.
type Period string

// The periods. Weeks are ISO weeks (Monday to Sunday), months calendar
// months; both are made of the billing zone's days, as the events carry
// them, so the notifier needs no time zone of its own.
const (
	PeriodDay   Period = "day"
	PeriodWeek  Period = "week"
	PeriodMonth Period = "month"
)

// Threshold is one level of a rule.
type Threshold struct {
	// Value is in the item's unit-hours (for a percent rule budget ×
	// percent / 100).
	Value float64
	// Fixed is Value in the rollups' fixed point (millionths of a
	// unit-second, rollup.Scale), rounded to the nearest: the period total
	// crosses it when total >= Fixed. It also identifies the threshold in
	// Redis and in event ids.
	Fixed int64
	// Percent is set on percent rules.
	Percent *float64
}

// Rule is a checked rule, ready to evaluate.
type Rule struct {
	Name   string
	Kind   string // event.KindProject, KindNamespace, KindCluster or KindGroup
	Entity string // "" for every entity of the kind
	// GroupBy is the label key of a group rule (Entity is then a value).
	GroupBy string
	Item    rollup.Item
	Method  rollup.Method
	Period  Period
	// Thresholds are sorted by Fixed, without duplicates.
	Thresholds []Threshold
	Budget     *float64
	Webhook    string
	// Secret is the decoded signing key of the webhook.
	Secret []byte
}

// Matches reports whether the rule totals ev's entity and item.
func (r *Rule) Matches(ev *event.Event) bool {
	if ev.Kind != r.Kind || ev.Item != r.Item.String() {
		return false
	}
	if r.Kind == event.KindGroup && ev.GroupBy != r.GroupBy {
		return false
	}
	if r.Entity == "" {
		return true
	}
	switch r.Kind {
	case event.KindGroup:
		return ev.Group == r.Entity
	case event.KindProject:
		return ev.Project == r.Entity
	case event.KindCluster:
		return ev.Cluster == r.Entity
	default:
		return ev.Namespace == r.Entity
	}
}

// value is the rule's method's day total in ev.
func (r *Rule) value(ev *event.Event) int64 {
	switch r.Method {
	case rollup.Usage:
		return ev.Fixed.Usage
	case rollup.Request:
		return ev.Fixed.Request
	case rollup.ProjectQuota:
		return ev.Fixed.ProjectQuota
	default:
		return ev.Fixed.Effective
	}
}

// RuleSet is the rules in force, in file order.
type RuleSet struct {
	Rules []*Rule
	// Warnings are accepted oddities (plain-http webhooks to other hosts).
	Warnings []string
}

// Rule returns the rule named name.
func (s *RuleSet) Rule(name string) (*Rule, bool) {
	if s == nil {
		return nil, false
	}
	for _, r := range s.Rules {
		if r.Name == name {
			return r, true
		}
	}
	return nil, false
}

// ruleName is the rule of rule and consumer names: they name no entity,
// so they are not held to sample.CheckName, and may hold dots.
var ruleName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$`)

// ErrInvalidRules is wrapped by every problem of a rules file.
var ErrInvalidRules = errors.New("invalid rules")

// secretPrefix starts a Standard Webhooks signing secret.
const secretPrefix = "whsec_"

// maxThreshold is the largest threshold accepted, in unit-hours: its fixed
// point (× 3.6e9) stays far below the int64 limit.
const maxThreshold = 1e9

// ParseRules decodes and checks a rules file strictly (unknown fields are
// errors: a misspelt field would silently never alert) and reads every
// rule's secret file through readFile. Every problem is reported, each
// naming the rule's index (from 1), name and field.
func ParseRules(data []byte, readFile func(string) ([]byte, error)) (*RuleSet, error) {
	var f RulesFile
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return nil, fmt.Errorf("%w: decode: %w", ErrInvalidRules, err)
	}
	set := &RuleSet{}
	var errs []error
	seen := map[string]int{}
	for i, spec := range f.Rules {
		r, warn, rerrs := checkRule(spec, readFile)
		where := fmt.Sprintf("rule %d", i+1)
		if spec.Name != "" {
			where += fmt.Sprintf(" (%q)", spec.Name)
		}
		for _, e := range rerrs {
			errs = append(errs, fmt.Errorf("%s: %w", where, e))
		}
		if prev, dup := seen[spec.Name]; dup && spec.Name != "" {
			errs = append(errs, fmt.Errorf("%s: name: already used by rule %d", where, prev))
		}
		seen[spec.Name] = i + 1
		if warn != "" {
			set.Warnings = append(set.Warnings, where+": "+warn)
		}
		if len(rerrs) == 0 {
			set.Rules = append(set.Rules, r)
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w:\n%w", ErrInvalidRules, errors.Join(errs...))
	}
	return set, nil
}

func checkRule(s RuleSpec, readFile func(string) ([]byte, error)) (*Rule, string, []error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	r := &Rule{Name: s.Name, Kind: s.Kind, Entity: s.Entity, GroupBy: s.GroupBy, Period: Period(s.Period), Webhook: s.Webhook, Budget: s.Budget}
	switch {
	case s.Name == "":
		bad("name", "required")
	case !ruleName.MatchString(s.Name):
		bad("name", "%q is not a lowercase name (a-z, 0-9, '-', '.'; at most 63 characters)", s.Name)
	}
	switch s.Kind {
	case event.KindProject, event.KindNamespace, event.KindCluster:
		// The name rule of the samples: an entity no sample can carry
		// would never fire.
		if err := sample.CheckName(s.Kind, s.Entity); s.Entity != "" && err != nil {
			bad("entity", "%s (a %s name)", strings.TrimPrefix(err.Error(), s.Kind+": "), s.Kind)
		}
		if s.GroupBy != "" {
			bad("groupBy", "only with kind: group")
		}
	case event.KindGroup:
		if s.GroupBy == "" {
			bad("groupBy", "required with kind: group (a label key the aggregator keeps, such as team)")
		} else if err := sample.CheckLabelKey(s.GroupBy); err != nil {
			bad("groupBy", "%v", err)
		}
		// A value of the key, or the group of the namespaces without it.
		if s.Entity != "" && s.Entity != allocation.UnallocatedGroup {
			if err := sample.CheckLabelValue(s.GroupBy, s.Entity); err != nil {
				bad("entity", "%v (a value of %s, or %s)", err, s.GroupBy, allocation.UnallocatedGroup)
			}
		}
	case "":
		bad("kind", "required: project, namespace, cluster or group")
	default:
		bad("kind", "%q is not project, namespace, cluster or group", s.Kind)
	}
	var ok bool
	if r.Item, ok = rollup.ParseItem(s.Item); !ok {
		bad("item", "%s", oneOf(s.Item, "Cpu, Memory or Storage"))
	}
	if r.Method, ok = rollup.ParseMethod(s.Method); !ok {
		bad("method", "%s", oneOf(s.Method, "Effective, Request, Usage or ProjectQuota"))
	}
	switch r.Period {
	case PeriodDay, PeriodWeek, PeriodMonth:
	case "":
		bad("period", "required: day, week or month")
	default:
		bad("period", "%q is not day, week or month", s.Period)
	}
	r.Thresholds, errs = thresholds(s, errs)
	warn, err := checkWebhook(s.Webhook)
	if err != nil {
		bad("webhook", "%v", err)
	}
	if s.SecretFile == "" {
		bad("secretFile", "required (a file holding whsec_<base64>)")
	} else if secret, err := readSecret(s.SecretFile, readFile); err != nil {
		bad("secretFile", "%v", err)
	} else {
		r.Secret = secret
	}
	return r, warn, errs
}

func oneOf(got, want string) string {
	if got == "" {
		return "required: " + want
	}
	return fmt.Sprintf("%q is not %s", got, want)
}

func thresholds(s RuleSpec, errs []error) ([]Threshold, []error) {
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	var out []Threshold
	add := func(field string, i int, v float64, pct *float64) {
		switch {
		case math.IsNaN(v) || math.IsInf(v, 0) || v <= 0:
			bad(field, "item %d: %v is not a positive number", i+1, v)
		case v > maxThreshold:
			bad(field, "item %d: %v is above %g", i+1, v, float64(maxThreshold))
		default:
			out = append(out, Threshold{Value: v, Fixed: int64(math.Round(v * rollup.Scale * rollup.UnitSecondsPerHour)), Percent: pct})
		}
	}
	switch {
	case len(s.Thresholds) > 0 && (s.Budget != nil || len(s.Percent) > 0):
		bad("thresholds", "give either thresholds or budget with percent, not both")
	case len(s.Thresholds) > 0:
		for i, v := range s.Thresholds {
			add("thresholds", i, v, nil)
		}
	case s.Budget != nil && len(s.Percent) == 0:
		bad("percent", "required with budget (for example [50, 80, 100])")
	case s.Budget == nil && len(s.Percent) > 0:
		bad("budget", "required with percent")
	case s.Budget != nil:
		b := *s.Budget
		if math.IsNaN(b) || math.IsInf(b, 0) || b <= 0 || b > maxThreshold {
			bad("budget", "%v is not a positive number up to %g", b, float64(maxThreshold))
			break
		}
		for i, p := range s.Percent {
			if math.IsNaN(p) || p <= 0 || p > 1000 {
				bad("percent", "item %d: %v is not within (0, 1000]", i+1, p)
				continue
			}
			pct := p
			add("percent", i, b*p/100, &pct)
		}
	default:
		bad("thresholds", "required (or budget with percent)")
	}
	slices.SortFunc(out, func(a, b Threshold) int { return compareInt64(a.Fixed, b.Fixed) })
	for i := 1; i < len(out); i++ {
		if out[i].Fixed == out[i-1].Fixed {
			field := "thresholds"
			if out[i].Percent != nil {
				field = "percent"
			}
			bad(field, "%v appears twice", out[i].Value)
		}
	}
	return out, errs
}

func compareInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// checkWebhook accepts https URLs, and http URLs with a warning when the
// host is not loopback (the body and signature travel in clear).
func checkWebhook(raw string) (string, error) {
	if raw == "" {
		return "", errors.New("required (an https:// URL)")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return "", fmt.Errorf("%q is not an absolute http(s) URL", raw)
	}
	switch u.Scheme {
	case "https":
		return "", nil
	case "http":
		if isLoopback(u.Hostname()) {
			return "", nil
		}
		return fmt.Sprintf("webhook %s is plain http to a host that is not loopback: payloads and signatures travel unencrypted", u.Redacted()), nil
	}
	return "", fmt.Errorf("scheme %q is not http or https", u.Scheme)
}

func isLoopback(host string) bool {
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// readSecret reads a Standard Webhooks secret: "whsec_" and the base64 of
// 24 to 64 random bytes, surrounding whitespace ignored.
func readSecret(path string, readFile func(string) ([]byte, error)) ([]byte, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	s := strings.TrimSpace(string(data))
	if !strings.HasPrefix(s, secretPrefix) {
		return nil, fmt.Errorf("%s does not hold whsec_<base64> (Standard Webhooks)", path)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, secretPrefix))
	if err != nil {
		return nil, fmt.Errorf("%s: the part after whsec_ is not standard base64", path)
	}
	if len(key) < 24 || len(key) > 64 {
		return nil, fmt.Errorf("%s: the key is %d bytes, want 24 to 64", path, len(key))
	}
	return key, nil
}

// DefaultRulesPoll is how often the rules file is checked for changes.
const DefaultRulesPoll = filewatch.DefaultPoll

// Rules holds the rules in force and reloads them when the rules file or
// one of its secret files changes. A broken edit keeps the previous rules
// in force and is logged.
type Rules struct {
	w *filewatch.Watcher[*RuleSet]
}

// LoadRules loads path; a missing or broken file is an error naming every
// broken rule and field (the process exits 2 on it).
func LoadRules(path string, poll time.Duration, log *slog.Logger) (*Rules, error) {
	w, err := filewatch.New(filewatch.Config[*RuleSet]{
		What: "rules file", Path: path, Poll: poll, Parse: ParseRules,
		Reloaded: func(ctx context.Context, log *slog.Logger, set *RuleSet) {
			log.InfoContext(ctx, "rules file reloaded", "path", path, "rules", len(set.Rules))
			for _, w := range set.Warnings {
				log.WarnContext(ctx, w)
			}
		},
	}, log)
	if err != nil {
		return nil, err
	}
	return &Rules{w: w}, nil
}

// StaticRules holds a fixed rule set (tests, embedding).
func StaticRules(set *RuleSet) *Rules { return &Rules{w: filewatch.Static(set)} }

// Current returns the rules in force.
func (r *Rules) Current() *RuleSet { return r.w.Current() }

// Err is the problem of the last reload: nil when the rules in force are
// the file on disk.
func (r *Rules) Err() error { return r.w.Err() }

// Run polls the rules file until ctx ends; it returns nil then.
func (r *Rules) Run(ctx context.Context) error { return r.w.Run(ctx) }
