package exporter

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/alauda/costmeter/internal/allocation"
	"github.com/alauda/costmeter/internal/focus"
	"github.com/alauda/costmeter/internal/rollup"
)

// Chargeback is the exporter's Allocator and Labeler, read from the
// rollups' group-namespace rollups (rollup.ScopeGroupNamespace):
//
//   - Labels: a namespace's value of each kept label key on the day (Tags);
//     a namespace relabelled during the day carries the value under which
//     it used the most (Effective, Cpu then Memory then Storage, then the
//     smaller value); a namespace without the label has no tag for it.
//   - Allocations: each namespace the policy shares (its namespace rules,
//     and its label rules of the groupBy key) is an origin charge split
//     over the cluster-day's groups that are not shared, as the bill's
//     engine spreads it (docs/chargeback.md): weighted by their Effective
//     of the item (even when none has any, or by the rule's split: even),
//     to allocation.SharedGroup when no group is left to carry it.
//
// A day's rows are read once and kept for the day being exported.
type Chargeback struct {
	src     Source
	keys    []string
	groupBy string
	policy  func() *allocation.Policy

	mu       sync.Mutex
	day      rollup.Day
	rows     map[string][]rollup.Row // key -> the day's group-namespace rows
	indexDay rollup.Day
	index    map[string]map[nsKey]string // key -> namespace -> its value
}

// NewChargeback reads the kept label keys' rollups through src; groupBy
// (one of keys, or "" for no allocations) names the groups that shared
// costs are allocated to, under the policy in force (nil: nothing shared).
func NewChargeback(src Source, keys []string, groupBy string, policy func() *allocation.Policy) (*Chargeback, error) {
	if groupBy != "" && !contains(keys, groupBy) {
		return nil, fmt.Errorf("allocation group key %q is not one of the kept label keys %v", groupBy, keys)
	}
	if policy == nil {
		policy = func() *allocation.Policy { return nil }
	}
	return &Chargeback{src: src, keys: keys, groupBy: groupBy, policy: policy, day: -1}, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// load reads the day's group-namespace rows of every kept key.
func (c *Chargeback) load(ctx context.Context, d rollup.Day) (map[string][]rollup.Row, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.day == d && c.rows != nil {
		return c.rows, nil
	}
	rows := make(map[string][]rollup.Row, len(c.keys))
	for _, k := range c.keys {
		sel := rollup.Selection{Scope: rollup.ScopeGroupNamespace, Prefix: rollup.GroupPrefix(k, ""), Totals: true}
		for off := 0; ; off += pageRows {
			p, err := c.src.Page(ctx, sel, []rollup.Bucket{{First: d, Last: d}}, off, pageRows)
			if err != nil {
				return nil, fmt.Errorf("read the group rollups of %s on %s: %w", k, d, err)
			}
			rows[k] = append(rows[k], p.Rows...)
			if off+pageRows >= p.Total || len(p.Rows) == 0 {
				break
			}
		}
	}
	c.day, c.rows = d, rows
	return rows, nil
}

// effective is a row's Effective of each item.
func effective(r *rollup.Row) [allocation.NumItems]int64 {
	var e [allocation.NumItems]int64
	for _, it := range rollup.Items() {
		e[it] = r.Total[rollup.Field(it, rollup.Effective)]
	}
	return e
}

// more tells whether quantities a outweigh b (Cpu, then Memory, then
// Storage).
func more(a, b [allocation.NumItems]int64) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] > b[i]
		}
	}
	return false
}

type nsKey struct{ project, cluster, namespace string }

// groupsOf returns each namespace's value of key on the day (the one it
// used the most under).
func groupsOf(rows []rollup.Row) map[nsKey]string {
	type best struct {
		group string
		qty   [allocation.NumItems]int64
	}
	m := map[nsKey]best{}
	for i := range rows {
		e := rows[i].Entity
		k := nsKey{e.Project, e.Cluster, e.Namespace}
		q := effective(&rows[i])
		b, ok := m[k]
		if !ok || more(q, b.qty) || (!more(b.qty, q) && e.Group < b.group) {
			m[k] = best{e.Group, q}
		}
	}
	out := make(map[nsKey]string, len(m))
	for k, b := range m {
		out[k] = b.group
	}
	return out
}

// Labels is the namespace's allocation labels on day d.
func (c *Chargeback) Labels(ctx context.Context, d rollup.Day, e rollup.Entity) (map[string]string, error) {
	rows, err := c.load(ctx, d)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	k := nsKey{e.Project, e.Cluster, e.Namespace}
	for _, key := range c.keys {
		if g := c.groupIndex(d, key, rows[key])[k]; g != "" && g != rollup.Unallocated {
			out[key] = g
		}
	}
	return out, nil
}

// groupIndex is groupsOf of a key's rows, kept with them.
func (c *Chargeback) groupIndex(d rollup.Day, key string, rows []rollup.Row) map[nsKey]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.index == nil || c.indexDay != d {
		c.index, c.indexDay = map[string]map[nsKey]string{}, d
	}
	if m, ok := c.index[key]; ok {
		return m
	}
	m := groupsOf(rows)
	c.index[key] = m
	return m
}

// Allocations are the day's split allocations of shared namespaces.
func (c *Chargeback) Allocations(ctx context.Context, d rollup.Day) (map[focus.OriginKey]focus.Allocation, error) {
	if c.groupBy == "" {
		return nil, nil
	}
	rows, err := c.load(ctx, d)
	if err != nil {
		return nil, err
	}
	policy := c.policy()
	groups := c.groupIndex(d, c.groupBy, rows[c.groupBy])
	type shared struct {
		ns    nsKey
		rule  string
		split allocation.Split
	}
	var origins []shared
	// The receivers: per cluster, the non-shared groups and their Effective.
	receivers := map[string]map[string][allocation.NumItems]int64{}
	for i := range rows[c.groupBy] {
		e := rows[c.groupBy][i].Entity
		if _, _, ok := policy.Shared(e.Cluster, e.Namespace, c.groupBy, e.Group); ok {
			continue
		}
		r := receivers[e.Cluster]
		if r == nil {
			r = map[string][allocation.NumItems]int64{}
			receivers[e.Cluster] = r
		}
		q := r[e.Group]
		for it, v := range effective(&rows[c.groupBy][i]) {
			q[it] += v
		}
		r[e.Group] = q
	}
	for k, g := range groups {
		if rule, split, ok := policy.Shared(k.cluster, k.namespace, c.groupBy, g); ok {
			origins = append(origins, shared{k, rule, split})
		}
	}
	sort.Slice(origins, func(i, j int) bool {
		a, b := origins[i].ns, origins[j].ns
		if a.cluster != b.cluster {
			return a.cluster < b.cluster
		}
		if a.project != b.project {
			return a.project < b.project
		}
		return a.namespace < b.namespace
	})
	out := map[focus.OriginKey]focus.Allocation{}
	for _, o := range origins {
		names := make([]string, 0, len(receivers[o.ns.cluster]))
		for g := range receivers[o.ns.cluster] {
			names = append(names, g)
		}
		sort.Strings(names)
		for _, it := range rollup.Items() {
			a := focus.Allocation{MethodID: "costmeter-" + o.rule + "-" + o.split.String()}
			var total int64
			for _, g := range names {
				total += receivers[o.ns.cluster][g][it]
			}
			even := o.split == allocation.Even || total == 0
			for _, g := range names {
				basis, unit := receivers[o.ns.cluster][g][it], "Effective"
				if even {
					basis, unit = 1, "share"
				}
				a.Shares = append(a.Shares, focus.Share{ResourceID: c.groupBy + "=" + g, ResourceName: g,
					Tags: map[string]string{c.groupBy: g}, Basis: basis, BasisUnit: unit})
			}
			if len(a.Shares) == 0 {
				a.Shares = []focus.Share{{ResourceID: c.groupBy + "=" + allocation.SharedGroup, ResourceName: allocation.SharedGroup,
					Tags: map[string]string{c.groupBy: allocation.SharedGroup}, Basis: 1, BasisUnit: "share"}}
			}
			out[focus.OriginKey{Project: o.ns.project, Cluster: o.ns.cluster, Namespace: o.ns.namespace, Item: it.String()}] = a
		}
	}
	return out, nil
}
