package pricing_test

import (
	"math/big"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/alauda/costmeter/internal/pricing"
	"github.com/alauda/costmeter/internal/rollup"
)

func day(s string) rollup.Day {
	var y, m, d int
	for i, p := range strings.Split(s, "-") {
		n := 0
		for _, c := range p {
			n = n*10 + int(c-'0')
		}
		switch i {
		case 0:
			y = n
		case 1:
			m = n
		default:
			d = n
		}
	}
	return rollup.DayFromDate(y, timeMonth(m), d)
}

func mustParse(t *testing.T, body string) *pricing.List {
	t.Helper()
	l, err := pricing.Parse([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestMostSpecificRow: an exact cluster beats a glob, a glob with more
// literal characters beats one with fewer, every glob beats the rows
// without a cluster, and a pattern whose prices start later does not apply
// before its first from-date.
func TestMostSpecificRow(t *testing.T) {
	l := mustParse(t, `
currency: EUR
decimals: 3
prices:
  - {item: Cpu, method: Effective, from: "2025-01-01", price: 0.35}
  - {item: Cpu, method: Effective, from: "2025-06-01", price: 0.30}
  - {item: Cpu, method: Effective, cluster: "gpu-*", from: "2025-01-01", price: "1.1"}
  - {item: Cpu, method: Effective, cluster: "gpu-eu-*", from: "2025-01-01", price: "1.2"}
  - {item: Cpu, method: Effective, cluster: gpu-eu-7, from: "2025-03-01", price: "0.000000001"}
  - {item: Memory, method: Usage, cluster: "gpu-*", from: "2025-01-01", price: 4}
`)
	if l.Currency() != "EUR" || l.Decimals() != 3 {
		t.Errorf("currency %q decimals %d", l.Currency(), l.Decimals())
	}
	for _, tc := range []struct {
		item    rollup.Item
		method  rollup.Method
		cluster string
		day     string
		want    pricing.Price
		ok      bool
	}{
		{rollup.Cpu, rollup.Effective, "cpu-1", "2025-02-01", 350_000_000, true},
		{rollup.Cpu, rollup.Effective, "cpu-1", "2025-06-01", 300_000_000, true},
		{rollup.Cpu, rollup.Effective, "", "2025-06-01", 300_000_000, true},
		{rollup.Cpu, rollup.Effective, "cpu-1", "2024-12-31", 0, false},
		{rollup.Cpu, rollup.Effective, "gpu-us-1", "2025-02-01", 1_100_000_000, true},
		{rollup.Cpu, rollup.Effective, "gpu-eu-1", "2025-02-01", 1_200_000_000, true},
		{rollup.Cpu, rollup.Effective, "gpu-eu-7", "2025-02-28", 1_200_000_000, true}, // before its own row
		{rollup.Cpu, rollup.Effective, "gpu-eu-7", "2025-03-01", 1, true},
		{rollup.Memory, rollup.Usage, "gpu-1", "2025-03-01", 4_000_000_000, true},
		{rollup.Memory, rollup.Usage, "cpu-1", "2025-03-01", 0, false},
		{rollup.Storage, rollup.Usage, "gpu-1", "2025-03-01", 0, false},
	} {
		got, ok := l.Price(tc.item, tc.method, tc.cluster, day(tc.day))
		if got != tc.want || ok != tc.ok {
			t.Errorf("Price(%s, %s, %q, %s) = %d, %v; want %d, %v", tc.item, tc.method, tc.cluster, tc.day, got, ok, tc.want, tc.ok)
		}
	}
	if l.SameForEveryCluster(rollup.Cpu, rollup.Effective) || !l.SameForEveryCluster(rollup.Cpu, rollup.Usage) {
		t.Error("SameForEveryCluster is wrong")
	}
	if !l.Has(rollup.Memory, rollup.Usage) || l.Has(rollup.Memory, rollup.Request) {
		t.Error("Has is wrong")
	}
	var none *pricing.List
	if none.Has(rollup.Cpu, rollup.Usage) || none.Decimals() != pricing.DefaultDecimals || none.Currency() != "" {
		t.Error("the nil list has prices")
	}
	if d := mustParse(t, "prices: []").Decimals(); d != 2 {
		t.Errorf("default decimals %d, want 2", d)
	}
}

// TestParseErrors lists every problem of a file, each with its exact
// message.
func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       []string
	}{
		{"unknown item", "prices: [{item: Gpu, method: Usage, from: '2024-01-01', price: 1}]",
			[]string{`prices[0].item: "Gpu" is not Cpu, Memory or Storage`}},
		{"unknown method", "prices: [{item: Cpu, method: Peak, from: '2024-01-01', price: 1}]",
			[]string{`prices[0].method: "Peak" is not Effective, Request, Usage or ProjectQuota`}},
		{"negative", "prices: [{item: Cpu, method: Usage, from: '2024-01-01', price: -1}]",
			[]string{`prices[0].price: -1 is negative`}},
		{"date", "prices: [{item: Cpu, method: Usage, from: '01/01/2024', price: 1}]",
			[]string{`prices[0].from: "01/01/2024" is not a date YYYY-MM-DD`}},
		{"no price", "prices: [{item: Cpu, method: Usage, from: '2024-01-01'}]",
			[]string{`prices[0].price: required, a decimal number >= 0`}},
		{"too precise", "prices: [{item: Cpu, method: Usage, from: '2024-01-01', price: '0.1234567891'}]",
			[]string{`prices[0].price: 0.1234567891 has more than 9 decimal places`}},
		{"too precise number", "prices: [{item: Cpu, method: Usage, from: '2024-01-01', price: 1.0e-10}]",
			[]string{`prices[0].price: 1e-10 has more than 9 decimal places`}},
		{"not a number", "prices: [{item: Cpu, method: Usage, from: '2024-01-01', price: 'cheap'}]",
			[]string{`prices[0].price: "cheap" is not a decimal number`}},
		{"fraction", "prices: [{item: Cpu, method: Usage, from: '2024-01-01', price: '1/3'}]",
			[]string{`prices[0].price: "1/3" is not a decimal number`}},
		{"too large", "prices: [{item: Cpu, method: Usage, from: '2024-01-01', price: '1000000.000000001'}]",
			[]string{`prices[0].price: 1000000.000000001 is above the bound 1000000.000000000`}},
		{"same day", "prices: [{item: Cpu, method: Usage, from: '2024-01-01', price: 1}, {item: Cpu, method: Usage, from: '2024-01-01', price: 2}]",
			[]string{`prices[0] and prices[1]: two prices of Cpu Usage from 20240101`}},
		{"same day on a cluster", "prices: [{item: Cpu, method: Usage, cluster: a, from: '2024-01-01', price: 1}, {item: Cpu, method: Usage, from: '2024-01-01', price: 1}, {item: Cpu, method: Usage, cluster: a, from: '2024-01-01', price: 2}]",
			[]string{`prices[0] and prices[2]: two prices of Cpu Usage on cluster "a" from 20240101`}},
		{"unknown field", "prices: [{item: Cpu, method: Usage, from: '2024-01-01', price: 1, currency: USD}]",
			[]string{`unknown field "currency"`}},
		{"bad cluster", "prices: [{item: Cpu, method: Usage, cluster: 'GPU-*', from: '2024-01-01', price: 1}]",
			[]string{`prices[0].cluster: "GPU-*" is not a cluster name or a glob of one (lowercase DNS labels, '.', '*', '?')`}},
		{"ambiguous globs", "prices: [{item: Cpu, method: Usage, cluster: 'gpu-*', from: '2024-01-01', price: 1}, {item: Cpu, method: Usage, cluster: '*-eu1', from: '2024-02-01', price: 2}]",
			[]string{`prices[1] (cluster "*-eu1") and prices[0] (cluster "gpu-*"): both match some cluster names with the same specificity (4 literal characters) for Cpu Usage; make one of them more specific`}},
		{"currency", "currency: euro\nprices: []", []string{`currency: "euro" is not an ISO 4217 code (three capital letters)`}},
		{"decimals", "decimals: 7\nprices: []", []string{`decimals: 7 is not between 0 and 6`}},
		{"every problem", "decimals: -1\nprices: [{item: Gpu, method: Peak, from: x, price: -2}]", []string{
			`decimals: -1 is not between 0 and 6`,
			`prices[0].item: "Gpu" is not Cpu, Memory or Storage`,
			`prices[0].method: "Peak" is not Effective, Request, Usage or ProjectQuota`,
			`prices[0].from: "x" is not a date YYYY-MM-DD`,
			`prices[0].price: -2 is negative`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := pricing.Parse([]byte(tc.body))
			if err == nil {
				t.Fatalf("accepted %s", tc.body)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not say %q", err, w)
				}
			}
		})
	}
	// Globs that cannot match a common name, or differ in specificity, are
	// no ambiguity.
	mustParse(t, `prices: [{item: Cpu, method: Usage, cluster: 'gpu-*', from: '2024-01-01', price: 1}, {item: Cpu, method: Usage, cluster: 'cpu-*', from: '2024-01-01', price: 2},
  {item: Cpu, method: Usage, cluster: 'g*', from: '2024-01-01', price: 3}, {item: Cpu, method: Usage, cluster: '*-eu', from: '2024-01-01', price: 3}, {item: Cpu, method: Request, cluster: '*-eu1', from: '2024-01-01', price: 3}]`)
}

// TestDecimalsExact: every decimal of up to 9 places reads exactly, as a
// quoted string and as a YAML number of up to 15 significant digits.
func TestDecimalsExact(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		whole := r.Int64N(1_000_000)
		frac := r.Int64N(1_000_000_000)
		if whole >= 100_000 { // keep numbers within 15 significant digits
			frac -= frac % 1000
		}
		text := pricing.FormatDecimal(whole*1_000_000_000+frac, 9)
		for _, body := range []string{"prices: [{item: Cpu, method: Usage, from: '2024-01-01', price: " + text + "}]",
			"prices: [{item: Cpu, method: Usage, from: '2024-01-01', price: '" + text + "'}]"} {
			l := mustParse(t, body)
			got, _ := l.Price(rollup.Cpu, rollup.Usage, "x", day("2024-01-01"))
			if int64(got) != whole*1_000_000_000+frac {
				t.Fatalf("%s read as %d nanos", body, got)
			}
		}
	}
}

// model is the cost of q at p in 10^-decimals, from exact rationals,
// rounded half up by comparing the remainder with one half.
func model(q int64, p pricing.Price, decimals int) *big.Int {
	v := new(big.Rat).SetFrac(new(big.Int).Mul(big.NewInt(q), big.NewInt(int64(p))), big.NewInt(rollup.Scale*rollup.UnitSecondsPerHour))
	v.Quo(v, new(big.Rat).SetInt64(pricing.PriceScale))
	v.Mul(v, new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(decimals)), nil)))
	floor := new(big.Int).Quo(v.Num(), v.Denom())
	rest := new(big.Rat).Sub(v, new(big.Rat).SetInt(floor))
	if rest.Cmp(big.NewRat(1, 2)) >= 0 {
		floor.Add(floor, big.NewInt(1))
	}
	return floor
}

func TestAmount(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	const dayAtBounds = 1e6 * 90_000 * rollup.Scale // 1e6 cores for 25 hours
	for i := range 20000 {
		var q int64
		switch i % 3 {
		case 0:
			q = r.Int64N(dayAtBounds + 1)
		case 1:
			q = r.Int64N(1 << 40)
		default:
			q = r.Int64()
		}
		p := pricing.Price(r.Int64N(int64(pricing.MaxPrice) + 1))
		if i%5 == 0 {
			p = pricing.Price(r.Int64N(10_000_000_000))
		}
		decimals := r.IntN(7)
		want := model(q, p, decimals)
		got, err := pricing.Amount(q, p, decimals)
		if !want.IsInt64() {
			if err == nil {
				t.Fatalf("Amount(%d, %d, %d) = %d without an error; the exact amount %s does not fit", q, p, decimals, got, want)
			}
			continue
		}
		if err != nil || got != want.Int64() {
			t.Fatalf("Amount(%d, %d, %d) = %d, %v; want %s", q, p, decimals, got, err, want)
		}
		var s pricing.Sum
		s.Add(q, p)
		if s.Amount(decimals).Cmp(want) != 0 {
			t.Fatalf("Sum.Amount = %s, want %s", s.Amount(decimals), want)
		}
	}
	// The bounds of the doc comment: a namespace-day at the sample bounds
	// at the highest price fits at 2 decimals, and is refused at 6.
	if _, err := pricing.Amount(dayAtBounds*94/90, pricing.MaxPrice, 2); err != nil {
		t.Errorf("a namespace-day at the bounds: %v", err)
	}
	if _, err := pricing.Amount(dayAtBounds*94/90, pricing.MaxPrice, 6); err == nil {
		t.Errorf("a namespace-day at the bounds fits at 6 decimals: the doc comment is wrong")
	}
	// 3600 core-seconds at 0.35: exactly 0.35 in every unit.
	if a, _ := pricing.Amount(3600*rollup.Scale, 350_000_000, 2); a != 35 {
		t.Errorf("one core-hour at 0.35 = %d cents", a)
	}
	var s pricing.Sum
	s.Add(1800*rollup.Scale, 1)     // half an hour at one nano: 0.5 nano
	s.Add(1800*rollup.Scale, 10000) // and at 10 micro-units: 5 micro-units
	if got := s.Fine(); got != 0.000005 {
		t.Errorf("Fine = %v, want 0.000005 (5.0000005 micro-units rounded once)", got)
	}
}

func TestMulDivRound(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for range 20000 {
		a, b, d := r.Uint64(), r.Uint64N(1<<40), r.Uint64N(1<<62)+1
		q := new(big.Int).Mul(new(big.Int).SetUint64(a), new(big.Int).SetUint64(b))
		q2 := new(big.Int).Lsh(q, 1)
		q2.Add(q2, new(big.Int).SetUint64(d))
		q2.Quo(q2, new(big.Int).Lsh(new(big.Int).SetUint64(d), 1)) // floor((2ab + d) / 2d): half up
		got, ok := pricing.MulDivRound(a, b, d)
		if ok != q2.IsUint64() || ok && got != q2.Uint64() {
			t.Fatalf("MulDivRound(%d, %d, %d) = %d, %v; want %s", a, b, d, got, ok, q2)
		}
	}
}

func timeMonth(m int) time.Month { return time.Month(m) }
