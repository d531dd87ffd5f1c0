// Package focus is the FinOps FOCUS 1.3 row schema of costmeter's export:
// the columns, their types and allowed values, exact decimal amounts, the
// split-allocation rows of the chargeback work, and the writers that lay
// rows out as Parquet (zstd) and gzipped CSV.
//
// Every amount is a Decimal with Precision digits and Scale of them after
// the point, never floating point: quantities and costs are computed from
// the rollups' fixed-point integers (rollup.Scale) with integer arithmetic
// and rounded once, half away from zero, to Scale digits.
package focus

import (
	"time"

	"github.com/alauda/costmeter/internal/rollup"
)

// Version is the FOCUS version the columns follow.
const Version = "1.3"

// Precision and Scale are every Decimal column's: DECIMAL(38,9). Parquet
// stores it as a 16-byte big-endian two's complement integer counting
// 10^-Scale units (FOCUS_Spec issue 1077: warehouses break on Double).
const (
	Precision = 38
	Scale     = 9
)

// Row is one FOCUS row: one billing day × namespace × item (an origin
// charge), or one allocated share of an origin charge. The struct tags are
// the Parquet schema; Columns lists the same columns for readers.
type Row struct {
	BilledCost             Dec     `parquet:"BilledCost,decimal(9:38)"`
	BillingAccountId       string  `parquet:"BillingAccountId"`
	BillingAccountName     string  `parquet:"BillingAccountName"`
	BillingCurrency        string  `parquet:"BillingCurrency"`
	BillingPeriodEnd       int64   `parquet:"BillingPeriodEnd,timestamp(millisecond)"`
	BillingPeriodStart     int64   `parquet:"BillingPeriodStart,timestamp(millisecond)"`
	ChargeCategory         string  `parquet:"ChargeCategory"`
	ChargeClass            *string `parquet:"ChargeClass,optional"`
	ChargeDescription      string  `parquet:"ChargeDescription"`
	ChargeFrequency        string  `parquet:"ChargeFrequency"`
	ChargePeriodEnd        int64   `parquet:"ChargePeriodEnd,timestamp(millisecond)"`
	ChargePeriodStart      int64   `parquet:"ChargePeriodStart,timestamp(millisecond)"`
	ConsumedQuantity       *Dec    `parquet:"ConsumedQuantity,decimal(9:38),optional"`
	ConsumedUnit           *string `parquet:"ConsumedUnit,optional"`
	ContractedCost         Dec     `parquet:"ContractedCost,decimal(9:38)"`
	ContractedUnitPrice    *Dec    `parquet:"ContractedUnitPrice,decimal(9:38),optional"`
	EffectiveCost          Dec     `parquet:"EffectiveCost,decimal(9:38)"`
	InvoiceIssuerName      string  `parquet:"InvoiceIssuerName"`
	ListCost               Dec     `parquet:"ListCost,decimal(9:38)"`
	ListUnitPrice          *Dec    `parquet:"ListUnitPrice,decimal(9:38),optional"`
	PricingCategory        *string `parquet:"PricingCategory,optional"`
	PricingQuantity        *Dec    `parquet:"PricingQuantity,decimal(9:38),optional"`
	PricingUnit            *string `parquet:"PricingUnit,optional"`
	ProviderName           string  `parquet:"ProviderName"`
	PublisherName          string  `parquet:"PublisherName"`
	ResourceId             *string `parquet:"ResourceId,optional"`
	ResourceName           *string `parquet:"ResourceName,optional"`
	ResourceType           *string `parquet:"ResourceType,optional"`
	ServiceCategory        string  `parquet:"ServiceCategory"`
	ServiceName            string  `parquet:"ServiceName"`
	SubAccountId           *string `parquet:"SubAccountId,optional"`
	SubAccountName         *string `parquet:"SubAccountName,optional"`
	Tags                   *string `parquet:"Tags,optional"`
	AllocatedMethodId      *string `parquet:"AllocatedMethodId,optional"`
	AllocatedMethodDetails *string `parquet:"AllocatedMethodDetails,optional"`
	AllocatedResourceId    *string `parquet:"AllocatedResourceId,optional"`
	AllocatedResourceName  *string `parquet:"AllocatedResourceName,optional"`
	AllocatedTags          *string `parquet:"AllocatedTags,optional"`
	XCluster               string  `parquet:"x_Cluster"`
	XItem                  string  `parquet:"x_Item"`
	XUsageQuantity         *Dec    `parquet:"x_UsageQuantity,decimal(9:38),optional"`
	XRequestQuantity       *Dec    `parquet:"x_RequestQuantity,decimal(9:38),optional"`
	XEffectiveFixed        int64   `parquet:"x_EffectiveFixedPoint"`
	XCoverageRatio         *Dec    `parquet:"x_CoverageRatio,decimal(9:38),optional"`
	XAllocatedRatio        *Dec    `parquet:"x_AllocatedRatio,decimal(9:38),optional"`
}

// Kind is a column's logical type.
type Kind string

// The column kinds.
const (
	KindDecimal  Kind = "Decimal"
	KindString   Kind = "String"
	KindDateTime Kind = "DateTime"
	KindJSON     Kind = "JSON" // a String holding a JSON object
	KindInteger  Kind = "Integer"
)

// Column describes one column: its FOCUS name, kind, whether it may be
// null, and the values it may take when FOCUS restricts them.
type Column struct {
	Name     string
	Kind     Kind
	Nullable bool
	Allowed  []string
}

// Allowed values of the restricted columns (FOCUS 1.3).
var (
	chargeCategories  = []string{"Usage", "Purchase", "Tax", "Credit", "Adjustment"}
	chargeClasses     = []string{ChargeClassCorrection}
	chargeFrequencies = []string{"One-Time", "Recurring", "Usage-Based"}
	pricingCategories = []string{"Standard", "Dynamic", "Committed", "Other"}
)

// Columns lists the export's columns in file order.
func Columns() []Column {
	d := func(n string, null bool) Column { return Column{Name: n, Kind: KindDecimal, Nullable: null} }
	s := func(n string, null bool) Column { return Column{Name: n, Kind: KindString, Nullable: null} }
	t := func(n string) Column { return Column{Name: n, Kind: KindDateTime} }
	j := func(n string) Column { return Column{Name: n, Kind: KindJSON, Nullable: true} }
	return []Column{
		d("BilledCost", false), s("BillingAccountId", false), s("BillingAccountName", false),
		s("BillingCurrency", false), t("BillingPeriodEnd"), t("BillingPeriodStart"),
		{Name: "ChargeCategory", Kind: KindString, Allowed: chargeCategories},
		{Name: "ChargeClass", Kind: KindString, Nullable: true, Allowed: chargeClasses},
		s("ChargeDescription", false),
		{Name: "ChargeFrequency", Kind: KindString, Allowed: chargeFrequencies},
		t("ChargePeriodEnd"), t("ChargePeriodStart"),
		d("ConsumedQuantity", true), s("ConsumedUnit", true), d("ContractedCost", false), d("ContractedUnitPrice", true),
		d("EffectiveCost", false), s("InvoiceIssuerName", false), d("ListCost", false), d("ListUnitPrice", true),
		{Name: "PricingCategory", Kind: KindString, Nullable: true, Allowed: pricingCategories},
		d("PricingQuantity", true), s("PricingUnit", true), s("ProviderName", false), s("PublisherName", false),
		s("ResourceId", true), s("ResourceName", true), s("ResourceType", true),
		{Name: "ServiceCategory", Kind: KindString, Allowed: ServiceCategories()},
		s("ServiceName", false), s("SubAccountId", true), s("SubAccountName", true), j("Tags"),
		s("AllocatedMethodId", true), j("AllocatedMethodDetails"), s("AllocatedResourceId", true),
		s("AllocatedResourceName", true), j("AllocatedTags"),
		s("x_Cluster", false), s("x_Item", false), d("x_UsageQuantity", true), d("x_RequestQuantity", true),
		{Name: "x_EffectiveFixedPoint", Kind: KindInteger}, d("x_CoverageRatio", true), d("x_AllocatedRatio", true),
	}
}

// Fixed values of every row.
const (
	ChargeCategoryUsage   = "Usage"
	ChargeClassCorrection = "Correction"
	ChargeFrequency       = "Usage-Based"
	PricingCategory       = "Standard"
	ServiceName           = "Kubernetes"
	ResourceTypeNamespace = "Namespace"
)

// ServiceCategories lists FOCUS 1.3's allowed ServiceCategory values.
func ServiceCategories() []string {
	return []string{"AI and Machine Learning", "Analytics", "Business Applications", "Compute", "Databases",
		"Developer Tools", "Multicloud", "Identity", "Integration", "Internet of Things", "Management and Governance",
		"Media", "Migration", "Mobile", "Networking", "Security", "Storage", "Web", "Other"}
}

// itemInfo is what FOCUS says of one metered item. A GPU item, when the
// rollups gain one, maps to "AI and Machine Learning" and "GPU-Hours".
type itemInfo struct {
	category string // ServiceCategory
	unit     string // ConsumedUnit and PricingUnit, FOCUS UnitFormat
	noun     string // in ChargeDescription
}

var items = map[rollup.Item]itemInfo{
	rollup.Cpu:     {category: "Compute", unit: "Core-Hours", noun: "Cpu core-hours"},
	rollup.Memory:  {category: "Compute", unit: "GiB-Hours", noun: "Memory GiB-hours"},
	rollup.Storage: {category: "Storage", unit: "GiB-Hours", noun: "Storage GiB-hours"},
}

// ServiceCategory returns the item's FOCUS ServiceCategory.
func ServiceCategory(it rollup.Item) string { return items[it].category }

// Unit returns the item's FOCUS unit (Core-Hours, GiB-Hours).
func Unit(it rollup.Item) string { return items[it].unit }

// timeMillis is a Date/Time column's value: milliseconds since the epoch,
// UTC.
func timeMillis(t time.Time) int64 { return t.UnixMilli() }

// FormatTime formats a Date/Time column's value as FOCUS writes it in text
// (ISO 8601, UTC, seconds).
func FormatTime(ms int64) string { return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05Z") }

// ResourceID is a namespace's ResourceId: cluster and namespace, unique
// across the platform.
func ResourceID(cluster, namespace string) string { return cluster + "/" + namespace }
