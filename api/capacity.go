package api

import (
	"context"
	"fmt"
	"strings"

	"github.com/alauda/costmeter/internal/rollup"
)

// CapacityFields are the capacity columns of the cluster kinds' rows on
// the platform route, beyond the contract: the row's cluster's capacity of
// the row's item and what of it went unused, in the item's unit-hours, per
// day of the bucket, summed.
//
// A day's capacity is known when a capacity sample of the cluster covers
// part of it. Capacity, Idle and Overcommit sum the known days only;
// CapacityUnknownDays counts the others, whose idle is unknown (never
// taken as zero). On a known day idle = max(0, capacity − Effective) and
// overcommit = max(0, Effective − capacity), Effective being the
// cluster's Effective of the item that day whatever the query's method,
// as the bill reckons it (docs/chargeback.md).
type CapacityFields struct {
	Capacity            float64 `json:"capacity"`
	Idle                float64 `json:"idle"`
	Overcommit          float64 `json:"overcommit"`
	CapacityKnownDays   int     `json:"capacityKnownDays"`
	CapacityUnknownDays int     `json:"capacityUnknownDays"`
}

// capacityCoverage is the store's per-day coverage of the capacity samples
// (*rollup.Reader): which days of a cluster a capacity sample covered.
type capacityCoverage interface {
	CapacityCoverage(ctx context.Context, first, last rollup.Day, cluster string) ([]rollup.ClusterDay, error)
}

// clusterCapacity is one cluster's capacity over a bucket: each day's
// capacity rollup (each item's capacity in unit-seconds in its Effective
// field) and whether the day's capacity is known.
type clusterCapacity struct {
	days  []rollup.Values
	known []bool
}

// capacityOf reads cluster's capacity on the days of b.
func (s *Server) capacityOf(ctx context.Context, cluster string, b rollup.Bucket) (clusterCapacity, error) {
	n := int(b.Last-b.First) + 1
	cc := clusterCapacity{days: make([]rollup.Values, n), known: make([]bool, n)}
	sel := rollup.Selection{Scope: rollup.ScopeCapacity, Member: rollup.Entity{Cluster: cluster}.Member(rollup.ScopeCapacity)}
	page, err := s.reader.Page(ctx, sel, []rollup.Bucket{b}, 0, 1)
	if err != nil {
		return cc, fmt.Errorf("read the capacity of cluster %q: %w", cluster, err)
	}
	if len(page.Rows) == 1 && page.Rows[0].Days != nil {
		copy(cc.days, page.Rows[0].Days)
	}
	if cov, ok := s.reader.(capacityCoverage); ok {
		days, err := cov.CapacityCoverage(ctx, b.First, b.Last, cluster)
		if err != nil {
			return cc, fmt.Errorf("read the capacity coverage of cluster %q: %w", cluster, err)
		}
		for _, d := range days {
			if d.Day >= b.First && d.Day <= b.Last && d.Covered() > 0 {
				cc.known[d.Day-b.First] = true
			}
		}
		return cc, nil
	}
	// Without the coverage read: a day with a capacity rollup is known.
	for i, v := range cc.days {
		cc.known[i] = v != (rollup.Values{})
	}
	return cc, nil
}

// capacityFields computes a cluster row's capacity columns from its days'
// Effective (r.Days) and the cluster's capacity.
func capacityFields(q Query, r rollup.Row, cc clusterCapacity) *CapacityFields {
	field := rollup.Field(q.Item, rollup.Effective)
	var capy, idle, over int64
	out := &CapacityFields{}
	for j := range cc.days {
		if !cc.known[j] {
			out.CapacityUnknownDays++
			continue
		}
		out.CapacityKnownDays++
		c := cc.days[j][field]
		var e int64
		if j < len(r.Days) {
			e = r.Days[j][field]
		}
		capy += c
		if c >= e {
			idle += c - e
		} else {
			over += e - c
		}
	}
	out.Capacity, out.Idle, out.Overcommit = rollup.Hours(capy), rollup.Hours(idle), rollup.Hours(over)
	return out
}

// notKept is the 400 of a groupBy key the aggregator does not keep.
func (s *Server) notKept(key string) error {
	if len(s.groupKeys) == 0 {
		return badParam("groupBy", "%q is not a kept label key: no key is kept (--%s is empty)", key, AllocationLabelsFlag)
	}
	return badParam("groupBy", "%q is not a kept label key (kept: %s)", key, strings.Join(s.groupKeys, ", "))
}
