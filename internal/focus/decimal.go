package focus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"math/bits"
	"strconv"
	"strings"

	"github.com/alauda/costmeter/internal/rollup"
)

// Dec is a DECIMAL(Precision, Scale) value as Parquet stores it: a 16-byte
// big-endian two's complement count of 10^-Scale units. Values this
// package computes fit in an int64 count (9.2e9 in the currency or the
// unit); the column type leaves room for warehouses to sum them.
type Dec [16]byte

// unit is 10^Scale, one in Dec's count.
const unit = 1_000_000_000

// DecOf returns the Dec counting n units of 10^-Scale.
func DecOf(n int64) Dec {
	var d Dec
	binary.BigEndian.PutUint64(d[8:], uint64(n))
	if n < 0 {
		binary.BigEndian.PutUint64(d[:8], ^uint64(0))
	}
	return d
}

// Units returns d's count of 10^-Scale units; ok is false when it does
// not fit an int64.
func (d Dec) Units() (n int64, ok bool) {
	hi, lo := binary.BigEndian.Uint64(d[:8]), binary.BigEndian.Uint64(d[8:])
	n = int64(lo)
	if (n < 0 && hi != ^uint64(0)) || (n >= 0 && hi != 0) {
		return 0, false
	}
	return n, true
}

// String formats d with exactly Scale digits after the point.
func (d Dec) String() string {
	n, ok := d.Units()
	if !ok {
		return "overflow"
	}
	return FormatUnits(n)
}

// FormatUnits formats a count of 10^-Scale units as a decimal with Scale
// digits after the point.
func FormatUnits(n int64) string {
	neg := n < 0
	u := uint64(n)
	if neg {
		u = -u
	}
	s := strconv.FormatUint(u, 10)
	if len(s) <= Scale {
		s = strings.Repeat("0", Scale-len(s)+1) + s
	}
	out := s[:len(s)-Scale] + "." + s[len(s)-Scale:]
	if neg {
		return "-" + out
	}
	return out
}

// Price is a unit price in exact decimal form: Num / 10^Exp per unit-hour.
type Price struct {
	Num *big.Int
	Exp int
}

// PriceOf converts a price list's number to its exact decimal: the
// shortest decimal that reads back as f, which is the literal the price
// list holds for any literal of up to 15 significant digits.
func PriceOf(f float64) (Price, error) {
	s := strconv.FormatFloat(f, 'f', -1, 64)
	whole, frac, _ := strings.Cut(s, ".")
	num, ok := new(big.Int).SetString(whole+frac, 10)
	if !ok {
		return Price{}, fmt.Errorf("price %v is not a decimal number", f)
	}
	return Price{Num: num, Exp: len(frac)}, nil
}

// Units returns the price in 10^-Scale units, rounded half away from
// zero (a price of more than Scale decimals is stated rounded).
func (p Price) Units() int64 { return roundDiv(new(big.Int).Mul(p.Num, pow10(Scale)), pow10(p.Exp)) }

// perHour is how many rollup fixed-point units make one unit-hour.
const perHour = rollup.Scale * rollup.UnitSecondsPerHour

// QuantityUnits converts a fixed-point rollup sum (rollup.Scale) to
// unit-hours in 10^-Scale units, rounded half away from zero: fixed ×
// 10^Scale / (rollup.Scale × 3600).
func QuantityUnits(fixed int64) int64 {
	// fixed × 10^9 / 3.6e9 = 5·fixed/18; half up is floor((5·fixed+9)/18).
	if fixed >= 0 && fixed < (math.MaxInt64-9)/5 {
		return (5*fixed + 9) / 18
	}
	return roundDiv(new(big.Int).Mul(big.NewInt(fixed), pow10(Scale)), big.NewInt(perHour))
}

// CostUnits is the cost of a fixed-point rollup sum at price p, in
// 10^-Scale units of the currency, computed from the exact quantity (not
// the rounded one) and rounded once, half away from zero:
// fixed × p.Num × 10^Scale / (rollup.Scale × 3600 × 10^p.Exp).
func CostUnits(fixed int64, p Price) (int64, error) {
	// fixed × Num × 10^9 / (3.6e9 × 10^Exp) = 5·fixed·Num / (18·10^Exp):
	// in uint64 when it fits, which it does for any namespace-day at any
	// sane price; math/big otherwise.
	if fixed >= 0 && p.Num.IsUint64() && p.Exp < 18 {
		hi, lo := bits.Mul64(uint64(fixed), p.Num.Uint64())
		hi5, n := bits.Mul64(lo, 5)
		if hi == 0 && hi5 == 0 {
			den := 18 * uint64Pow10[p.Exp]
			if n <= math.MaxUint64-den/2 {
				if q := (n + den/2) / den; q <= math.MaxInt64 {
					return int64(q), nil
				}
			}
		}
	}
	num := new(big.Int).Mul(big.NewInt(fixed), p.Num)
	num.Mul(num, pow10(Scale))
	den := new(big.Int).Mul(big.NewInt(perHour), pow10(p.Exp))
	n, ok := roundDivOK(num, den)
	if !ok {
		return 0, fmt.Errorf("%w: %s unit-hours at %s", ErrOverflow, FormatUnits(QuantityUnits(fixed)), FormatUnits(p.Units()))
	}
	return n, nil
}

// RatioUnits is covered/total in 10^-Scale units, rounded half away from
// zero.
func RatioUnits(covered, total int64) int64 {
	if total <= 0 {
		return 0
	}
	return roundDiv(new(big.Int).Mul(big.NewInt(covered), pow10(Scale)), big.NewInt(total))
}

// ErrOverflow is wrapped by the errors of an amount beyond an int64
// count of 10^-Scale units (9.2e9 in the currency or unit-hours).
var ErrOverflow = errors.New("amount out of range")

// roundDivOK is num/den rounded half away from zero (den > 0); ok is
// false when the result does not fit an int64.
func roundDivOK(num, den *big.Int) (int64, bool) {
	q, r := new(big.Int).QuoRem(num, den, new(big.Int))
	r.Abs(r).Lsh(r, 1)
	if r.Cmp(den) >= 0 {
		if num.Sign() < 0 {
			q.Sub(q, big.NewInt(1))
		} else {
			q.Add(q, big.NewInt(1))
		}
	}
	return q.Int64(), q.IsInt64()
}

func roundDiv(num, den *big.Int) int64 {
	n, _ := roundDivOK(num, den)
	return n
}

var uint64Pow10 = func() [18]uint64 {
	var out [18]uint64
	out[0] = 1
	for i := 1; i < len(out); i++ {
		out[i] = out[i-1] * 10
	}
	return out
}()

var pow10s = func() []*big.Int {
	out := make([]*big.Int, 40)
	out[0] = big.NewInt(1)
	for i := 1; i < len(out); i++ {
		out[i] = new(big.Int).Mul(out[i-1], big.NewInt(10))
	}
	return out
}()

func pow10(n int) *big.Int {
	if n < len(pow10s) {
		return pow10s[n]
	}
	return new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(n)), nil)
}
