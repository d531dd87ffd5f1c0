package pricing

import (
	"errors"
	"math/big"
	"math/bits"

	"github.com/alauda/costmeter/internal/rollup"
)

// Price is a price per unit-hour (core-hour, GiB-hour) in nanos: 10^-9 of
// the currency. A price list's decimals are read exactly into it
// (ParseDecimal with PriceDecimals places): never a float.
type Price int64

// PriceDecimals is the precision of a Price: a price list may give up to 9
// decimal places; more is a load-time error.
const PriceDecimals = 9

// PriceScale is how many Price units make one currency unit.
const PriceScale = 1_000_000_000

// MaxPrice is the largest accepted price: one million currency units per
// unit-hour. With it every product of a quantity and a price stays far
// inside 128 bits (see Amount).
const MaxPrice Price = 1_000_000 * PriceScale

// FineDecimals is the precision of the fine amounts of the usage rows: a
// row's cost is an integer count of 10^-6 currency units (micro-units),
// rounded once, then shown as a number. Bills are in the coarser printed
// unit of the price list (List.Decimals).
const FineDecimals = 6

// perHourScaled is the divisor that turns quantity × price (millionths of
// a unit-second × nanos per unit-hour) into currency units: rollup.Scale
// × seconds per hour × PriceScale = 3.6e18.
var perHourScaled = new(big.Int).Mul(big.NewInt(rollup.Scale*rollup.UnitSecondsPerHour), big.NewInt(PriceScale))

// Sum adds up quantity × price products of the days of a row exactly (in
// big integers: no bound on how many days or how large) and rounds once,
// at the end. The zero Sum is empty.
type Sum struct {
	acc, tmp big.Int
}

// Add adds q (rollup fixed point: millionths of a unit-second) priced at p.
func (s *Sum) Add(q int64, p Price) {
	if q == 0 || p == 0 {
		return
	}
	s.tmp.SetInt64(q)
	s.tmp.Mul(&s.tmp, big.NewInt(int64(p)))
	s.acc.Add(&s.acc, &s.tmp)
}

// Amount is the sum in units of 10^-decimals of the currency, rounded half
// away from zero: the one rounding step of a row's cost.
func (s *Sum) Amount(decimals int) *big.Int {
	num := new(big.Int).Mul(&s.acc, pow10(decimals))
	return roundDiv(num, perHourScaled)
}

// Fine is the sum in fine units (FineDecimals) as a float64 of currency
// units, what the usage rows carry: the exact integer amount, divided by
// 10^6 once (so 0.123457 prints as such, not as a float's accumulated
// error).
func (s *Sum) Fine() float64 {
	f, _ := new(big.Rat).SetFrac(s.Amount(FineDecimals), pow10(FineDecimals)).Float64()
	return f
}

func pow10(n int) *big.Int { return new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(n)), nil) }

// roundDiv is num/den rounded half away from zero (den > 0).
func roundDiv(num, den *big.Int) *big.Int {
	q, r := new(big.Int).QuoRem(num, den, new(big.Int))
	r.Abs(r)
	r.Lsh(r, 1)
	if r.Cmp(den) >= 0 {
		if num.Sign() < 0 {
			q.Sub(q, big.NewInt(1))
		} else {
			q.Add(q, big.NewInt(1))
		}
	}
	return q
}

// ErrOverflow is returned when an amount does not fit in int64.
var ErrOverflow = errors.New("amount does not fit in 64 bits")

// Amount is the cost of quantity q (rollup fixed point, >= 0) at price p
// in units of 10^-decimals of the currency (0 <= decimals <= 9), rounded
// half up: q × p × 10^decimals / 3.6e18. The product q × p is taken in 128
// bits and cannot overflow (q < 2^63, p <= MaxPrice < 2^50, so q × p <
// 2^113); the divisor 3.6e18 / 10^decimals is an exact integer. The result
// is ErrOverflow only if it does not fit in int64 itself: one
// namespace-day at the sample bounds (1e6 cores, or 1 PiB, for a 25-hour
// day: 9.4e16) at MaxPrice is 2.6e15 units at 2 decimals (3,500 of them
// fit in an int64), and would be 2.6e19 at 6, which is refused rather than
// wrapped. Realistic days are ten orders of magnitude below either.
func Amount(q int64, p Price, decimals int) (int64, error) {
	if q < 0 || p < 0 || decimals < 0 || decimals > PriceDecimals {
		return 0, errors.New("amount: negative quantity or price, or decimals outside 0..9")
	}
	// q × p / (3.6e18 / 10^decimals): the divisor is an integer for
	// decimals <= 9 (3.6e9 at 9, 3.6e18 at 0).
	div := uint64(rollup.Scale*rollup.UnitSecondsPerHour) * uint64(PriceScale) / pow10u(decimals)
	v, ok := MulDivRound(uint64(q), uint64(p), div)
	if !ok || v > 1<<63-1 {
		return 0, ErrOverflow
	}
	return int64(v), nil
}

func pow10u(n int) uint64 {
	v := uint64(1)
	for range n {
		v *= 10
	}
	return v
}

// MulDivRound is a×b/d rounded half up, with a×b in 128 bits; ok is false
// when the quotient does not fit in 64 bits (or d is 0).
func MulDivRound(a, b, d uint64) (uint64, bool) {
	if d == 0 {
		return 0, false
	}
	hi, lo := bits.Mul64(a, b)
	if hi >= d {
		return 0, false
	}
	q, r := bits.Div64(hi, lo, d)
	// r < d; round half up: r >= d - r, without overflowing 2r.
	if r >= d-r {
		if q == 1<<64-1 {
			return 0, false
		}
		q++
	}
	return q, true
}
