package focus

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"sort"
)

// Split allocation (FOCUS 1.3). Where the chargeback work shares a cost
// (a shared namespace, idle capacity, overheads), the origin charge's row
// is replaced by one allocated row per receiver: the origin's ResourceId
// and SubAccount stay, AllocatedResourceId/Name/Tags name the receiver,
// AllocatedMethodId the rule, AllocatedMethodDetails the ratio and the
// usage it was based on, x_AllocatedRatio the ratio as a Decimal. The
// allocated rows' ratios sum to exactly 1 and their costs and quantities
// to exactly the origin's (largest remainder, in 10^-Scale units).

// ErrAllocation is wrapped by the errors of a split that breaks the
// invariants.
var ErrAllocation = errors.New("invalid allocation")

// OriginKey names an origin charge of a day: a namespace and an item.
type OriginKey struct {
	Project, Cluster, Namespace, Item string
}

// KeyOf returns the origin key of an origin row.
func KeyOf(r *Row) OriginKey {
	return OriginKey{Project: str(r.SubAccountId), Cluster: r.XCluster, Namespace: str(r.ResourceName), Item: r.XItem}
}

// Share is one receiver of an origin charge and the basis it is weighed
// by (for example its own Effective usage, in the item's fixed-point
// units).
type Share struct {
	ResourceID, ResourceName string
	Tags                     map[string]string
	Basis                    int64
	// BasisUnit names what Basis counts, for AllocatedMethodDetails.
	BasisUnit string
}

// Allocation is how one origin charge is split.
type Allocation struct {
	MethodID string
	Shares   []Share
}

// methodDetails is AllocatedMethodDetails: a JSON object with a list of
// elements, each with the ratio and the usage it was based on.
type methodDetails struct {
	Elements []methodElement `json:"Elements"`
}

type methodElement struct {
	AllocatedRatio string `json:"AllocatedRatio"`
	UsageQuantity  int64  `json:"UsageQuantity"`
	UsageUnit      string `json:"UsageUnit"`
}

// Split replaces origin by its allocated rows, ordered by
// AllocatedResourceId. It fails (wrapping ErrAllocation) on a split
// without shares, a negative basis, a zero total basis or a receiver
// named twice.
func Split(origin Row, a Allocation) ([]Row, error) {
	if a.MethodID == "" {
		return nil, fmt.Errorf("%w: no method id", ErrAllocation)
	}
	if len(a.Shares) == 0 {
		return nil, fmt.Errorf("%w: %s: no shares", ErrAllocation, a.MethodID)
	}
	shares := append([]Share(nil), a.Shares...)
	sort.Slice(shares, func(i, j int) bool { return shares[i].ResourceID < shares[j].ResourceID })
	weights := make([]int64, len(shares))
	for i, s := range shares {
		if s.Basis < 0 {
			return nil, fmt.Errorf("%w: %s: share %s has a negative basis", ErrAllocation, a.MethodID, s.ResourceID)
		}
		if i > 0 && s.ResourceID == shares[i-1].ResourceID {
			return nil, fmt.Errorf("%w: %s: receiver %s named twice", ErrAllocation, a.MethodID, s.ResourceID)
		}
		weights[i] = s.Basis
	}
	ratios, err := apportion(unit, weights)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrAllocation, a.MethodID, err)
	}
	o := amountsOf(&origin)
	split := func(total int64) []int64 {
		parts, _ := apportion(total, ratios) // ratios sum to unit > 0
		return parts
	}
	cost, consumed, pricing, usage, request, fixed := split(o.cost), split(o.consumed), split(o.pricing), split(o.usage), split(o.request), split(o.fixed)
	out := make([]Row, len(shares))
	for i, s := range shares {
		r := origin
		r.setAmounts(amounts{cost: cost[i], consumed: consumed[i], pricing: pricing[i], usage: usage[i], request: request[i], fixed: fixed[i]})
		id, name, method := s.ResourceID, s.ResourceName, a.MethodID
		ratio := DecOf(ratios[i])
		details, _ := json.Marshal(methodDetails{Elements: []methodElement{{AllocatedRatio: FormatUnits(ratios[i]), UsageQuantity: s.Basis, UsageUnit: s.BasisUnit}}})
		ds := string(details)
		r.AllocatedMethodId, r.AllocatedResourceId, r.AllocatedResourceName = &method, &id, &name
		r.AllocatedMethodDetails, r.AllocatedTags, r.XAllocatedRatio = &ds, tagsJSON(s.Tags), &ratio
		out[i] = r
	}
	if err := CheckRatios(out); err != nil {
		return nil, err
	}
	return out, nil
}

// CheckRatios checks the invariant of split allocation on rows: for every
// origin charge (ResourceId, item, ChargeClass) that has allocated rows,
// their x_AllocatedRatio values sum to exactly 1. Rows without an
// allocation are not counted.
func CheckRatios(rows []Row) error {
	type origin struct{ resource, item, class string }
	sums := map[origin]int64{}
	for i := range rows {
		r := &rows[i]
		if r.AllocatedMethodId == nil {
			continue
		}
		if r.XAllocatedRatio == nil {
			return fmt.Errorf("%w: allocated row of %s %s has no ratio", ErrAllocation, str(r.ResourceId), r.XItem)
		}
		sums[origin{str(r.ResourceId), r.XItem, str(r.ChargeClass)}] += unitsOf(r.XAllocatedRatio)
	}
	var errs []error
	for o, s := range sums {
		if s != unit {
			errs = append(errs, fmt.Errorf("%w: the allocated ratios of %s %s sum to %s, not 1", ErrAllocation, o.resource, o.item, FormatUnits(s)))
		}
	}
	return errors.Join(errs...)
}

// apportion splits total in proportion to weights by largest remainder:
// the parts sum to exactly total; ties go to the earlier weight.
func apportion(total int64, weights []int64) ([]int64, error) {
	var sum int64
	for _, w := range weights {
		sum += w
		if sum < 0 {
			return nil, errors.New("the basis overflows")
		}
	}
	if sum == 0 {
		return nil, errors.New("the shares' basis sums to 0")
	}
	parts := make([]int64, len(weights))
	rems := make([]int64, len(weights))
	var given int64
	for i, w := range weights {
		q, r := mulDiv(total, w, sum)
		parts[i], rems[i] = q, r
		given += q
	}
	order := make([]int, len(weights))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return rems[order[a]] > rems[order[b]] })
	left := total - given
	step := int64(1)
	if left < 0 {
		step, left = -1, -left
	}
	for i := int64(0); i < left; i++ {
		parts[order[int(i)%len(order)]] += step
	}
	return parts, nil
}

// mulDiv returns a×b/c truncated toward zero and the remainder's
// magnitude (c > 0), without overflow.
func mulDiv(a, b, c int64) (int64, int64) {
	n := new(big.Int).Mul(big.NewInt(a), big.NewInt(b))
	q, r := n.QuoRem(n, big.NewInt(c), new(big.Int))
	return q.Int64(), r.Abs(r).Int64()
}
