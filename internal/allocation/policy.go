package allocation

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/alauda/costmeter/internal/glob"
	"github.com/alauda/costmeter/internal/pricing"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
)

// Split is how a shared cost is spread over the groups that carry it.
type Split int

const (
	// Weighted spreads in proportion to each group's Effective quantity of
	// the item (for overheads, which span items: to each group's direct
	// plus shared amount). It is the default.
	Weighted Split = iota
	// Even gives every group the same share.
	Even
)

func (s Split) String() string {
	if s == Even {
		return "even"
	}
	return "weighted"
}

// IdleMode is what becomes of the cost of idle capacity.
type IdleMode int

const (
	// IdleOwn bills idle to its own group, Idle ("__idle__"). The default.
	IdleOwn IdleMode = iota
	// IdleWeighted spreads idle over the groups weighted by Effective.
	IdleWeighted
	// IdleEven spreads idle evenly over the groups.
	IdleEven
)

func (m IdleMode) String() string {
	return [...]string{"own", "weighted", "even"}[m]
}

// Policy is a checked allocation policy file:
//
//	shared:
//	  namespaces:                  # the platform's own namespaces
//	    - namespace: kube-system   # glob, required
//	      cluster: "*"             # glob, default: every cluster
//	      split: weighted          # weighted (default) | even
//	  labels:                      # groups whose cost is shared
//	    - key: team                # the groupBy key it applies to
//	      values: [platform]       # exact label values
//	      split: even
//	idle: own                      # own (default: the __idle__ group) | weighted | even
//	overheads:                     # fixed costs per cluster and month
//	  - cluster: "prod-*"          # glob, required; every matching row applies
//	    name: control-plane        # optional, shown in the bill
//	    monthly: "1200.00"         # billing currency, at most the price list's decimals
//	    split: weighted            # weighted (default) | even
//
// A namespace is shared by the first namespace rule that matches its
// cluster and name, else by the first label rule of the bill's groupBy key
// that lists its group. The nil *Policy shares nothing, bills idle to
// __idle__ and has no overheads.
type Policy struct {
	namespaces []namespaceRule
	labels     []labelRule
	idle       IdleMode
	overheads  []overheadRule
	decimals   int
}

type namespaceRule struct {
	cluster, namespace glob.Pattern
	split              Split
}

type labelRule struct {
	key    string
	values []string
	split  Split
}

type overheadRule struct {
	name    string
	cluster glob.Pattern
	monthly int64 // printed units (10^-decimals)
	split   Split
}

// Load reads and checks a policy file; decimals is the price list's printed
// precision (pricing.List.Decimals), the unit of its overheads.
func Load(path string, decimals int) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read allocation policy: %w", err)
	}
	p, err := Parse(b, decimals)
	if err != nil {
		return nil, fmt.Errorf("allocation policy %s: %w", path, err)
	}
	return p, nil
}

// Parse checks a policy file strictly: an unknown field is an error naming
// its path (a misspelt "namespace" would silently share nothing), and
// every problem is reported, each with its path (shared.namespaces[2].split).
func Parse(b []byte, decimals int) (*Policy, error) {
	if decimals < 0 || decimals > pricing.MaxDecimals {
		return nil, fmt.Errorf("decimals %d is not between 0 and %d", decimals, pricing.MaxDecimals)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	p := &Policy{decimals: decimals}
	r := &reader{}
	if len(doc.Content) == 1 {
		r.fields(doc.Content[0], "", map[string]func(*yaml.Node, string){
			"shared": func(n *yaml.Node, path string) {
				r.fields(n, path, map[string]func(*yaml.Node, string){
					"namespaces": func(n *yaml.Node, path string) {
						r.list(n, path, func(n *yaml.Node, path string) { p.namespaceRule(r, n, path) })
					},
					"labels": func(n *yaml.Node, path string) {
						r.list(n, path, func(n *yaml.Node, path string) { p.labelRule(r, n, path) })
					},
				})
			},
			"idle": func(n *yaml.Node, path string) {
				switch s := r.str(n, path); s {
				case "own":
					p.idle = IdleOwn
				case "weighted":
					p.idle = IdleWeighted
				case "even":
					p.idle = IdleEven
				default:
					r.fail(path, "%q is not own, weighted or even", s)
				}
			},
			"overheads": func(n *yaml.Node, path string) {
				r.list(n, path, func(n *yaml.Node, path string) { p.overheadRule(r, n, path) })
			},
		})
	}
	if err := errors.Join(r.errs...); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Policy) namespaceRule(r *reader, n *yaml.Node, path string) {
	rule := namespaceRule{}
	var ok bool
	rule.cluster, _ = glob.Compile("*", nil)
	seen := r.fields(n, path, map[string]func(*yaml.Node, string){
		"namespace": func(n *yaml.Node, path string) {
			rule.namespace, ok = r.pattern(n, path, sample.NameNamespace)
		},
		"cluster": func(n *yaml.Node, path string) {
			if c, ok := r.pattern(n, path, sample.NameCluster); ok {
				rule.cluster = c
			}
		},
		"split": func(n *yaml.Node, path string) { rule.split = r.split(n, path) },
	})
	if seen != nil && !seen["namespace"] {
		r.fail(path+".namespace", "required (a namespace name or glob)")
	}
	if ok {
		p.namespaces = append(p.namespaces, rule)
	}
}

func (p *Policy) labelRule(r *reader, n *yaml.Node, path string) {
	rule := labelRule{}
	seen := r.fields(n, path, map[string]func(*yaml.Node, string){
		"key": func(n *yaml.Node, path string) {
			rule.key = r.str(n, path)
			if errs := validation.IsQualifiedName(rule.key); len(errs) > 0 && rule.key != "" {
				r.fail(path, "%q is not a Kubernetes label key: %s", rule.key, strings.Join(errs, "; "))
			}
		},
		"values": func(n *yaml.Node, path string) {
			r.list(n, path, func(n *yaml.Node, path string) {
				v := r.str(n, path)
				if errs := validation.IsValidLabelValue(v); len(errs) > 0 || v == "" {
					r.fail(path, "%q is not a Kubernetes label value", v)
					return
				}
				rule.values = append(rule.values, v)
			})
		},
		"split": func(n *yaml.Node, path string) { rule.split = r.split(n, path) },
	})
	if seen == nil {
		return
	}
	if !seen["key"] || rule.key == "" {
		r.fail(path+".key", "required (the label key, as in --allocation-labels)")
	}
	if !seen["values"] || len(rule.values) == 0 && len(r.errs) == 0 {
		r.fail(path+".values", "required (a list of label values)")
	}
	p.labels = append(p.labels, rule)
}

func (p *Policy) overheadRule(r *reader, n *yaml.Node, path string) {
	rule := overheadRule{}
	var ok bool
	seen := r.fields(n, path, map[string]func(*yaml.Node, string){
		"cluster": func(n *yaml.Node, path string) { rule.cluster, ok = r.pattern(n, path, sample.NameCluster) },
		"name":    func(n *yaml.Node, path string) { rule.name = r.str(n, path) },
		"monthly": func(n *yaml.Node, path string) {
			if n.Kind != yaml.ScalarNode {
				r.fail(path, "a decimal amount is required")
				return
			}
			v, err := pricing.ParseDecimal(n.Value, p.decimals, maxMonthly)
			if err != nil {
				r.fail(path, "%v", err)
				return
			}
			rule.monthly = v
		},
		"split": func(n *yaml.Node, path string) { rule.split = r.split(n, path) },
	})
	if seen == nil {
		return
	}
	if !seen["cluster"] {
		r.fail(path+".cluster", "required (a cluster name or glob)")
	}
	if !seen["monthly"] {
		r.fail(path+".monthly", "required (an amount per month in the billing currency)")
	}
	if ok {
		p.overheads = append(p.overheads, rule)
	}
}

// maxMonthly bounds an overhead: 10^15 printed units a month keeps every
// day's sum of overheads and capacity cost far inside int64.
const maxMonthly = 1_000_000_000_000_000

// reader walks a YAML document, collecting every problem with its path.
type reader struct{ errs []error }

func (r *reader) fail(path, format string, args ...any) {
	r.errs = append(r.errs, fmt.Errorf("%s: "+format, append([]any{strings.TrimPrefix(path, ".")}, args...)...))
}

// fields reads a mapping, handing each known key's value to its function
// in file order; unknown and repeated keys are errors. It returns the keys
// seen, nil when n is not a mapping.
func (r *reader) fields(n *yaml.Node, path string, known map[string]func(*yaml.Node, string)) map[string]bool {
	if n.Kind != yaml.MappingNode {
		if n.Tag == "!!null" {
			return map[string]bool{}
		}
		r.fail(orRoot(path), "a mapping is required")
		return nil
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i].Value, n.Content[i+1]
		sub := path + "." + k
		f, ok := known[k]
		switch {
		case !ok:
			names := make([]string, 0, len(known))
			for name := range known {
				names = append(names, name)
			}
			slices.Sort(names)
			r.fail(sub, "unknown field (known: %s)", strings.Join(names, ", "))
		case seen[k]:
			r.fail(sub, "given twice")
		default:
			seen[k] = true
			f(v, sub)
		}
	}
	return seen
}

func orRoot(path string) string {
	if path == "" {
		return "(document)"
	}
	return path
}

func (r *reader) list(n *yaml.Node, path string, each func(*yaml.Node, string)) {
	if n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.SequenceNode {
		r.fail(path, "a list is required")
		return
	}
	for i, c := range n.Content {
		each(c, fmt.Sprintf("%s[%d]", path, i))
	}
}

func (r *reader) str(n *yaml.Node, path string) string {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		r.fail(path, "a string is required")
		return ""
	}
	return n.Value
}

func (r *reader) split(n *yaml.Node, path string) Split {
	switch s := r.str(n, path); s {
	case "weighted":
		return Weighted
	case "even":
		return Even
	case "":
		return Weighted
	default:
		r.fail(path, "%q is not weighted or even", s)
		return Weighted
	}
}

// pattern reads a glob of names of kind what (sample.NameCluster,
// NameNamespace).
func (r *reader) pattern(n *yaml.Node, path, what string) (glob.Pattern, bool) {
	s := r.str(n, path)
	if s == "" {
		if n.Kind == yaml.ScalarNode {
			r.fail(path, "empty (a %s name or glob is required)", what)
		}
		return glob.Pattern{}, false
	}
	g, err := glob.Compile(s, func(name string) error { return sample.CheckName(what, name) })
	if err != nil {
		r.fail(path, "%q is not a %s name or a glob of one (lowercase DNS labels%s, '*', '?')", s, what, map[bool]string{true: ", '.'"}[what == sample.NameCluster])
		return glob.Pattern{}, false
	}
	return g, true
}

// Idle is what the policy does with idle capacity.
func (p *Policy) Idle() IdleMode {
	if p == nil {
		return IdleOwn
	}
	return p.idle
}

// Decimals is the printed precision the policy's amounts were read in.
func (p *Policy) Decimals() int {
	if p == nil {
		return pricing.DefaultDecimals
	}
	return p.decimals
}

// Shared tells whether the namespace of cluster with value group of the
// key groupBy is shared under the policy, by which rule ("namespaces[0]",
// "labels[1]") and how its cost is split: the engine's rule, for the
// exporter's split allocations.
func (p *Policy) Shared(cluster, namespace, groupBy, group string) (rule string, split Split, ok bool) {
	rule, _, split, ok = p.shared(cluster, namespace, groupBy, group)
	return rule, split, ok
}

// shared returns the pool a namespace of cluster with label value group
// (for key groupBy) belongs to, and false when it is not shared. Pools are
// named for their rule ("namespaces[0]", "labels[1]") and ordered
// namespace rules first, each kind in file order.
func (p *Policy) shared(cluster, namespace, groupBy, group string) (pool string, order int, split Split, ok bool) {
	if p == nil {
		return "", 0, 0, false
	}
	for i, r := range p.namespaces {
		if r.cluster.Match(cluster) && r.namespace.Match(namespace) {
			return fmt.Sprintf("namespaces[%d]", i), i, r.split, true
		}
	}
	for i, r := range p.labels {
		if r.key == groupBy && slices.Contains(r.values, group) {
			return fmt.Sprintf("labels[%d]", i), len(p.namespaces) + i, r.split, true
		}
	}
	return "", 0, 0, false
}

// Charge is one overhead's part of one cluster-day.
type Charge struct {
	// Name is the overhead's name, or "overheads[i]" when it has none.
	Name string
	// Amount is in printed units (10^-Decimals of the currency).
	Amount int64
	Split  Split
}

// Overheads returns the overheads of cluster on day d: each matching row's
// monthly amount spread over the month's days in proportion to their
// length in the billing zone loc (a 23-hour DST day carries 23/24 of a
// 24-hour one), by largest remainder (ties to the earlier day), so the
// days of every month add up to the monthly amount exactly.
func (p *Policy) Overheads(cluster string, d rollup.Day, loc *time.Location) []Charge {
	if p == nil {
		return nil
	}
	var out []Charge
	for i, r := range p.overheads {
		if !r.cluster.Match(cluster) {
			continue
		}
		name := r.name
		if name == "" {
			name = fmt.Sprintf("overheads[%d]", i)
		}
		out = append(out, Charge{Name: name, Amount: spreadOverMonth(r.monthly, d, loc), Split: r.split})
	}
	return out
}

// spreadOverMonth is day d's part of amount spread over its month.
func spreadOverMonth(amount int64, d rollup.Day, loc *time.Location) int64 {
	first := d - rollup.Day(d.DayOfMonth()-1)
	var weights []uint64
	for x := first; x.Month() == d.Month(); x++ {
		weights = append(weights, uint64((x+1).Start(loc).Sub(x.Start(loc))/time.Second))
	}
	parts := largestRemainder(amount, weights)
	return parts[d-first]
}
