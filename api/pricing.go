package api

import (
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/alauda/costmeter/internal/rollup"
)

// Pricing is a price list: for each item and method, prices per unit-hour
// (core-hour, GiB-hour) in the configured currency, each in force from a
// day on until the next one of the same item and method. A new price
// therefore never rewrites the past.
//
// The file is YAML (or JSON, which is YAML):
//
//	prices:
//	  - item: Cpu           # Cpu, Memory, Storage
//	    method: Effective   # Effective, Request, Usage, ProjectQuota
//	    from: "2025-01-01"  # first day, billing time zone
//	    price: 0.35         # per core-hour
//
// A row's cost is the sum over its days of that day's usage times the price
// in force that day. A day before the first price of the item and method
// costs 0; an item and method with no price at all gives rows without cost.
type Pricing struct {
	lists map[int][]pricePoint // rollup.Field -> ascending by from
}

type pricePoint struct {
	from  rollup.Day
	price float64
}

type pricingFile struct {
	Prices []struct {
		Item   string   `json:"item"`
		Method string   `json:"method"`
		From   string   `json:"from"`
		Price  *float64 `json:"price"`
	} `json:"prices"`
}

// LoadPricing reads and checks a price list file.
func LoadPricing(path string) (*Pricing, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read price list: %w", err)
	}
	p, err := ParsePricing(b)
	if err != nil {
		return nil, fmt.Errorf("price list %s: %w", path, err)
	}
	return p, nil
}

// ParsePricing parses a price list (see Pricing) and reports every problem.
func ParsePricing(b []byte) (*Pricing, error) {
	var f pricingFile
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	p := &Pricing{lists: map[int][]pricePoint{}}
	var errs []error
	for i, e := range f.Prices {
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
		if e.Price == nil || math.IsNaN(*e.Price) || math.IsInf(*e.Price, 0) || *e.Price < 0 {
			errs = append(errs, fmt.Errorf("prices[%d].price: required, a finite number >= 0", i))
		}
		if !ok || !ok2 || err != nil || e.Price == nil {
			continue
		}
		f := rollup.Field(it, m)
		p.lists[f] = append(p.lists[f], pricePoint{from: rollup.DayFromDate(t.Date()), price: *e.Price})
	}
	for f, l := range p.lists {
		sort.Slice(l, func(a, b int) bool { return l[a].from < l[b].from })
		for i := 1; i < len(l); i++ {
			if l[i].from == l[i-1].from {
				errs = append(errs, fmt.Errorf("prices: two prices of %s %s from %s", rollup.Item(f/len(rollup.Methods())), rollup.Method(f%len(rollup.Methods())), l[i].from))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return p, nil
}

// Has reports whether any price of item and method is listed.
func (p *Pricing) Has(it rollup.Item, m rollup.Method) bool {
	return p != nil && len(p.lists[rollup.Field(it, m)]) > 0
}

// Price returns the price per unit-hour of item and method in force on d
// (0 before the first).
func (p *Pricing) Price(it rollup.Item, m rollup.Method, d rollup.Day) float64 {
	l := p.lists[rollup.Field(it, m)]
	i := sort.Search(len(l), func(i int) bool { return l[i].from > d })
	if i == 0 {
		return 0
	}
	return l[i-1].price
}
