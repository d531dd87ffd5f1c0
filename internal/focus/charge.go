package focus

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/alauda/costmeter/internal/rollup"
)

// Issuer names who bills and is billed: the platform that runs costmeter
// bills its tenants (SubAccount = project) on one billing account.
type Issuer struct {
	// AccountID and AccountName are BillingAccountId and BillingAccountName.
	AccountID, AccountName string
	// Name is InvoiceIssuerName, ProviderName and PublisherName: the
	// platform team that issues the internal invoice and runs the clusters.
	Name     string
	Currency string
}

// Day is what every row of one billing day shares.
type Day struct {
	Issuer Issuer
	// Start and End bound the billing day (ChargePeriod), Period its
	// billing month (BillingPeriod), instants cut in the billing zone.
	Start, End             time.Time
	PeriodStart, PeriodEnd time.Time
	chargeStart, chargeEnd int64
	periodStart, periodEnd int64
	noTags                 *string
}

// NewDay returns the shared fields of the billing day d in loc.
func NewDay(is Issuer, d rollup.Day, loc *time.Location) *Day {
	first, last := rollup.MonthFirst(d), rollup.MonthLast(d)
	day := &Day{Issuer: is, Start: d.Start(loc).UTC(), End: (d + 1).Start(loc).UTC(),
		PeriodStart: first.Start(loc).UTC(), PeriodEnd: (last + 1).Start(loc).UTC()}
	day.chargeStart, day.chargeEnd = timeMillis(day.Start), timeMillis(day.End)
	day.periodStart, day.periodEnd = timeMillis(day.PeriodStart), timeMillis(day.PeriodEnd)
	return day
}

// Charge is one origin charge's inputs: a namespace's day rollup of one
// item, the item's Effective price in force that day (nil: none listed)
// and its cluster's coverage of the day.
type Charge struct {
	Entity rollup.Entity
	Item   rollup.Item
	Values *rollup.Values
	Price  *Price
	// CoverageUnits is the cluster-day's covered ratio in 10^-Scale units;
	// negative when unknown.
	CoverageUnits int64
	// Tags are the namespace's allocation labels (none until the
	// chargeback work adds them).
	Tags map[string]string
}

// Origin builds the row of an origin charge. ConsumedQuantity and
// PricingQuantity are the item's Effective unit-hours; the four costs are
// equal (see docs/export.md: an internal price list has no discounts and
// no commitments), Effective unit-hours × the Effective price.
// It fails (wrapping ErrOverflow) when the cost is out of range.
func (d *Day) Origin(c Charge) (Row, error) {
	eff := c.Values[rollup.Field(c.Item, rollup.Effective)]
	unitName := Unit(c.Item)
	q := DecOf(QuantityUnits(eff))
	var cost Dec
	var unitPrice *Dec
	if c.Price != nil {
		n, err := CostUnits(eff, *c.Price)
		if err != nil {
			return Row{}, fmt.Errorf("cost of %s %s on %s: %w", ResourceID(c.Entity.Cluster, c.Entity.Namespace), c.Item, d.Start.Format(time.DateOnly), err)
		}
		cost = DecOf(n)
		p := DecOf(c.Price.Units())
		unitPrice = &p
	} else {
		cost = DecOf(0)
	}
	usage := DecOf(QuantityUnits(c.Values[rollup.Field(c.Item, rollup.Usage)]))
	request := DecOf(QuantityUnits(c.Values[rollup.Field(c.Item, rollup.Request)]))
	project, id, ns, typ := c.Entity.Project, ResourceID(c.Entity.Cluster, c.Entity.Namespace), c.Entity.Namespace, ResourceTypeNamespace
	cat := PricingCategory
	r := Row{
		BilledCost: cost, ContractedCost: cost, EffectiveCost: cost, ListCost: cost,
		BillingAccountId: d.Issuer.AccountID, BillingAccountName: d.Issuer.AccountName, BillingCurrency: d.Issuer.Currency,
		BillingPeriodStart: d.periodStart, BillingPeriodEnd: d.periodEnd,
		ChargePeriodStart: d.chargeStart, ChargePeriodEnd: d.chargeEnd,
		ChargeCategory: ChargeCategoryUsage, ChargeDescription: items[c.Item].noun + ", namespace " + c.Entity.Namespace + ", cluster " + c.Entity.Cluster, ChargeFrequency: ChargeFrequency,
		ConsumedQuantity: &q, ConsumedUnit: &unitName, PricingQuantity: &q, PricingUnit: &unitName,
		ListUnitPrice: unitPrice, ContractedUnitPrice: unitPrice, PricingCategory: &cat,
		InvoiceIssuerName: d.Issuer.Name, ProviderName: d.Issuer.Name, PublisherName: d.Issuer.Name,
		ResourceId: &id, ResourceName: &ns, ResourceType: &typ,
		ServiceCategory: ServiceCategory(c.Item), ServiceName: ServiceName,
		SubAccountId: &project, SubAccountName: &project, Tags: d.tags(c.Tags),
		XCluster: c.Entity.Cluster, XItem: c.Item.String(), XUsageQuantity: &usage, XRequestQuantity: &request,
		XEffectiveFixed: eff,
	}
	if c.CoverageUnits >= 0 {
		cov := DecOf(c.CoverageUnits)
		r.XCoverageRatio = &cov
	}
	return r, nil
}

// tags is tagsJSON, sharing one "{}" among the day's rows without labels.
func (d *Day) tags(t map[string]string) *string {
	if len(t) > 0 {
		return tagsJSON(t)
	}
	if d.noTags == nil {
		d.noTags = tagsJSON(nil)
	}
	return d.noTags
}

// tagsJSON serializes tags as FOCUS asks: a JSON object in a string, keys
// sorted (encoding/json sorts map keys), "{}" when there are none.
func tagsJSON(tags map[string]string) *string {
	if tags == nil {
		tags = map[string]string{}
	}
	b, _ := json.Marshal(tags)
	s := string(b)
	return &s
}

// Key orders rows within a day's file and pairs a row with its earlier
// export: namespace member (rollup order: project, cluster, namespace),
// item, then allocated resource. Rows of one key are adjacent.
func (r *Row) Key() string {
	it, _ := rollup.ParseItem(r.XItem)
	var b strings.Builder
	b.WriteString(str(r.SubAccountId))
	b.WriteString(rollup.Sep)
	b.WriteString(r.XCluster)
	b.WriteString(rollup.Sep)
	b.WriteString(str(r.ResourceName))
	b.WriteString(rollup.Sep)
	b.WriteString(strconv.Itoa(int(it)))
	b.WriteString(rollup.Sep)
	b.WriteString(str(r.AllocatedResourceId))
	return b.String()
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// amounts are the summable columns of a row, in 10^-Scale units.
type amounts struct {
	cost, consumed, pricing, usage, request, fixed int64
}

func unitsOf(d *Dec) int64 {
	if d == nil {
		return 0
	}
	n, _ := d.Units()
	return n
}

func amountsOf(r *Row) amounts {
	c, _ := r.EffectiveCost.Units()
	return amounts{cost: c, consumed: unitsOf(r.ConsumedQuantity), pricing: unitsOf(r.PricingQuantity),
		usage: unitsOf(r.XUsageQuantity), request: unitsOf(r.XRequestQuantity), fixed: r.XEffectiveFixed}
}

// Sum adds up the summable columns of rows (one key's rows: its first
// export and its corrections).
func Sum(rows []Row) Row {
	if len(rows) == 0 {
		return Row{}
	}
	var a amounts
	for i := range rows {
		x := amountsOf(&rows[i])
		a.cost += x.cost
		a.consumed += x.consumed
		a.pricing += x.pricing
		a.usage += x.usage
		a.request += x.request
		a.fixed += x.fixed
	}
	out := rows[0]
	out.setAmounts(a)
	return out
}

func (r *Row) setAmounts(a amounts) {
	c := DecOf(a.cost)
	r.BilledCost, r.ContractedCost, r.EffectiveCost, r.ListCost = c, c, c, c
	set := func(p **Dec, n int64) {
		if *p != nil {
			v := DecOf(n)
			*p = &v
		}
	}
	set(&r.ConsumedQuantity, a.consumed)
	set(&r.PricingQuantity, a.pricing)
	set(&r.XUsageQuantity, a.usage)
	set(&r.XRequestQuantity, a.request)
	r.XEffectiveFixed = a.fixed
}

// Correction returns the row that restates what was delivered (the sum of
// a key's earlier rows) as now: the difference of every summable column,
// ChargeClass Correction, the other columns as now. ok is false when
// nothing differs. A key that was not delivered before has delivered = nil.
func Correction(delivered *Row, now *Row) (Row, bool) {
	var old amounts
	if delivered != nil {
		old = amountsOf(delivered)
	}
	cur := amountsOf(now)
	d := amounts{cost: cur.cost - old.cost, consumed: cur.consumed - old.consumed, pricing: cur.pricing - old.pricing,
		usage: cur.usage - old.usage, request: cur.request - old.request, fixed: cur.fixed - old.fixed}
	if d == (amounts{}) && delivered != nil {
		return Row{}, false
	}
	out := *now
	out.setAmounts(d)
	class := ChargeClassCorrection
	out.ChargeClass = &class
	return out, true
}

// SortRows orders rows by Key, stably (an earlier export before its
// corrections).
func SortRows(rows []Row) {
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].Key() < rows[j].Key() })
}
