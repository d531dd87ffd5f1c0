package api

import (
	"context"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/alauda/costmeter/internal/allocation"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
)

// Paths of the bill routes (beyond the contract; docs/chargeback.md).
const (
	BillPath        = "/platform/cost.alauda.io/v1beta1/costs/allocation"
	ProjectBillPath = "/platform/cost.alauda.io/v1beta1/projects/:project/costs/allocation"
)

// billQueryTimeout bounds the Redis work and the allocation of one bill: a
// month of a large platform reads every namespace of every day.
const billQueryTimeout = 60 * time.Second

// billChunk is how many group-namespace rows a bill reads at once.
const billChunk = 5000

// BillQuery is a parsed, valid bill query.
type BillQuery struct {
	Start, End rollup.Day
	Step       rollup.Step
	GroupBy    string
	// Name keeps one group's lines, Cluster one cluster's: after
	// allocation.
	Name, Cluster string
}

// ParseBillQuery checks the bill route's parameters (start, end, step,
// groupBy, name, cluster, in that order) and returns the first broken one
// as an error wrapping ErrBadParameter. Whether groupBy is kept is the
// server's to check.
func ParseBillQuery(v url.Values) (BillQuery, error) {
	q := BillQuery{Step: rollup.StepMonth}
	var err error
	if q.Start, q.End, err = parseRange(v); err != nil {
		return q, err
	}
	if s, ok := one(v, "step"); ok {
		st, known := steps[s]
		if !known {
			return q, badParam("step", "%q is not day, week or month", s)
		}
		q.Step = st
	}
	if q.GroupBy, err = parseGroupBy(v, KindGroupAll); err != nil {
		return q, err
	}
	if name, ok := one(v, "name"); ok {
		switch name {
		case allocation.IdleGroup, allocation.SharedGroup, allocation.UnallocatedGroup:
		default:
			if err := checkGroupName("name", name); err != nil {
				return q, err
			}
		}
		q.Name = name
	}
	if name, ok := one(v, "cluster"); ok {
		if err := checkName("cluster", sample.NameCluster, name); err != nil {
			return q, err
		}
		q.Cluster = name
	}
	return q, nil
}

// BillResponse is the bill: one entry per bucket.
type BillResponse struct {
	GroupBy  string `json:"groupBy"`
	Currency string `json:"currency"`
	// Decimals is the printed precision: every amount is a whole number of
	// 10^-decimals of the currency.
	Decimals int          `json:"decimals"`
	Items    []BillBucket `json:"items"`
}

// BillBucket is one bucket's bill.
type BillBucket struct {
	// Start and End are the bucket's first and last day, YYYYMMDD.
	Start string `json:"start"`
	End   string `json:"end"`
	// ClusterCost is what the bucket's clusters cost (capacity × price +
	// overheads), Allocated the sum of every group's total over those
	// clusters (the idle, shared and unallocated groups included): equal.
	ClusterCost float64 `json:"clusterCost"`
	Allocated   float64 `json:"allocated"`
	// CapacityKnown is false when some cluster-day of the bucket had no
	// capacity sample: its idle is unknown (see Clusters' unknownDays).
	CapacityKnown bool `json:"capacityKnown"`
	// Groups are the lines summed over clusters, by group.
	Groups []BillLine `json:"groups"`
	// Lines are the lines per cluster and group.
	Lines    []BillLine    `json:"lines"`
	Clusters []BillCluster `json:"clusters"`
	Pools    []BillPool    `json:"pools"`
}

// BillLine is one group's bill (on one cluster, or summed over clusters:
// cluster empty).
type BillLine struct {
	Cluster  string         `json:"cluster,omitempty"`
	Group    string         `json:"group"`
	Direct   float64        `json:"direct"`
	Shared   float64        `json:"shared"`
	Idle     float64        `json:"idle"`
	Overhead float64        `json:"overhead"`
	Total    float64        `json:"total"`
	Items    []BillLineItem `json:"items"`
}

// BillLineItem is one item's part of a line: amounts, and the quantities
// behind them in the item's unit-hours.
type BillLineItem struct {
	Item           string  `json:"item"`
	Direct         float64 `json:"direct"`
	Shared         float64 `json:"shared"`
	Idle           float64 `json:"idle"`
	DirectQuantity float64 `json:"directQuantity"`
	SharedQuantity float64 `json:"sharedQuantity"`
	IdleQuantity   float64 `json:"idleQuantity"`
}

// BillCluster is one cluster's reconciliation.
type BillCluster struct {
	Cluster     string            `json:"cluster"`
	Days        int               `json:"days"`
	ClusterCost float64           `json:"clusterCost"`
	Allocated   float64           `json:"allocated"`
	Overhead    float64           `json:"overhead"`
	Items       []BillClusterItem `json:"items"`
}

// BillClusterItem is what one item of a cluster cost: quantities in
// unit-hours (capacity, idle and overcommit over the days whose capacity
// is known), and the days it is not.
type BillClusterItem struct {
	Item        string  `json:"item"`
	Capacity    float64 `json:"capacity"`
	Effective   float64 `json:"effective"`
	Idle        float64 `json:"idle"`
	Overcommit  float64 `json:"overcommit"`
	UnknownDays int     `json:"unknownDays"`
	Cost        float64 `json:"cost"`
}

// BillPool is one shared rule's cost on one cluster before it was spread.
type BillPool struct {
	Cluster string         `json:"cluster"`
	Rule    string         `json:"rule"`
	Split   string         `json:"split"`
	Items   []BillPoolItem `json:"items"`
}

// BillPoolItem is one item of a pool.
type BillPoolItem struct {
	Item     string  `json:"item"`
	Quantity float64 `json:"quantity"`
	Amount   float64 `json:"amount"`
}

func (s *Server) serveBill(c *gin.Context, project string) error {
	ctx := c.Request.Context()
	if err := authorize(ctx, project); err != nil {
		return err
	}
	q, err := ParseBillQuery(c.Request.URL.Query())
	if err != nil {
		return err
	}
	if !slices.Contains(s.groupKeys, q.GroupBy) {
		return s.notKept(q.GroupBy)
	}
	engine, err := allocation.NewEngine(s.policies.Current(), s.pricing, s.loc, q.GroupBy)
	if err != nil {
		return fmt.Errorf("bill: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, billQueryTimeout)
	defer cancel()
	resp := BillResponse{GroupBy: q.GroupBy, Currency: s.cfg.Currency, Decimals: s.pricing.Decimals(), Items: []BillBucket{}}
	for _, b := range rollup.Buckets(q.Start, q.End, q.Step) {
		bill, mine, err := s.allocate(ctx, engine, q.GroupBy, project, b)
		if err != nil {
			return fmt.Errorf("bill %s..%s: %w", b.First, b.Last, err)
		}
		bill = bill.Filter(q.Name, q.Cluster)
		if project != "" {
			bill = confine(bill, mine)
		}
		resp.Items = append(resp.Items, s.billBucket(b, bill))
	}
	c.JSON(http.StatusOK, resp)
	return nil
}

// lineKey is a (cluster, group) pair.
type lineKey struct{ cluster, group string }

// allocate bills bucket b: every cluster-day with namespaces of the key's
// groups or a known capacity is allocated whole, and the days summed. With
// project set it also returns the (cluster, group) pairs of the project's
// namespaces in the bucket.
func (s *Server) allocate(ctx context.Context, engine *allocation.Engine, key, project string, b rollup.Bucket) (allocation.Bill, map[lineKey]bool, error) {
	capacity, err := s.bucketCapacity(ctx, b)
	if err != nil {
		return allocation.Bill{}, nil, err
	}
	mine := map[lineKey]bool{}
	var sum allocation.Sum
	for d := b.First; d <= b.Last; d++ {
		days, err := s.groupNamespaces(ctx, key, d, project, mine)
		if err != nil {
			return allocation.Bill{}, nil, err
		}
		for cluster, cc := range capacity {
			if cc.known[d-b.First] && days[cluster] == nil {
				days[cluster] = []allocation.Namespace{}
			}
		}
		clusters := make([]string, 0, len(days))
		for c := range days {
			clusters = append(clusters, c)
		}
		slices.Sort(clusters)
		for _, c := range clusters {
			cd := allocation.ClusterDay{Cluster: c, Day: d, Namespaces: days[c]}
			if cc, ok := capacity[c]; ok && cc.known[d-b.First] {
				for i := range allocation.NumItems {
					cd.Capacity[i] = allocation.Capacity{Known: true, Value: cc.days[d-b.First][rollup.Field(rollup.Item(i), rollup.Effective)]}
				}
			}
			bill, err := engine.Allocate(cd)
			if err != nil {
				return allocation.Bill{}, nil, err
			}
			sum.Add(bill)
		}
	}
	return sum.Bill(), mine, nil
}

// bucketCapacity reads every cluster's capacity over b.
func (s *Server) bucketCapacity(ctx context.Context, b rollup.Bucket) (map[string]clusterCapacity, error) {
	out := map[string]clusterCapacity{}
	sel := rollup.Selection{Scope: rollup.ScopeCapacity}
	for off := 0; ; off += csvChunk {
		page, err := s.reader.Page(ctx, sel, []rollup.Bucket{b}, off, csvChunk)
		if err != nil {
			return nil, fmt.Errorf("read the clusters' capacity: %w", err)
		}
		for _, r := range page.Rows {
			cc, err := s.capacityOf(ctx, r.Entity.Cluster, b)
			if err != nil {
				return nil, err
			}
			out[r.Entity.Cluster] = cc
		}
		if off+csvChunk >= page.Total || len(page.Rows) == 0 {
			return out, nil
		}
	}
}

// groupNamespaces reads day d's namespaces of every group of key, by
// cluster; a namespace whose day rollup is all zero is left out (it
// carries nothing, and must not count as a group present on the day).
// The project's (cluster, group) pairs are added to mine.
func (s *Server) groupNamespaces(ctx context.Context, key string, d rollup.Day, project string, mine map[lineKey]bool) (map[string][]allocation.Namespace, error) {
	out := map[string][]allocation.Namespace{}
	sel := rollup.Selection{Scope: rollup.ScopeGroupNamespace, Prefix: rollup.GroupPrefix(key, ""), Totals: true}
	for off := 0; ; off += billChunk {
		page, err := s.reader.Page(ctx, sel, []rollup.Bucket{{First: d, Last: d}}, off, billChunk)
		if err != nil {
			return nil, fmt.Errorf("read the namespaces of %s on %s: %w", key, d, err)
		}
		for _, r := range page.Rows {
			if r.Total == (rollup.Values{}) {
				continue
			}
			e := r.Entity
			ns := allocation.Namespace{Project: e.Project, Namespace: e.Namespace, Group: e.Group}
			for i := range allocation.NumItems {
				ns.Effective[i] = r.Total[rollup.Field(rollup.Item(i), rollup.Effective)]
			}
			out[e.Cluster] = append(out[e.Cluster], ns)
			if project != "" && e.Project == project {
				mine[lineKey{e.Cluster, e.Group}] = true
			}
		}
		if off+billChunk >= page.Total || len(page.Rows) == 0 {
			return out, nil
		}
	}
}

// confine keeps what the project route shows of a bill: the lines of the
// (cluster, group) pairs the project's namespaces are in, with their
// numbers unchanged, and the reconciliation of those clusters.
func confine(b allocation.Bill, mine map[lineKey]bool) allocation.Bill {
	out := allocation.Bill{}
	clusters := map[string]bool{}
	for _, l := range b.Lines {
		if mine[lineKey{l.Cluster, l.Group}] {
			out.Lines = append(out.Lines, l)
			clusters[l.Cluster] = true
		}
	}
	for _, c := range b.Clusters {
		if clusters[c.Cluster] {
			out.Clusters = append(out.Clusters, c)
			out.ClusterCost += c.ClusterCost
			out.Allocated += c.Allocated
		}
	}
	for _, p := range b.Pools {
		if clusters[p.Cluster] {
			out.Pools = append(out.Pools, p)
		}
	}
	return out
}

// billBucket renders one bucket's bill.
func (s *Server) billBucket(bk rollup.Bucket, b allocation.Bill) BillBucket {
	money := s.money()
	out := BillBucket{Start: bk.First.String(), End: bk.Last.String(), ClusterCost: money(b.ClusterCost), Allocated: money(b.Allocated),
		CapacityKnown: true, Groups: []BillLine{}, Lines: []BillLine{}, Clusters: []BillCluster{}, Pools: []BillPool{}}
	line := func(l allocation.Line) BillLine {
		bl := BillLine{Cluster: l.Cluster, Group: l.Group, Direct: money(l.Direct), Shared: money(l.Shared), Idle: money(l.Idle),
			Overhead: money(l.Overhead), Total: money(l.Total), Items: make([]BillLineItem, 0, allocation.NumItems)}
		for i, p := range l.Items {
			bl.Items = append(bl.Items, BillLineItem{Item: rollup.Item(i).String(), Direct: money(p.Direct), Shared: money(p.Shared), Idle: money(p.Idle),
				DirectQuantity: rollup.Hours(p.DirectQty), SharedQuantity: rollup.Hours(p.SharedQty), IdleQuantity: rollup.Hours(p.IdleQty)})
		}
		return bl
	}
	for _, l := range b.Groups() {
		out.Groups = append(out.Groups, line(l))
	}
	for _, l := range b.Lines {
		out.Lines = append(out.Lines, line(l))
	}
	for _, c := range b.Clusters {
		bc := BillCluster{Cluster: c.Cluster, Days: c.Days, ClusterCost: money(c.ClusterCost), Allocated: money(c.Allocated),
			Overhead: money(c.Overhead), Items: make([]BillClusterItem, 0, allocation.NumItems)}
		for i, it := range c.Items {
			if it.UnknownDays > 0 {
				out.CapacityKnown = false
			}
			bc.Items = append(bc.Items, BillClusterItem{Item: rollup.Item(i).String(), Capacity: rollup.Hours(it.Capacity), Effective: rollup.Hours(it.Effective),
				Idle: rollup.Hours(it.Idle), Overcommit: rollup.Hours(it.Overcommit), UnknownDays: it.UnknownDays, Cost: money(it.Cost)})
		}
		out.Clusters = append(out.Clusters, bc)
	}
	for _, p := range b.Pools {
		bp := BillPool{Cluster: p.Cluster, Rule: p.Rule, Split: p.Split.String(), Items: make([]BillPoolItem, 0, allocation.NumItems)}
		for i, it := range p.Items {
			bp.Items = append(bp.Items, BillPoolItem{Item: rollup.Item(i).String(), Quantity: rollup.Hours(it.Quantity), Amount: money(it.Amount)})
		}
		out.Pools = append(out.Pools, bp)
	}
	return out
}

// money turns printed units (10^-decimals of the currency) into the
// number printed: the nearest float64 of the exact quotient, which prints
// as that decimal.
func (s *Server) money() func(int64) float64 {
	scale := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(s.pricing.Decimals())), nil)
	return func(v int64) float64 {
		f, _ := new(big.Rat).SetFrac(big.NewInt(v), scale).Float64()
		return f
	}
}
