package pricing

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"strings"
)

// ParseDecimal reads a non-negative decimal number written in text (as in
// "0.35", "12", "1e-9", "1200.50") as an exact count of 10^-places units:
// ParseDecimal("0.35", 9) is 350000000. It never goes through a float.
// More precision than places, a negative number, a fraction or a value
// above max are errors that say which.
func ParseDecimal(s string, places int, max int64) (int64, error) {
	t := strings.TrimSpace(s)
	if t == "" || strings.ContainsAny(t, "/_") {
		return 0, fmt.Errorf("%q is not a decimal number", s)
	}
	r, ok := new(big.Rat).SetString(t)
	if !ok {
		return 0, fmt.Errorf("%q is not a decimal number", s)
	}
	if r.Sign() < 0 {
		return 0, fmt.Errorf("%s is negative", s)
	}
	r.Mul(r, new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(places)), nil)))
	if !r.IsInt() {
		return 0, fmt.Errorf("%s has more than %d decimal places", s, places)
	}
	n := r.Num()
	if !n.IsInt64() || n.Int64() > max {
		return 0, fmt.Errorf("%s is above the bound %s", s, FormatDecimal(max, places))
	}
	return n.Int64(), nil
}

// FormatDecimal writes n units of 10^-places as a decimal, with exactly
// places digits after the point (none when places is 0).
func FormatDecimal(n int64, places int) string {
	neg := n < 0
	u := new(big.Int).SetInt64(n)
	u.Abs(u)
	s := u.String()
	if places > 0 {
		if len(s) <= places {
			s = strings.Repeat("0", places-len(s)+1) + s
		}
		s = s[:len(s)-places] + "." + s[len(s)-places:]
	}
	if neg {
		s = "-" + s
	}
	return s
}

// DecimalText is a number of a YAML or JSON file kept as its text, so it
// can be read exactly with ParseDecimal. It accepts a number (YAML's
// numbers reach it through a float64: up to 15 significant digits survive
// unchanged, so files that need more write the number as a string) or a
// string.
type DecimalText string

// UnmarshalJSON accepts a JSON number or a string.
func (d *DecimalText) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*d = DecimalText(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("%s is not a number", b)
	}
	*d = DecimalText(n)
	return nil
}
