package allocation

import (
	"cmp"
	"math/bits"
	"slices"
)

// largestRemainder splits amount (>= 0) into parts proportional to
// weights that add up to amount exactly: each part is first the floor of
// amount × weight / Σweights (computed in 128 bits, so it never
// overflows), then the units left over (fewer than len(weights)) go one
// each to the parts with the largest remainders, ties to the earlier
// index. All weights zero gives all parts zero (amount must then be 0:
// callers never split a cost over nothing).
func largestRemainder(amount int64, weights []uint64) []int64 {
	parts := make([]int64, len(weights))
	var total uint64
	for _, w := range weights {
		total += w
	}
	if total == 0 || amount == 0 {
		return parts
	}
	rems := make([]uint64, len(weights))
	left := amount
	for i, w := range weights {
		// amount × w / total <= amount < 2^63, so hi < total and Div64
		// does not panic.
		hi, lo := bits.Mul64(uint64(amount), w)
		q, r := bits.Div64(hi, lo, total)
		parts[i], rems[i] = int64(q), r
		left -= int64(q)
	}
	if left == 0 {
		return parts
	}
	order := make([]int, len(weights))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		if c := cmp.Compare(rems[b], rems[a]); c != 0 {
			return c
		}
		return a - b
	})
	for _, i := range order[:left] {
		parts[i]++
	}
	return parts
}
