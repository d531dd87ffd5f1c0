// Package pricing is the price list: what a unit-hour of an item and
// method costs on a cluster on a day, read exactly from a YAML (or JSON)
// file, and the exact arithmetic that turns rollup quantities into money.
//
// The file:
//
//	currency: EUR       # optional; when given it must be the API's --currency
//	decimals: 2         # printed precision of bills, 0..6 (default 2: cents)
//	prices:
//	  - item: Cpu           # Cpu, Memory, Storage
//	    method: Effective   # Effective, Request, Usage, ProjectQuota
//	    from: "2025-01-01"  # first day, billing time zone
//	    price: 0.35         # per core-hour (GiB-hour), at most 9 decimals
//	  - item: Cpu
//	    method: Effective
//	    cluster: gpu-*      # optional: an exact cluster name or a glob
//	    from: "2025-01-01"
//	    price: "1.10"
//
// Which row prices a cluster: the most specific rows that name it (an
// exact name beats any glob; among globs the one with more literal
// characters; rows without a cluster come last) and, among the rows of
// that cluster pattern, the one in force that day (the latest from-date on
// or before it). A pattern whose first row starts later than the day does
// not apply on that day: the next less specific one does. Two globs of the
// same item and method with as many literal characters that some cluster
// name matches both are refused at load, naming both rows. A day before
// any applicable price costs 0; an item and method with no price at all
// gives rows without cost.
package pricing

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/alauda/costmeter/internal/glob"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
)

// DefaultDecimals is the printed precision when the file gives none.
const DefaultDecimals = 2

// MaxDecimals bounds the printed precision: bills are int64 counts of
// 10^-decimals currency units (see Amount).
const MaxDecimals = 6

// List is a checked price list. The nil *List has no prices.
type List struct {
	currency string
	decimals int
	// fields maps rollup.Field(item, method) to its patterns, most
	// specific first.
	fields map[int][]*tier
}

// tier is one cluster pattern's prices of one item and method.
type tier struct {
	// key identifies the tier in a field: the cluster as written ("" for
	// every cluster). A GPU model would join it here.
	key     string
	pattern glob.Pattern
	all     bool // no cluster named: every cluster
	points  []point
}

type point struct {
	from  rollup.Day
	price Price
	row   int // index in the file, for errors
}

// rowSpec is one row as written. New dimensions (a GPU model) are new
// optional fields here and in tier's key.
type rowSpec struct {
	Item    string       `json:"item"`
	Method  string       `json:"method"`
	Cluster string       `json:"cluster,omitempty"`
	From    string       `json:"from"`
	Price   *DecimalText `json:"price"`
}

type fileSpec struct {
	Currency string    `json:"currency,omitempty"`
	Decimals *int      `json:"decimals,omitempty"`
	Prices   []rowSpec `json:"prices"`
}

// Load reads and checks a price list file.
func Load(path string) (*List, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read price list: %w", err)
	}
	l, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("price list %s: %w", path, err)
	}
	return l, nil
}

var currencyCode = regexp.MustCompile(`^[A-Z]{3}$`)

// Parse parses a price list (see the package comment) strictly (unknown
// fields are errors) and reports every problem, each naming its row.
func Parse(b []byte) (*List, error) {
	var f fileSpec
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	l := &List{currency: f.Currency, decimals: DefaultDecimals, fields: map[int][]*tier{}}
	var errs []error
	if f.Currency != "" && !currencyCode.MatchString(f.Currency) {
		errs = append(errs, fmt.Errorf("currency: %q is not an ISO 4217 code (three capital letters)", f.Currency))
	}
	if f.Decimals != nil {
		if *f.Decimals < 0 || *f.Decimals > MaxDecimals {
			errs = append(errs, fmt.Errorf("decimals: %d is not between 0 and %d", *f.Decimals, MaxDecimals))
		} else {
			l.decimals = *f.Decimals
		}
	}
	for i, e := range f.Prices {
		if err := l.add(i, e); err != nil {
			errs = append(errs, err)
		}
	}
	for field, tiers := range l.fields {
		errs = append(errs, sortTiers(field, tiers)...)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return l, nil
}

// add checks row i and files it under its item, method and cluster.
func (l *List) add(i int, e rowSpec) error {
	var errs []error
	it, ok := rollup.ParseItem(e.Item)
	if !ok {
		errs = append(errs, fmt.Errorf("prices[%d].item: %q is not Cpu, Memory or Storage", i, e.Item))
	}
	m, ok2 := rollup.ParseMethod(e.Method)
	if !ok2 {
		errs = append(errs, fmt.Errorf("prices[%d].method: %q is not Effective, Request, Usage or ProjectQuota", i, e.Method))
	}
	t, err := time.Parse(time.DateOnly, e.From)
	if err != nil {
		errs = append(errs, fmt.Errorf("prices[%d].from: %q is not a date YYYY-MM-DD", i, e.From))
	}
	var price int64
	if e.Price == nil {
		errs = append(errs, fmt.Errorf("prices[%d].price: required, a decimal number >= 0", i))
	} else if price, err = ParseDecimal(string(*e.Price), PriceDecimals, int64(MaxPrice)); err != nil {
		errs = append(errs, fmt.Errorf("prices[%d].price: %w", i, err))
	}
	var pat glob.Pattern
	if e.Cluster != "" {
		if pat, err = glob.Compile(e.Cluster, func(s string) error { return sample.CheckName(sample.NameCluster, s) }); err != nil {
			errs = append(errs, fmt.Errorf("prices[%d].cluster: %q is not a cluster name or a glob of one (lowercase DNS labels, '.', '*', '?')", i, e.Cluster))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	f := rollup.Field(it, m)
	var tr *tier
	for _, x := range l.fields[f] {
		if x.key == e.Cluster {
			tr = x
		}
	}
	if tr == nil {
		tr = &tier{key: e.Cluster, pattern: pat, all: e.Cluster == ""}
		l.fields[f] = append(l.fields[f], tr)
	}
	tr.points = append(tr.points, point{from: rollup.DayFromDate(t.Date()), price: Price(price), row: i})
	return nil
}

// rank orders tiers: exact names first, then globs by literal characters,
// then the rows for every cluster.
func (t *tier) rank() int {
	switch {
	case t.all:
		return -1
	case t.pattern.IsLiteral():
		return 1 << 20
	default:
		return t.pattern.Literals()
	}
}

// sortTiers puts a field's tiers in order and their points by date, and
// reports duplicate dates and ambiguous globs.
func sortTiers(field int, tiers []*tier) []error {
	var errs []error
	what := fmt.Sprintf("%s %s", rollup.Item(field/len(rollup.Methods())), rollup.Method(field%len(rollup.Methods())))
	for _, t := range tiers {
		sort.SliceStable(t.points, func(a, b int) bool { return t.points[a].from < t.points[b].from })
		for i := 1; i < len(t.points); i++ {
			if t.points[i].from == t.points[i-1].from {
				errs = append(errs, fmt.Errorf("prices[%d] and prices[%d]: two prices of %s%s from %s",
					t.points[i-1].row, t.points[i].row, what, clusterNote(t), t.points[i].from))
			}
		}
	}
	sort.SliceStable(tiers, func(a, b int) bool {
		if ra, rb := tiers[a].rank(), tiers[b].rank(); ra != rb {
			return ra > rb
		}
		return tiers[a].key < tiers[b].key
	})
	for i, a := range tiers {
		for _, b := range tiers[i+1:] {
			if a.all || b.all || a.pattern.IsLiteral() || b.pattern.IsLiteral() || a.rank() != b.rank() {
				continue
			}
			if a.pattern.Overlaps(b.pattern) {
				errs = append(errs, fmt.Errorf("prices[%d] (cluster %q) and prices[%d] (cluster %q): both match some cluster names with the same specificity (%d literal characters) for %s; make one of them more specific",
					a.points[0].row, a.key, b.points[0].row, b.key, a.rank(), what))
			}
		}
	}
	return errs
}

func clusterNote(t *tier) string {
	if t.all {
		return ""
	}
	return fmt.Sprintf(" on cluster %q", t.key)
}

// Currency is the currency the file names, "" when it names none (the
// API's --currency then applies).
func (l *List) Currency() string {
	if l == nil {
		return ""
	}
	return l.currency
}

// Decimals is the printed precision of bills: amounts are counts of
// 10^-Decimals currency units.
func (l *List) Decimals() int {
	if l == nil {
		return DefaultDecimals
	}
	return l.decimals
}

// Has reports whether any price of item and method is listed.
func (l *List) Has(it rollup.Item, m rollup.Method) bool {
	return l != nil && len(l.fields[rollup.Field(it, m)]) > 0
}

// SameForEveryCluster reports whether no row of item and method names a
// cluster: then a sum over clusters (a project's row) is priced exactly
// without its per-cluster parts.
func (l *List) SameForEveryCluster(it rollup.Item, m rollup.Method) bool {
	if l == nil {
		return true
	}
	for _, t := range l.fields[rollup.Field(it, m)] {
		if !t.all {
			return false
		}
	}
	return true
}

// Price returns the price per unit-hour of item and method on cluster in
// force on d (see the package comment), and false (0) when no row applies.
// The cluster "" is matched only by the rows for every cluster.
func (l *List) Price(it rollup.Item, m rollup.Method, cluster string, d rollup.Day) (Price, bool) {
	if l == nil {
		return 0, false
	}
	for _, t := range l.fields[rollup.Field(it, m)] {
		if !t.all && (cluster == "" || !t.pattern.Match(cluster)) {
			continue
		}
		i := sort.Search(len(t.points), func(i int) bool { return t.points[i].from > d })
		if i > 0 {
			return t.points[i-1].price, true
		}
	}
	return 0, false
}
