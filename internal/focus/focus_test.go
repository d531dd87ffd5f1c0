package focus_test

import (
	"bytes"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/alauda/costmeter/internal/focus"
	"github.com/alauda/costmeter/internal/rollup"
)

// exactUnits is the test's own model of an amount: num/den in 10^-9 units
// rounded half away from zero, through big.Rat.
func exactUnits(num, den *big.Rat) int64 {
	q := new(big.Rat).Quo(num, den)
	q.Mul(q, big.NewRat(1_000_000_000, 1))
	fl := new(big.Int).Quo(q.Num(), q.Denom())
	rest := new(big.Rat).Sub(q, new(big.Rat).SetInt(fl))
	if rest.Cmp(big.NewRat(1, 2)) >= 0 {
		fl.Add(fl, big.NewInt(1))
	}
	return fl.Int64()
}

func TestAmounts(t *testing.T) {
	tests := []struct {
		name  string
		fixed int64
		price float64
	}{
		{"one core-hour", 3_600_000_000, 0.35},
		{"a third of a second", 333_333, 0.35},
		{"half up", 18, 0},         // 18/3.6 = 5 exactly
		{"rounds half away", 9, 1}, // 2.5 units
		{"large", 86_400_000_000_000_000, 1.678901},
		{"odd price", 7_777_777_777, 0.1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hours := big.NewRat(tc.fixed, 3_600_000_000)
			if got, want := focus.QuantityUnits(tc.fixed), exactUnits(hours, big.NewRat(1, 1)); got != want {
				t.Fatalf("quantity %d units, want %d", got, want)
			}
			p, err := focus.PriceOf(tc.price)
			if err != nil {
				t.Fatal(err)
			}
			pr, ok := new(big.Rat).SetString(focus.FormatUnits(p.Units()))
			if !ok {
				t.Fatal("price does not format")
			}
			cost := new(big.Rat).Mul(hours, pr)
			got, err := focus.CostUnits(tc.fixed, p)
			if err != nil {
				t.Fatal(err)
			}
			if want := exactUnits(cost, big.NewRat(1, 1)); got != want {
				t.Fatalf("cost %d units, want %d (%s)", got, want, cost.FloatString(12))
			}
		})
	}
}

func TestDecFormat(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{{0, "0.000000000"}, {1, "0.000000001"}, {-1_500_000_000, "-1.500000000"}, {123_000_000_007, "123.000000007"}} {
		if got := focus.DecOf(tc.n).String(); got != tc.want {
			t.Errorf("DecOf(%d) = %s, want %s", tc.n, got, tc.want)
		}
	}
}

func testDay() *focus.Day {
	return focus.NewDay(focus.Issuer{AccountID: "acme", AccountName: "Acme", Name: "platform", Currency: "EUR"},
		rollup.DayFromDate(2026, time.March, 29), time.UTC)
}

func origin(ns string, it rollup.Item, eff int64) focus.Row {
	var v rollup.Values
	v[rollup.Field(it, rollup.Effective)] = eff
	v[rollup.Field(it, rollup.Usage)] = eff / 2
	p, _ := focus.PriceOf(0.35)
	r, err := testDay().Origin(focus.Charge{Entity: rollup.Entity{Project: "p", Cluster: "c", Namespace: ns}, Item: it, Values: &v, Price: &p, CoverageUnits: 1_000_000_000})
	if err != nil {
		panic(err)
	}
	return r
}

func TestCostOverflow(t *testing.T) {
	p, _ := focus.PriceOf(12345.678901)
	if _, err := focus.CostUnits(86_400_000_000_000_000, p); !errors.Is(err, focus.ErrOverflow) {
		t.Fatalf("a cost of 3e11: %v, want ErrOverflow", err)
	}
}

func TestSplitRatiosSumToOne(t *testing.T) {
	o := origin("shared", rollup.Cpu, 3_600_000_000*7+1)
	rows, err := focus.Split(o, focus.Allocation{MethodID: "proportional", Shares: []focus.Share{
		{ResourceID: "c/a", ResourceName: "a", Basis: 1}, {ResourceID: "c/b", ResourceName: "b", Basis: 1}, {ResourceID: "c/z", ResourceName: "z", Basis: 1},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var ratio, cost, q int64
	for _, r := range rows {
		n, _ := r.XAllocatedRatio.Units()
		c, _ := r.EffectiveCost.Units()
		qq, _ := r.ConsumedQuantity.Units()
		ratio, cost, q = ratio+n, cost+c, q+qq
	}
	oc, _ := o.EffectiveCost.Units()
	oq, _ := o.ConsumedQuantity.Units()
	if ratio != 1_000_000_000 || cost != oc || q != oq {
		t.Fatalf("ratios %d (want 1e9), cost %d (want %d), quantity %d (want %d)", ratio, cost, oc, q, oq)
	}
	if err := focus.CheckRatios(rows); err != nil {
		t.Fatal(err)
	}
	bad := append([]focus.Row(nil), rows[:2]...)
	if err := focus.CheckRatios(bad); !errors.Is(err, focus.ErrAllocation) {
		t.Fatalf("two of three shares: %v, want ErrAllocation", err)
	}
	for _, a := range []focus.Allocation{
		{MethodID: "m"},
		{MethodID: "m", Shares: []focus.Share{{ResourceID: "x", Basis: 0}}},
		{MethodID: "m", Shares: []focus.Share{{ResourceID: "x", Basis: 1}, {ResourceID: "x", Basis: 1}}},
		{MethodID: "m", Shares: []focus.Share{{ResourceID: "x", Basis: -1}, {ResourceID: "y", Basis: 2}}},
	} {
		if _, err := focus.Split(o, a); !errors.Is(err, focus.ErrAllocation) {
			t.Errorf("Split(%+v) = %v, want ErrAllocation", a, err)
		}
	}
}

func TestCorrection(t *testing.T) {
	before := origin("a", rollup.Memory, 1_000_000)
	now := origin("a", rollup.Memory, 5_000_000)
	if _, ok := focus.Correction(&before, &before); ok {
		t.Fatal("a correction of unchanged values")
	}
	c, ok := focus.Correction(&before, &now)
	if !ok || c.ChargeClass == nil || *c.ChargeClass != "Correction" {
		t.Fatalf("correction %v %v", ok, c.ChargeClass)
	}
	sum := focus.Sum([]focus.Row{before, c})
	if sum.EffectiveCost != now.EffectiveCost || *sum.ConsumedQuantity != *now.ConsumedQuantity {
		t.Fatalf("delivered + correction = %s / %s, want %s / %s", sum.EffectiveCost, sum.ConsumedQuantity, now.EffectiveCost, now.ConsumedQuantity)
	}
}

func TestParquetSchemaAndDeterminism(t *testing.T) {
	var rows []focus.Row
	for _, ns := range []string{"a", "b"} {
		for _, it := range rollup.Items() {
			rows = append(rows, origin(ns, it, 123_456_789))
		}
	}
	write := func() []byte {
		var b bytes.Buffer
		w := focus.NewParquetWriter(&b)
		if err := w.Write(rows); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	one, two := write(), write()
	if !bytes.Equal(one, two) {
		t.Fatal("the same rows gave different bytes")
	}
	f, err := parquet.OpenFile(bytes.NewReader(one), int64(len(one)))
	if err != nil {
		t.Fatal(err)
	}
	fields := f.Schema().Fields()
	cols := focus.Columns()
	if len(fields) != len(cols) {
		t.Fatalf("%d parquet columns, %d listed", len(fields), len(cols))
	}
	for i, c := range cols {
		if fields[i].Name() != c.Name || fields[i].Optional() != c.Nullable {
			t.Errorf("column %d: parquet %s (optional %v), listed %s (nullable %v)", i, fields[i].Name(), fields[i].Optional(), c.Name, c.Nullable)
		}
	}
	var back []focus.Row
	if err := focus.ReadParquet(bytes.NewReader(one), func(rs []focus.Row) error { back = append(back, rs...); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(back) != len(rows) || back[5].EffectiveCost != rows[5].EffectiveCost || *back[5].Tags != "{}" {
		t.Fatalf("read back %d rows", len(back))
	}
	if rec := focus.Record(&rows[0], nil); len(rec) != len(cols) {
		t.Fatalf("csv record of %d fields, %d columns", len(rec), len(cols))
	}
}
