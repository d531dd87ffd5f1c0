// Package allocation turns a cluster's cost into a bill per group (a team,
// a cost centre: the values of one label key) that adds up: the policy
// file (shared namespaces and label values, what becomes of idle, fixed
// overheads; Policy) and the engine that allocates one cluster-day in
// integers (Engine.Allocate), whose bills add up over days and clusters
// (Bill.Add) and are filtered only afterwards (Bill.Filter).
//
// The rules are in docs/chargeback.md, with a worked example.
package allocation

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/alauda/costmeter/internal/pricing"
	"github.com/alauda/costmeter/internal/rollup"
)

// The groups the engine names itself. Label values start with a letter or
// digit, so none can clash with a team's.
const (
	// IdleGroup carries idle capacity's cost (IdleOwn), and whatever has
	// nobody else to carry it: idle and overheads of a cluster-day without
	// namespaces.
	IdleGroup = "__idle__"
	// UnallocatedGroup is the group of namespaces without the label: the
	// rollups' own (the aggregator counts them under it).
	UnallocatedGroup = rollup.Unallocated
	// SharedGroup carries shared cost on a cluster-day where every
	// namespace is shared, so no group is left to carry it.
	SharedGroup = "__shared__"
)

// NumItems is the number of metered items; arrays indexed by rollup.Item.
const NumItems = 3

// Namespace is one namespace's part of a cluster-day.
type Namespace struct {
	Project, Namespace string
	// Group is the namespace's value of the bill's groupBy key,
	// UnallocatedGroup when it has none.
	Group string
	// Effective is the day's Effective quantity of each item, in the
	// rollups' fixed point (millionths of a unit-second), >= 0.
	Effective [NumItems]int64
}

// Capacity is a cluster-day's capacity of one item.
type Capacity struct {
	// Known is false when no capacity sample covers the day: idle is then
	// unknown (not zero) and the item's cost is its Effective priced.
	Known bool
	// Value is in the rollups' fixed point, >= 0.
	Value int64
}

// ClusterDay is what the engine needs of one cluster on one day.
type ClusterDay struct {
	Cluster    string
	Day        rollup.Day
	Capacity   [NumItems]Capacity
	Namespaces []Namespace
}

// Part is one item's share of a line: amounts in printed units (10^-decimals
// of the currency), quantities in the rollups' fixed point.
type Part struct {
	Direct, Shared, Idle          int64
	DirectQty, SharedQty, IdleQty int64
}

// Line is one group's bill on one cluster (over the days added up).
type Line struct {
	Cluster, Group string
	Items          [NumItems]Part
	// Direct, Shared and Idle sum Items; Overhead is the group's part of
	// the overheads; Total = Direct + Shared + Idle + Overhead.
	Direct, Shared, Idle, Overhead, Total int64
}

// ItemTotal is what one item of a cluster cost.
type ItemTotal struct {
	// Capacity, Idle and Overcommit sum the days whose capacity is known;
	// Effective sums every day.
	Capacity, Effective, Idle, Overcommit int64
	// UnknownDays counts the days without capacity: their idle is unknown.
	UnknownDays int
	// Cost is capacity × price on known days, Effective × price on the
	// others, each day rounded once to the printed unit.
	Cost int64
}

// ClusterTotal is one cluster's reconciliation.
type ClusterTotal struct {
	Cluster string
	Days    int
	Items   [NumItems]ItemTotal
	// Overhead sums the cluster's overheads.
	Overhead int64
	// ClusterCost = Σ Items' Cost + Overhead; Allocated = Σ the cluster's
	// lines' Total. They are equal.
	ClusterCost, Allocated int64
}

// Pool explains one shared rule's cost on one cluster: the quantity of the
// namespaces it shared and what they cost, before it was spread.
type Pool struct {
	Cluster string
	// Rule names the policy rule: "namespaces[0]", "labels[1]".
	Rule  string
	Split Split
	Items [NumItems]struct{ Quantity, Amount int64 }
}

// Bill is the allocation of one or more cluster-days: lines sorted by
// cluster then group, clusters and pools sorted the same way.
type Bill struct {
	Lines    []Line
	Clusters []ClusterTotal
	Pools    []Pool
	// ClusterCost and Allocated sum Clusters: equal.
	ClusterCost, Allocated int64
}

// Engine allocates cluster-days under a policy, a price list and the
// billing zone, grouping by one label key.
type Engine struct {
	policy  *Policy
	prices  *pricing.List
	loc     *time.Location
	groupBy string
}

// NewEngine returns an engine. The policy's amounts must be in the price
// list's printed precision; policy and prices may be nil (nothing shared,
// nothing priced: every amount 0).
func NewEngine(policy *Policy, prices *pricing.List, loc *time.Location, groupBy string) (*Engine, error) {
	if loc == nil {
		return nil, errors.New("allocation engine: a billing time zone is required")
	}
	if policy.Decimals() != prices.Decimals() {
		return nil, fmt.Errorf("allocation engine: the policy's amounts have %d decimals, the price list prints %d", policy.Decimals(), prices.Decimals())
	}
	return &Engine{policy: policy, prices: prices, loc: loc, groupBy: groupBy}, nil
}

// ErrInvalid is returned for a cluster-day the engine cannot allocate
// (negative quantities, sums beyond int64).
var ErrInvalid = errors.New("invalid cluster-day")

// Allocate bills one cluster-day. The steps, per item (Cpu, Memory,
// Storage), all in integers:
//
//  1. cost = capacity × price, rounded once to the printed unit (Effective
//     × price when capacity is unknown).
//  2. cost is split by largest remainder over the accounts, weighted by
//     quantity: each non-shared group (its namespaces' Effective), each
//     shared pool (its namespaces' Effective), and idle (capacity − Σ
//     Effective, never negative). Overcommitted (Σ Effective > capacity):
//     idle is 0 and the capacity's cost is split by Effective. Ties go to
//     groups by name, then pools in rule order, then idle.
//  3. each pool's amount and quantity is spread over the non-shared groups
//     of the cluster-day by the rule's split (weighted by Effective; even
//     when they have none), or to SharedGroup when there is no such
//     group; idle likewise by the policy's idle mode, or to IdleGroup.
//
// Then each overhead of the day is spread over the non-shared groups
// (weighted by their direct + shared amount over all items, or even), or
// to IdleGroup when there is none. Every split is a largest remainder, so
// the cluster's cost and the groups' totals are equal to the unit.
func (e *Engine) Allocate(cd ClusterDay) (Bill, error) {
	// Accounts: non-shared groups by name, pools in rule order.
	type poolAcc struct {
		rule  string
		order int
		split Split
		qty   [NumItems]int64
	}
	groupQty := map[string]*[NumItems]int64{}
	pools := map[string]*poolAcc{}
	var sumE [NumItems]int64
	for _, ns := range cd.Namespaces {
		group := ns.Group
		if group == "" {
			group = UnallocatedGroup
		}
		var acc *[NumItems]int64
		if rule, order, split, ok := e.policy.shared(cd.Cluster, ns.Namespace, e.groupBy, group); ok {
			p := pools[rule]
			if p == nil {
				p = &poolAcc{rule: rule, order: order, split: split}
				pools[rule] = p
			}
			acc = &p.qty
		} else {
			acc = groupQty[group]
			if acc == nil {
				acc = new([NumItems]int64)
				groupQty[group] = acc
			}
		}
		for i, v := range ns.Effective {
			if v < 0 {
				return Bill{}, fmt.Errorf("%w: %s/%s on %s: negative Effective %d", ErrInvalid, cd.Cluster, ns.Namespace, cd.Day, v)
			}
			if acc[i] > math.MaxInt64-v || sumE[i] > math.MaxInt64-v {
				return Bill{}, fmt.Errorf("%w: %s on %s: Effective sums beyond int64", ErrInvalid, cd.Cluster, cd.Day)
			}
			acc[i] += v
			sumE[i] += v
		}
	}
	groups := make([]string, 0, len(groupQty))
	for g := range groupQty {
		groups = append(groups, g)
	}
	sort.Strings(groups)
	qtys := make([][NumItems]int64, len(groups)) // groupQty in groups' order
	for i, g := range groups {
		qtys[i] = *groupQty[g]
	}
	poolList := make([]*poolAcc, 0, len(pools))
	for _, p := range pools {
		poolList = append(poolList, p)
	}
	sort.Slice(poolList, func(a, b int) bool { return poolList[a].order < poolList[b].order })

	lines := map[string]*Line{}
	line := func(g string) *Line {
		l := lines[g]
		if l == nil {
			l = &Line{Cluster: cd.Cluster, Group: g}
			lines[g] = l
		}
		return l
	}
	for _, g := range groups {
		line(g)
	}
	ct := ClusterTotal{Cluster: cd.Cluster, Days: 1}
	billPools := make([]Pool, len(poolList))
	for i, p := range poolList {
		billPools[i] = Pool{Cluster: cd.Cluster, Rule: p.rule, Split: p.split}
	}
	for item := range NumItems {
		it := rollup.Item(item)
		capy := cd.Capacity[item]
		tot := &ct.Items[item]
		tot.Effective = sumE[item]
		base := sumE[item]
		var idleQty int64
		if capy.Known {
			if capy.Value < 0 {
				return Bill{}, fmt.Errorf("%w: %s on %s: negative %s capacity", ErrInvalid, cd.Cluster, cd.Day, it)
			}
			base = capy.Value
			tot.Capacity = capy.Value
			if capy.Value >= sumE[item] {
				idleQty = capy.Value - sumE[item]
			} else {
				tot.Overcommit = sumE[item] - capy.Value
			}
			tot.Idle = idleQty
		} else {
			tot.UnknownDays = 1
		}
		price, _ := e.prices.Price(it, rollup.Effective, cd.Cluster, cd.Day)
		cost, err := pricing.Amount(base, price, e.prices.Decimals())
		if err != nil {
			return Bill{}, fmt.Errorf("%w: %s on %s: %s cost: %w", ErrInvalid, cd.Cluster, cd.Day, it, err)
		}
		tot.Cost = cost
		// Step 2: the first split.
		weights := make([]uint64, 0, len(groups)+len(poolList)+1)
		for i := range groups {
			weights = append(weights, uint64(qtys[i][item]))
		}
		for _, p := range poolList {
			weights = append(weights, uint64(p.qty[item]))
		}
		weights = append(weights, uint64(idleQty))
		parts := largestRemainder(cost, weights)
		for i, g := range groups {
			l := line(g)
			l.Items[item].Direct = parts[i]
			l.Items[item].DirectQty = qtys[i][item]
		}
		// Step 3: pools and idle to the groups.
		recipients := func(split Split) []uint64 {
			w := make([]uint64, len(groups))
			var sum uint64
			for i := range groups {
				if split == Weighted {
					w[i] = uint64(qtys[i][item])
				}
				sum += w[i]
			}
			if sum == 0 {
				for i := range w {
					w[i] = 1
				}
			}
			return w
		}
		spread := func(amount, qty int64, split Split, fallback string, set func(p *Part, amount, qty int64)) {
			if len(groups) == 0 {
				set(&line(fallback).Items[item], amount, qty)
				return
			}
			w := recipients(split)
			amounts, qtys := largestRemainder(amount, w), largestRemainder(qty, w)
			for i, g := range groups {
				set(&line(g).Items[item], amounts[i], qtys[i])
			}
		}
		addShared := func(p *Part, a, q int64) { p.Shared += a; p.SharedQty += q }
		addIdle := func(p *Part, a, q int64) { p.Idle += a; p.IdleQty += q }
		for i, p := range poolList {
			amount := parts[len(groups)+i]
			billPools[i].Items[item].Quantity = p.qty[item]
			billPools[i].Items[item].Amount = amount
			spread(amount, p.qty[item], p.split, SharedGroup, addShared)
		}
		idleAmount := parts[len(parts)-1]
		switch e.policy.Idle() {
		case IdleOwn:
			if idleAmount != 0 || idleQty != 0 {
				addIdle(&line(IdleGroup).Items[item], idleAmount, idleQty)
			}
		default:
			split := Weighted
			if e.policy.Idle() == IdleEven {
				split = Even
			}
			spread(idleAmount, idleQty, split, IdleGroup, addIdle)
		}
	}
	// Overheads, weighted by direct + shared amounts.
	for _, ch := range e.policy.Overheads(cd.Cluster, cd.Day, e.loc) {
		ct.Overhead += ch.Amount
		if len(groups) == 0 {
			line(IdleGroup).Overhead += ch.Amount
			continue
		}
		w := make([]uint64, len(groups))
		var sum uint64
		for i, g := range groups {
			if ch.Split == Weighted {
				for _, p := range lines[g].Items {
					w[i] += uint64(p.Direct + p.Shared)
				}
			}
			sum += w[i]
		}
		if sum == 0 {
			for i := range w {
				w[i] = 1
			}
		}
		for i, a := range largestRemainder(ch.Amount, w) {
			lines[groups[i]].Overhead += a
		}
	}
	b := Bill{Pools: billPools}
	for _, l := range lines {
		for _, p := range l.Items {
			l.Direct += p.Direct
			l.Shared += p.Shared
			l.Idle += p.Idle
		}
		l.Total = l.Direct + l.Shared + l.Idle + l.Overhead
		ct.Allocated += l.Total
		b.Lines = append(b.Lines, *l)
	}
	sort.Slice(b.Lines, func(i, j int) bool { return b.Lines[i].Group < b.Lines[j].Group })
	ct.ClusterCost = ct.Overhead
	for _, it := range ct.Items {
		ct.ClusterCost += it.Cost
	}
	if ct.ClusterCost != ct.Allocated {
		return Bill{}, fmt.Errorf("allocation of %s on %s does not add up: cost %d, allocated %d (a bug)", cd.Cluster, cd.Day, ct.ClusterCost, ct.Allocated)
	}
	b.Clusters = []ClusterTotal{ct}
	b.ClusterCost, b.Allocated = ct.ClusterCost, ct.Allocated
	return b, nil
}

// Add adds o's cluster-days to b: lines of the same cluster and group,
// clusters and pools of the same name add up field by field. A bucket's
// bill (a week, a month, several clusters) is the sum of its cluster-days,
// so it adds up as they do. Add takes time in proportion to both bills:
// to add many cluster-days, use a Sum.
func (b *Bill) Add(o Bill) {
	b.Lines = mergeLines(b.Lines, o.Lines)
	b.Clusters = mergeClusters(b.Clusters, o.Clusters)
	b.Pools = mergePools(b.Pools, o.Pools)
	b.ClusterCost += o.ClusterCost
	b.Allocated += o.Allocated
}

func mergeLines(a, b []Line) []Line {
	out := make([]Line, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || i < len(a) && lineLess(&a[i], &b[j]):
			out = append(out, a[i])
			i++
		case i == len(a) || lineLess(&b[j], &a[i]):
			out = append(out, b[j])
			j++
		default:
			l := a[i]
			l.add(&b[j])
			out = append(out, l)
			i++
			j++
		}
	}
	return out
}

func lineLess(a, b *Line) bool {
	if a.Cluster != b.Cluster {
		return a.Cluster < b.Cluster
	}
	return a.Group < b.Group
}

func (l *Line) add(o *Line) {
	for i := range l.Items {
		p, q := &l.Items[i], &o.Items[i]
		p.Direct += q.Direct
		p.Shared += q.Shared
		p.Idle += q.Idle
		p.DirectQty += q.DirectQty
		p.SharedQty += q.SharedQty
		p.IdleQty += q.IdleQty
	}
	l.Direct += o.Direct
	l.Shared += o.Shared
	l.Idle += o.Idle
	l.Overhead += o.Overhead
	l.Total += o.Total
}

func mergeClusters(a, b []ClusterTotal) []ClusterTotal {
	out := make([]ClusterTotal, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || i < len(a) && a[i].Cluster < b[j].Cluster:
			out = append(out, a[i])
			i++
		case i == len(a) || b[j].Cluster < a[i].Cluster:
			out = append(out, b[j])
			j++
		default:
			c, o := a[i], b[j]
			c.Days += o.Days
			for k := range c.Items {
				x, y := &c.Items[k], &o.Items[k]
				x.Capacity += y.Capacity
				x.Effective += y.Effective
				x.Idle += y.Idle
				x.Overcommit += y.Overcommit
				x.UnknownDays += y.UnknownDays
				x.Cost += y.Cost
			}
			c.Overhead += o.Overhead
			c.ClusterCost += o.ClusterCost
			c.Allocated += o.Allocated
			out = append(out, c)
			i++
			j++
		}
	}
	return out
}

func mergePools(a, b []Pool) []Pool {
	type key struct{ cluster, rule string }
	idx := map[key]int{}
	out := append([]Pool(nil), a...)
	for i, p := range out {
		idx[key{p.Cluster, p.Rule}] = i
	}
	for _, p := range b {
		k := key{p.Cluster, p.Rule}
		if i, ok := idx[k]; ok {
			for n := range p.Items {
				out[i].Items[n].Quantity += p.Items[n].Quantity
				out[i].Items[n].Amount += p.Items[n].Amount
			}
			continue
		}
		idx[k] = len(out)
		out = append(out, p)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Cluster != out[j].Cluster {
			return out[i].Cluster < out[j].Cluster
		}
		return out[i].Rule < out[j].Rule
	})
	return out
}

// Sum adds up many cluster-days' bills into one (a bucket's), each Add in
// time proportional to the bill added. The zero Sum is empty.
type Sum struct {
	lines                  map[[2]string]*Line
	clusters               map[string]*ClusterTotal
	pools                  map[[2]string]*Pool
	clusterCost, allocated int64
}

// Add adds b to the sum.
func (s *Sum) Add(b Bill) {
	if s.lines == nil {
		s.lines, s.clusters, s.pools = map[[2]string]*Line{}, map[string]*ClusterTotal{}, map[[2]string]*Pool{}
	}
	for i := range b.Lines {
		l := &b.Lines[i]
		k := [2]string{l.Cluster, l.Group}
		if x := s.lines[k]; x != nil {
			x.add(l)
		} else {
			c := *l
			s.lines[k] = &c
		}
	}
	for _, c := range b.Clusters {
		if x := s.clusters[c.Cluster]; x != nil {
			m := mergeClusters([]ClusterTotal{*x}, []ClusterTotal{c})
			*x = m[0]
		} else {
			s.clusters[c.Cluster] = &c
		}
	}
	for _, p := range b.Pools {
		k := [2]string{p.Cluster, p.Rule}
		if x := s.pools[k]; x != nil {
			for n := range p.Items {
				x.Items[n].Quantity += p.Items[n].Quantity
				x.Items[n].Amount += p.Items[n].Amount
			}
		} else {
			s.pools[k] = &p
		}
	}
	s.clusterCost += b.ClusterCost
	s.allocated += b.Allocated
}

// Bill returns the sum, sorted as every Bill is.
func (s *Sum) Bill() Bill {
	b := Bill{ClusterCost: s.clusterCost, Allocated: s.allocated}
	for _, l := range s.lines {
		b.Lines = append(b.Lines, *l)
	}
	sort.Slice(b.Lines, func(i, j int) bool { return lineLess(&b.Lines[i], &b.Lines[j]) })
	for _, c := range s.clusters {
		b.Clusters = append(b.Clusters, *c)
	}
	sort.Slice(b.Clusters, func(i, j int) bool { return b.Clusters[i].Cluster < b.Clusters[j].Cluster })
	for _, p := range s.pools {
		b.Pools = append(b.Pools, *p)
	}
	sort.Slice(b.Pools, func(i, j int) bool {
		if b.Pools[i].Cluster != b.Pools[j].Cluster {
			return b.Pools[i].Cluster < b.Pools[j].Cluster
		}
		return b.Pools[i].Rule < b.Pools[j].Rule
	})
	return b
}

// Filter keeps what a query names after allocation: the lines of group
// (every group when ""), on cluster (every cluster when ""). A kept line's
// numbers are exactly those of the unfiltered bill. The clusters, pools
// and the totals ClusterCost and Allocated are those of the kept clusters:
// a group filter leaves them whole (the reconciliation of the clusters the
// group's line is part of), a cluster filter narrows them to that cluster.
func (b Bill) Filter(group, cluster string) Bill {
	var out Bill
	for _, l := range b.Lines {
		if (group == "" || l.Group == group) && (cluster == "" || l.Cluster == cluster) {
			out.Lines = append(out.Lines, l)
		}
	}
	for _, c := range b.Clusters {
		if cluster == "" || c.Cluster == cluster {
			out.Clusters = append(out.Clusters, c)
			out.ClusterCost += c.ClusterCost
			out.Allocated += c.Allocated
		}
	}
	for _, p := range b.Pools {
		if cluster == "" || p.Cluster == cluster {
			out.Pools = append(out.Pools, p)
		}
	}
	return out
}

// Groups sums the lines of every cluster per group: the bill's rows, with
// Cluster "". Sorted by group.
func (b Bill) Groups() []Line {
	byGroup := map[string]*Line{}
	var names []string
	for i := range b.Lines {
		l := &b.Lines[i]
		g := byGroup[l.Group]
		if g == nil {
			g = &Line{Group: l.Group}
			byGroup[l.Group] = g
			names = append(names, l.Group)
		}
		g.add(l)
	}
	sort.Strings(names)
	out := make([]Line, len(names))
	for i, n := range names {
		out[i] = *byGroup[n]
	}
	return out
}
