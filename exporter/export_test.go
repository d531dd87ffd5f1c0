package exporter_test

import (
	"context"
	"encoding/json"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alauda/costmeter/exporter"
	"github.com/alauda/costmeter/internal/focus"
	"github.com/alauda/costmeter/internal/rollup"
)

// focusColumns is the column list of ../shared/reference/focus.md that
// the export claims, with the DuckDB type each must read as and whether
// it may be null, written here by hand from that page (not from the
// package's own list).
var focusColumns = []struct {
	name, typ string
	nullable  bool
}{
	{"BilledCost", "DECIMAL(38,9)", false},
	{"BillingAccountId", "VARCHAR", false},
	{"BillingAccountName", "VARCHAR", false},
	{"BillingCurrency", "VARCHAR", false},
	{"BillingPeriodEnd", "TIMESTAMP WITH TIME ZONE", false},
	{"BillingPeriodStart", "TIMESTAMP WITH TIME ZONE", false},
	{"ChargeCategory", "VARCHAR", false},
	{"ChargeClass", "VARCHAR", true},
	{"ChargeDescription", "VARCHAR", false},
	{"ChargeFrequency", "VARCHAR", false},
	{"ChargePeriodEnd", "TIMESTAMP WITH TIME ZONE", false},
	{"ChargePeriodStart", "TIMESTAMP WITH TIME ZONE", false},
	{"ConsumedQuantity", "DECIMAL(38,9)", true},
	{"ConsumedUnit", "VARCHAR", true},
	{"ContractedCost", "DECIMAL(38,9)", false},
	{"ContractedUnitPrice", "DECIMAL(38,9)", true},
	{"EffectiveCost", "DECIMAL(38,9)", false},
	{"InvoiceIssuerName", "VARCHAR", false},
	{"ListCost", "DECIMAL(38,9)", false},
	{"ListUnitPrice", "DECIMAL(38,9)", true},
	{"PricingCategory", "VARCHAR", true},
	{"PricingQuantity", "DECIMAL(38,9)", true},
	{"PricingUnit", "VARCHAR", true},
	{"ProviderName", "VARCHAR", false},
	{"PublisherName", "VARCHAR", false},
	{"ResourceId", "VARCHAR", true},
	{"ResourceName", "VARCHAR", true},
	{"ResourceType", "VARCHAR", true},
	{"ServiceCategory", "VARCHAR", false},
	{"ServiceName", "VARCHAR", false},
	{"SubAccountId", "VARCHAR", true},
	{"SubAccountName", "VARCHAR", true},
	{"Tags", "VARCHAR", true},
	{"AllocatedMethodId", "VARCHAR", true},
	{"AllocatedMethodDetails", "VARCHAR", true},
	{"AllocatedResourceId", "VARCHAR", true},
	{"AllocatedResourceName", "VARCHAR", true},
	{"AllocatedTags", "VARCHAR", true},
	{"x_Cluster", "VARCHAR", false},
	{"x_Item", "VARCHAR", false},
	{"x_UsageQuantity", "DECIMAL(38,9)", true},
	{"x_RequestQuantity", "DECIMAL(38,9)", true},
	{"x_EffectiveFixedPoint", "BIGINT", false},
	{"x_CoverageRatio", "DECIMAL(38,9)", true},
	{"x_AllocatedRatio", "DECIMAL(38,9)", true},
}

// The mandatory columns of focus.md (1.0 to 1.2, names of the version
// targeted) that must never be null.
var mandatoryNotNull = []string{"BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "BillingAccountId",
	"BillingAccountName", "BillingCurrency", "BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart",
	"ChargePeriodEnd", "ChargeCategory", "ChargeDescription", "InvoiceIssuerName", "ProviderName", "PublisherName",
	"ServiceCategory", "ServiceName"}

// allowedValues are focus.md's allowed values of the restricted columns.
var allowedValues = map[string][]string{
	"ChargeCategory":  {"Usage", "Purchase", "Tax", "Credit", "Adjustment"},
	"ChargeClass":     {"Correction"},
	"ChargeFrequency": {"One-Time", "Recurring", "Usage-Based"},
	"PricingCategory": {"Standard", "Dynamic", "Committed", "Other"},
	"ServiceCategory": {"Compute", "Storage", "Networking", "AI and Machine Learning"},
}

// shareMon is a test allocator: ops/west/mon's Cpu is shared by
// team/east/api and team/east/web, 1:2, on every day.
type shareMon struct{}

func (shareMon) Allocations(context.Context, rollup.Day) (map[focus.OriginKey]focus.Allocation, error) {
	return map[focus.OriginKey]focus.Allocation{
		{Project: "ops", Cluster: "west", Namespace: "mon", Item: "Cpu"}: {MethodID: "test-shared-namespace", Shares: []focus.Share{
			{ResourceID: "east/api", ResourceName: "api", Basis: 1, BasisUnit: "weight"},
			{ResourceID: "east/web", ResourceName: "web", Basis: 2, BasisUnit: "weight", Tags: map[string]string{"team": "web"}},
		}},
	}, nil
}

func glob(dir string) string {
	return sqlString(filepath.ToSlash(dir) + "/billing_period=*/charge_date=*/focus.parquet")
}

func TestExportReadBackByDuckDB(t *testing.T) {
	e := newEnv(t)
	x := e.exporter(t, e.config("file://"+e.dir), exporter.WithAllocator(shareMon{}))
	if err := x.Backfill(context.Background(), firstDay, lastDay); err != nil {
		t.Fatal(err)
	}
	g := glob(e.dir)
	one := sqlString(filepath.Join(e.dir, exporter.ParquetPath(rollup.DayFromDate(2026, time.November, 3))))
	res := duckdb(t,
		"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet("+one+", hive_partitioning = false))",
		"SELECT name, repetition_type FROM parquet_schema("+one+") WHERE type IS NOT NULL",
		`SELECT x_Item, SubAccountId, x_Cluster, ResourceName, CAST(charge_date AS VARCHAR) AS day,
		   CAST(SUM(ConsumedQuantity) AS VARCHAR) AS q, CAST(SUM(EffectiveCost) AS VARCHAR) AS cost,
		   CAST(SUM(x_EffectiveFixedPoint) AS VARCHAR) AS fixed, CAST(SUM(BilledCost - ListCost) AS VARCHAR) AS diff
		 FROM read_parquet(`+g+`, hive_partitioning = true) GROUP BY ALL`,
		`SELECT x_Item, SubAccountId, CAST(charge_date AS VARCHAR) AS day, CAST(SUM(ConsumedQuantity) AS VARCHAR) AS q,
		   CAST(SUM(x_EffectiveFixedPoint) AS VARCHAR) AS fixed
		 FROM read_parquet(`+g+`, hive_partitioning = true) GROUP BY ALL`,
		`SELECT ResourceId, x_Item, CAST(charge_date AS VARCHAR) AS day, CAST(SUM(x_AllocatedRatio) AS VARCHAR) AS ratio, COUNT(*) AS n
		 FROM read_parquet(`+g+`, hive_partitioning = true) WHERE AllocatedMethodId IS NOT NULL GROUP BY ALL`,
		`SELECT DISTINCT 'ChargeCategory' AS col, ChargeCategory AS v FROM read_parquet(`+g+`)
		 UNION SELECT DISTINCT 'ChargeClass', ChargeClass FROM read_parquet(`+g+`)
		 UNION SELECT DISTINCT 'ChargeFrequency', ChargeFrequency FROM read_parquet(`+g+`)
		 UNION SELECT DISTINCT 'PricingCategory', PricingCategory FROM read_parquet(`+g+`)
		 UNION SELECT DISTINCT 'ServiceCategory', ServiceCategory FROM read_parquet(`+g+`)`,
		`SELECT COUNT(*) AS n FROM read_parquet(`+g+`) WHERE `+strings.Join(mandatoryNotNull, " IS NULL OR ")+` IS NULL
		   OR (ChargeClass IS NULL AND (ConsumedQuantity IS NULL OR ConsumedUnit IS NULL))
		   OR strftime(ChargePeriodStart AT TIME ZONE 'UTC', '%H:%M:%S') <> '00:00:00'
		   OR ChargePeriodEnd - ChargePeriodStart <> INTERVAL 1 DAY
		   OR BillingPeriodStart <> date_trunc('month', ChargePeriodStart AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
		   OR json_type(Tags) <> 'OBJECT' OR (AllocatedTags IS NOT NULL AND json_type(AllocatedTags) <> 'OBJECT')
		   OR (AllocatedMethodDetails IS NOT NULL AND json_type(AllocatedMethodDetails -> '$.Elements') <> 'ARRAY')`,
		`SELECT x_Item, ConsumedUnit, PricingUnit, ServiceCategory, COUNT(*) AS n FROM read_parquet(`+g+`) GROUP BY ALL`,
	)

	t.Run("schema", func(t *testing.T) {
		types, reps := res[0], res[1]
		if len(types) != len(focusColumns) || len(reps) != len(focusColumns) {
			t.Fatalf("%d columns (%d in the parquet schema), want %d", len(types), len(reps), len(focusColumns))
		}
		for i, c := range focusColumns {
			if n, typ := val(types[i]["column_name"]), val(types[i]["column_type"]); n != c.name || typ != c.typ {
				t.Errorf("column %d: %s %s, want %s %s", i, n, typ, c.name, c.typ)
			}
			want := "REQUIRED"
			if c.nullable {
				want = "OPTIONAL"
			}
			if n, r := val(reps[i]["name"]), val(reps[i]["repetition_type"]); n != c.name || r != want {
				t.Errorf("column %d: %s %s, want %s %s", i, n, r, c.name, want)
			}
			if !strings.HasPrefix(c.name, "x_") && strings.Contains(c.name, "_") {
				t.Errorf("column %s: a custom column must start with x_", c.name)
			}
		}
	})

	t.Run("allowed values and rules", func(t *testing.T) {
		for _, r := range res[5] {
			if r["v"] == nil {
				continue
			}
			col, v := val(r["col"]), val(r["v"])
			if !slices.Contains(allowedValues[col], v) {
				t.Errorf("%s = %q is not an allowed value %v", col, v, allowedValues[col])
			}
		}
		if n := val(res[6][0]["n"]); n != "0" {
			t.Errorf("%s rows break a FOCUS rule (null mandatory, consumed null on a usage row, day cut, billing period, JSON)", n)
		}
		want := map[string][3]string{"Cpu": {"Core-Hours", "Core-Hours", "Compute"}, "Memory": {"GiB-Hours", "GiB-Hours", "Compute"}, "Storage": {"GiB-Hours", "GiB-Hours", "Storage"}}
		for _, r := range res[7] {
			w := want[val(r["x_Item"])]
			if got := [3]string{val(r["ConsumedUnit"]), val(r["PricingUnit"]), val(r["ServiceCategory"])}; got != w {
				t.Errorf("%s: units and category %v, want %v", val(r["x_Item"]), got, w)
			}
		}
	})

	t.Run("allocated ratios sum to 1", func(t *testing.T) {
		if len(res[4]) == 0 {
			t.Fatal("no allocated rows: the test proves nothing")
		}
		for _, r := range res[4] {
			if val(r["ratio"]) != "1.000000000" || val(r["n"]) != "2" || val(r["ResourceId"]) != "west/mon" {
				t.Errorf("allocated %v", r)
			}
		}
	})

	t.Run("sums equal the usage API", func(t *testing.T) {
		type nsKey struct{ item, project, cluster, ns, day string }
		got := map[nsKey]map[string]*string{}
		for _, r := range res[2] {
			got[nsKey{val(r["x_Item"]), val(r["SubAccountId"]), val(r["x_Cluster"]), val(r["ResourceName"]), val(r["day"])}] = r
			if val(r["diff"]) != "0.000000000" {
				t.Errorf("BilledCost differs from ListCost: %v", r)
			}
		}
		type prKey struct{ item, project, day string }
		gotProject := map[prKey]map[string]*string{}
		for _, r := range res[3] {
			gotProject[prKey{val(r["x_Item"]), val(r["SubAccountId"]), val(r["day"])}] = r
		}
		checked := 0
		for _, it := range rollup.Items() {
			projectQ := map[prKey]*big.Rat{}
			for _, row := range e.apiRows(t, "namespace_all", it) {
				day := row.Start[:4] + "-" + row.Start[4:6] + "-" + row.Start[6:]
				k := nsKey{it.String(), row.Project, row.Cluster, row.Namespace, day}
				r, ok := got[k]
				if !ok {
					t.Errorf("%v: in the API, not in the export", k)
					continue
				}
				delete(got, k)
				fixed := fixedOf(t, row.Usage)
				hours := big.NewRat(fixed, 3_600_000_000)
				if atoi(t, r["fixed"]) != fixed {
					t.Errorf("%v: fixed point %s, API %d", k, val(r["fixed"]), fixed)
				}
				if q := decimal9(hours); val(r["q"]) != q {
					t.Errorf("%v: quantity %s, API %s", k, val(r["q"]), q)
				}
				d, _ := time.Parse(time.DateOnly, day)
				cost := new(big.Rat).Mul(hours, priceOf(it, rollup.DayFromDate(d.Date())))
				if c := decimal9(cost); val(r["cost"]) != c {
					t.Errorf("%v: cost %s, want %s", k, val(r["cost"]), c)
				}
				if row.Cost == nil {
					t.Fatalf("%v: the API gave no cost", k)
				}
				// The API prints costs rounded to pricing.FineDecimals (6).
				if f, _ := cost.Float64(); abs(*row.Cost-f) > 0.5e-6+1e-12 {
					t.Errorf("%v: API cost %v, exact %v", k, *row.Cost, f)
				}
				pk := prKey{it.String(), row.Project, day}
				if projectQ[pk] == nil {
					projectQ[pk] = new(big.Rat)
				}
				q, _ := new(big.Rat).SetString(decimal9(hours))
				projectQ[pk].Add(projectQ[pk], q)
				checked++
			}
			for _, row := range e.apiRows(t, "project_all", it) {
				day := row.Start[:4] + "-" + row.Start[4:6] + "-" + row.Start[6:]
				pk := prKey{it.String(), row.Project, day}
				r, ok := gotProject[pk]
				if !ok {
					t.Errorf("%v: in the API, not in the export", pk)
					continue
				}
				if fixed := fixedOf(t, row.Usage); atoi(t, r["fixed"]) != fixed {
					t.Errorf("%v: project fixed point %s, API %d", pk, val(r["fixed"]), fixed)
				}
				if q := decimal9(projectQ[pk]); val(r["q"]) != q {
					t.Errorf("%v: project quantity %s, the namespaces' %s", pk, val(r["q"]), q)
				}
			}
		}
		for k := range got {
			t.Errorf("%v: in the export, not in the API", k)
		}
		if checked < 100 {
			t.Fatalf("only %d namespace-days compared: the test proves little", checked)
		}
	})

	t.Run("manifest", func(t *testing.T) {
		checkManifest(t, e.dir, rollup.DayFromDate(2026, time.November, 1), 7)
	})
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}

// checkManifest reads the billing period's manifest and checks that every
// file it lists is there with its size and SHA-256, and that it lists
// days days.
func checkManifest(t *testing.T, dir string, d rollup.Day, days int) exporter.Manifest {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, exporter.ManifestPath(d)))
	if err != nil {
		t.Fatal(err)
	}
	var m exporter.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Days) != days {
		t.Fatalf("manifest lists %d days, want %d", len(m.Days), days)
	}
	for _, day := range m.Days {
		if len(day.Files) != 2 || len(day.Completeness) == 0 {
			t.Errorf("%s: %d files, %d clusters' completeness", day.ChargeDate, len(day.Files), len(day.Completeness))
		}
		for _, f := range day.Files {
			if got := sha256File(t, filepath.Join(dir, f.Path)); got != f.SHA256 {
				t.Errorf("%s: sha256 %s, manifest %s", f.Path, got, f.SHA256)
			}
		}
	}
	return m
}
