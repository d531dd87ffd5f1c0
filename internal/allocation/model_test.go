package allocation_test

// An independent model of the allocation, written from docs/chargeback.md
// and not from the engine: exact rationals (math/big.Rat) instead of
// 128-bit integer division, a largest remainder that sorts fractional
// parts instead of comparing integer remainders, day lengths from
// time.Date instead of rollup.Day.Start, and its own reading of which rule
// shares a namespace and which price applies.

import (
	"math/big"
	"path"
	"sort"
	"time"
)

type mNamespace struct {
	name, group string // group "" = no label
	eff         [3]int64
}

type mCapacity struct {
	known bool
	value int64
}

type mNsRule struct {
	cluster, namespace string // globs
	even               bool
}

type mLabelRule struct {
	key    string
	values []string
	even   bool
}

type mOverhead struct {
	cluster string
	monthly int64 // printed units
	even    bool
}

type mPolicy struct {
	nsRules    []mNsRule
	labelRules []mLabelRule
	idle       string // own | weighted | even
	overheads  []mOverhead
}

// mPrices: a price per item for every cluster, and exact overrides.
type mPrices struct {
	all      [3]int64 // nanos per unit-hour
	clusters map[string][3]int64
	decimals int
}

type mPart struct{ direct, shared, idle, dq, sq, iq int64 }

type mLine struct {
	items    [3]mPart
	overhead int64
}

func (l mLine) total() int64 {
	t := l.overhead
	for _, p := range l.items {
		t += p.direct + p.shared + p.idle
	}
	return t
}

type mResult struct {
	lines       map[string]*mLine
	clusterCost int64
	idle        [3]int64
	idleKnown   [3]bool
}

// mSplit: floor of exact shares, then one unit each to the largest
// fractional parts, ties to the earlier position.
func mSplit(amount int64, weights []int64) []int64 {
	out := make([]int64, len(weights))
	total := new(big.Int)
	for _, w := range weights {
		total.Add(total, big.NewInt(w))
	}
	if total.Sign() == 0 {
		return out
	}
	type frac struct {
		i int
		f *big.Rat
	}
	fracs := make([]frac, len(weights))
	given := int64(0)
	for i, w := range weights {
		share := new(big.Rat).SetFrac(new(big.Int).Mul(big.NewInt(amount), big.NewInt(w)), total)
		fl := new(big.Int).Div(share.Num(), share.Denom())
		out[i] = fl.Int64()
		given += out[i]
		fracs[i] = frac{i, new(big.Rat).Sub(share, new(big.Rat).SetInt(fl))}
	}
	sort.SliceStable(fracs, func(a, b int) bool { return fracs[a].f.Cmp(fracs[b].f) > 0 })
	for k := int64(0); k < amount-given; k++ {
		out[fracs[k].i]++
	}
	return out
}

// mCost is quantity × price in printed units, rounded half up.
func mCost(q, price int64, decimals int) int64 {
	r := new(big.Rat).SetFrac(new(big.Int).Mul(big.NewInt(q), big.NewInt(price)), big.NewInt(3_600_000_000*1_000_000_000))
	r.Mul(r, new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(decimals)), nil)))
	r.Add(r, big.NewRat(1, 2))
	return new(big.Int).Div(r.Num(), r.Denom()).Int64()
}

func globMatch(p, s string) bool {
	ok, err := path.Match(p, s)
	return err == nil && ok
}

// mDayShare is date's part of monthly, spread by the hours of the month's
// days in loc.
func mDayShare(monthly int64, y int, m time.Month, d int, loc *time.Location) int64 {
	var weights []int64
	for day := 1; ; day++ {
		start := time.Date(y, m, day, 0, 0, 0, 0, loc)
		if start.Month() != m {
			break
		}
		weights = append(weights, int64(time.Date(y, m, day+1, 0, 0, 0, 0, loc).Sub(start)/time.Second))
	}
	return mSplit(monthly, weights)[d-1]
}

// model allocates one cluster-day.
func model(cluster string, y int, mo time.Month, d int, loc *time.Location, capacity [3]mCapacity, nss []mNamespace, pol mPolicy, prices mPrices, groupBy string) mResult {
	res := mResult{lines: map[string]*mLine{}}
	line := func(g string) *mLine {
		if res.lines[g] == nil {
			res.lines[g] = &mLine{}
		}
		return res.lines[g]
	}
	// Who is shared, by which rule (namespace rules first, in order).
	type pool struct {
		order int
		even  bool
		qty   [3]int64
	}
	pools := map[int]*pool{}
	groupQty := map[string]*[3]int64{}
	var sum [3]int64
	for _, ns := range nss {
		g := ns.group
		if g == "" {
			g = "__unallocated__"
		}
		rule, even := -1, false
		for i, r := range pol.nsRules {
			if globMatch(r.cluster, cluster) && globMatch(r.namespace, ns.name) {
				rule, even = i, r.even
				break
			}
		}
		if rule < 0 {
			for i, r := range pol.labelRules {
				found := false
				for _, v := range r.values {
					found = found || (r.key == groupBy && v == g)
				}
				if found {
					rule, even = len(pol.nsRules)+i, r.even
					break
				}
			}
		}
		var q *[3]int64
		if rule >= 0 {
			if pools[rule] == nil {
				pools[rule] = &pool{order: rule, even: even}
			}
			q = &pools[rule].qty
		} else {
			if groupQty[g] == nil {
				groupQty[g] = new([3]int64)
			}
			q = groupQty[g]
		}
		for i := range 3 {
			q[i] += ns.eff[i]
			sum[i] += ns.eff[i]
		}
	}
	var groups []string
	for g := range groupQty {
		groups = append(groups, g)
		line(g)
	}
	sort.Strings(groups)
	var poolList []*pool
	for _, p := range pools {
		poolList = append(poolList, p)
	}
	sort.Slice(poolList, func(a, b int) bool { return poolList[a].order < poolList[b].order })

	toGroups := func(item int, amount, qty int64, even bool, fallback string, shared bool) {
		if len(groups) == 0 {
			p := &line(fallback).items[item]
			if shared {
				p.shared += amount
				p.sq += qty
			} else {
				p.idle += amount
				p.iq += qty
			}
			return
		}
		w := make([]int64, len(groups))
		var tw int64
		for i, g := range groups {
			if !even {
				w[i] = groupQty[g][item]
			}
			tw += w[i]
		}
		if tw == 0 {
			for i := range w {
				w[i] = 1
			}
		}
		a, q := mSplit(amount, w), mSplit(qty, w)
		for i, g := range groups {
			p := &line(g).items[item]
			if shared {
				p.shared += a[i]
				p.sq += q[i]
			} else {
				p.idle += a[i]
				p.iq += q[i]
			}
		}
	}
	for item := range 3 {
		price := prices.all[item]
		if c, ok := prices.clusters[cluster]; ok {
			price = c[item]
		}
		base := sum[item]
		var idle int64
		if capacity[item].known {
			base = capacity[item].value
			idle = max(0, capacity[item].value-sum[item])
			res.idleKnown[item] = true
		}
		res.idle[item] = idle
		cost := mCost(base, price, prices.decimals)
		res.clusterCost += cost
		var w []int64
		for _, g := range groups {
			w = append(w, groupQty[g][item])
		}
		for _, p := range poolList {
			w = append(w, p.qty[item])
		}
		w = append(w, idle)
		parts := mSplit(cost, w)
		for i, g := range groups {
			line(g).items[item].direct = parts[i]
			line(g).items[item].dq = groupQty[g][item]
		}
		for i, p := range poolList {
			toGroups(item, parts[len(groups)+i], p.qty[item], p.even, "__shared__", true)
		}
		idleAmount := parts[len(parts)-1]
		switch pol.idle {
		case "own", "":
			if idleAmount != 0 || idle != 0 {
				line("__idle__").items[item].idle += idleAmount
				line("__idle__").items[item].iq += idle
			}
		default:
			toGroups(item, idleAmount, idle, pol.idle == "even", "__idle__", false)
		}
	}
	for _, o := range pol.overheads {
		if !globMatch(o.cluster, cluster) {
			continue
		}
		amount := mDayShare(o.monthly, y, mo, d, loc)
		res.clusterCost += amount
		if len(groups) == 0 {
			line("__idle__").overhead += amount
			continue
		}
		w := make([]int64, len(groups))
		var tw int64
		for i, g := range groups {
			if !o.even {
				for _, p := range res.lines[g].items {
					w[i] += p.direct + p.shared
				}
			}
			tw += w[i]
		}
		if tw == 0 {
			for i := range w {
				w[i] = 1
			}
		}
		for i, a := range mSplit(amount, w) {
			res.lines[groups[i]].overhead += a
		}
	}
	return res
}
