package api

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/alauda/costmeter/internal/auth"
	"github.com/alauda/costmeter/internal/pricing"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
)

// Row is one entity in one bucket.
type Row struct {
	// Project, Cluster and Namespace name the entity; the parts a kind does
	// not have are empty strings.
	Project   string `json:"project"`
	Cluster   string `json:"cluster"`
	Namespace string `json:"namespace"`
	Item      string `json:"item"`
	Method    string `json:"method"`
	// Usage is in the item's unit-hours: core-hours, GiB-hours.
	Usage    float64 `json:"usage"`
	Currency string  `json:"currency"`
	// Start and End are the bucket's first and last day, YYYYMMDD.
	Start string `json:"start"`
	End   string `json:"end"`
	// Cost is usage priced by the price list, when one is configured.
	Cost *float64 `json:"cost,omitempty"`
	// GroupBy and Group are set on the group kinds' rows (beyond the
	// contract): the label key and its value (or __unallocated__).
	GroupBy string `json:"groupBy,omitempty"`
	Group   string `json:"group,omitempty"`
	// The cluster kinds' rows of the platform route carry the cluster's
	// capacity (beyond the contract; capacity.go).
	*CapacityFields
}

// Response is one page of rows.
type Response struct {
	PageSize    int   `json:"pageSize"`
	CurrentPage int   `json:"currentPage"`
	Total       int   `json:"total"`
	Items       []Row `json:"items"`
}

// csvChunk is how many rows a full CSV export reads at once.
const csvChunk = 1000

// queryTimeout bounds the Redis work of one page (and of each chunk of an
// export); a page takes milliseconds, so reaching it means Redis is stuck.
const queryTimeout = 10 * time.Second

func (s *Server) usage(c *gin.Context, project string) {
	s.respond(c, "usage query", s.serveUsage(c, project))
}

// respond answers a query route's error (nothing when err is nil) with
// its Status, logging server-side failures.
func (s *Server) respond(c *gin.Context, what string, err error) {
	ctx := c.Request.Context()
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			// The request's own deadline (a guard in front, or the client
			// gone), not Redis: 504 as the guard would answer, or nothing.
			if errors.Is(cerr, context.DeadlineExceeded) && !c.Writer.Written() {
				abort(c, http.StatusGatewayTimeout, "the request took longer than its deadline")
			} else {
				c.Abort()
			}
			return
		}
		code, msg := statusOf(err)
		if code >= 500 {
			s.log.ErrorContext(ctx, what, "path", c.Request.URL.Path, "query", c.Request.URL.RawQuery, "code", code, "err", err)
		}
		if c.Writer.Written() {
			c.Abort() // a CSV export failed midway: the client sees it cut
			return
		}
		abort(c, code, msg)
	}
}

// authorize checks the caller's scope for a route: platform scope for the
// platform-wide routes (project ""), that project or platform scope for the
// project routes, whose name must be a valid project name.
func authorize(ctx context.Context, project string) error {
	p, _ := auth.FromContext(ctx)
	if project == "" {
		if !p.CanSeePlatform() {
			return fmt.Errorf("%w: %s may not see platform-wide usage", ErrForbidden, principalName(p))
		}
		return nil
	}
	if err := checkName("project", sample.NameProject, project); err != nil {
		return err
	}
	if !p.CanSeeProject(project) {
		return fmt.Errorf("%w: %s may not see project %q", ErrForbidden, principalName(p), project)
	}
	return nil
}

func (s *Server) serveUsage(c *gin.Context, project string) error {
	ctx := c.Request.Context()
	if err := authorize(ctx, project); err != nil {
		return err
	}
	q, err := ParseQuery(c.Request.URL.Query())
	if err != nil {
		return err
	}
	if q.GroupBy != "" && !slices.Contains(s.groupKeys, q.GroupBy) {
		return s.notKept(q.GroupBy)
	}
	sel, err := selectionOf(q, project)
	if err != nil {
		return err
	}
	// The platform route's cluster rows carry their capacity (capacity.go).
	q.capacity = project == "" && (q.Kind == KindCluster || q.Kind == KindClusterAll)
	// Rows need their days only to price each day, or to set each day's
	// Effective against capacity; otherwise a sum's whole months are read
	// from their month parts.
	sel.Totals = !s.pricing.Has(q.Item, q.Method) && !q.capacity
	buckets := rollup.Buckets(q.Start, q.End, q.Step)
	if q.CSV && !q.Paged {
		return s.exportCSV(ctx, c, q, sel, buckets)
	}
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	page, err := s.page(ctx, q, sel, buckets, (q.Page-1)*q.PageSize, q.PageSize)
	if err != nil {
		return fmt.Errorf("query usage: %w", err)
	}
	rows, err := s.rows(ctx, q, page.Rows)
	if err != nil {
		return fmt.Errorf("query usage: %w", err)
	}
	if q.CSV {
		w := s.csvWriter(c, q)
		s.writeCSV(w, q, rows)
		w.Flush()
		return w.Error()
	}
	c.JSON(http.StatusOK, Response{PageSize: q.PageSize, CurrentPage: q.Page, Total: page.Total, Items: rows})
	return nil
}

func principalName(p *auth.Principal) string {
	if p == nil {
		return "an unauthenticated caller"
	}
	return strconv.Quote(p.Name)
}

// selectionOf maps a query to the entities it reports. On the project
// route (project set) every selection is confined to that project.
func selectionOf(q Query, project string) (rollup.Selection, error) {
	switch q.Kind {
	case KindGroupAll:
		if project != "" {
			return rollup.Selection{Scope: rollup.ScopeProjectGroup, Prefix: rollup.GroupPrefix(q.GroupBy, project)}, nil
		}
		return rollup.Selection{Scope: rollup.ScopeGroup, Prefix: rollup.GroupPrefix(q.GroupBy, "")}, nil
	case KindGroup:
		e := rollup.Entity{GroupKey: q.GroupBy, Group: q.Name, Project: project}
		if project != "" {
			return rollup.Selection{Scope: rollup.ScopeProjectGroup, Member: e.Member(rollup.ScopeProjectGroup)}, nil
		}
		return rollup.Selection{Scope: rollup.ScopeGroup, Member: e.Member(rollup.ScopeGroup)}, nil
	}
	if project == "" {
		switch q.Kind {
		case KindProjectAll:
			return rollup.Selection{Scope: rollup.ScopeProject}, nil
		case KindProject:
			return rollup.Selection{Scope: rollup.ScopeProject, Member: q.Name}, nil
		case KindClusterAll:
			return rollup.Selection{Scope: rollup.ScopeCluster}, nil
		case KindCluster:
			return rollup.Selection{Scope: rollup.ScopeCluster, Member: q.Name}, nil
		case KindNamespaceAll:
			return rollup.Selection{Scope: rollup.ScopeNamespace}, nil
		default:
			return rollup.Selection{Scope: rollup.ScopeNamespace, Namespace: q.Name}, nil
		}
	}
	own := rollup.Entity{Project: project}
	switch q.Kind {
	case KindProject:
		if q.Name != project {
			return rollup.Selection{}, fmt.Errorf("%w: kind=project: %q is not the route's project %q", ErrForbidden, q.Name, project)
		}
		return rollup.Selection{Scope: rollup.ScopeProject, Member: own.Member(rollup.ScopeProject)}, nil
	case KindProjectAll:
		return rollup.Selection{Scope: rollup.ScopeProject, Member: own.Member(rollup.ScopeProject)}, nil
	case KindClusterAll:
		return rollup.Selection{Scope: rollup.ScopeProjectCluster, Prefix: project + rollup.Sep}, nil
	case KindCluster:
		return rollup.Selection{Scope: rollup.ScopeProjectCluster, Member: rollup.Entity{Project: project, Cluster: q.Name}.Member(rollup.ScopeProjectCluster)}, nil
	case KindNamespaceAll:
		return rollup.Selection{Scope: rollup.ScopeNamespace, Prefix: project + rollup.Sep}, nil
	default:
		return rollup.Selection{Scope: rollup.ScopeNamespace, Namespace: q.Name, Project: project}, nil
	}
}

// rows turns rollup rows into API rows: usage in unit-hours, and cost.
// A row's cost is the exact sum over its days of day usage × the price of
// its cluster in force that day, rounded once to fine units
// (pricing.Sum). A project's row sums its clusters: when the price list
// prices clusters differently, its cost is the sum of its project-cluster
// parts' costs, read from the store (costParts).
func (s *Server) rows(ctx context.Context, q Query, in []rollup.Row) ([]Row, error) {
	out := make([]Row, 0, len(in))
	field := rollup.Field(q.Item, q.Method)
	priced := s.pricing.Has(q.Item, q.Method)
	perCluster := !s.pricing.SameForEveryCluster(q.Item, q.Method)
	for _, r := range in {
		var (
			sum      int64
			fallback float64 // when the exact sum would overflow int64
			overflow bool
			cost     pricing.Sum
		)
		if r.Days == nil { // Totals: exact, no day to price
			sum = r.Total[field]
		}
		for j := range r.Days {
			v := r.Days[j][field]
			if !overflow {
				if n := sum + v; (v > 0 && n < sum) || (v < 0 && n > sum) {
					overflow, fallback = true, rollup.Hours(sum)
				} else {
					sum = n
				}
			}
			if overflow {
				fallback += rollup.Hours(v)
			}
		}
		if priced {
			if r.Entity.Cluster == "" && perCluster {
				if err := s.costParts(ctx, q, r, &cost); err != nil {
					return nil, err
				}
			} else {
				s.addCost(&cost, q, r.Entity.Cluster, r)
			}
		}
		usage := rollup.Hours(sum)
		if overflow {
			usage = fallback
		}
		row := Row{
			Project: r.Entity.Project, Cluster: r.Entity.Cluster, Namespace: r.Entity.Namespace,
			Item: q.Item.String(), Method: q.Method.String(), Usage: usage, Currency: s.cfg.Currency,
			Start: r.Bucket.First.String(), End: r.Bucket.Last.String(),
			GroupBy: r.Entity.GroupKey, Group: r.Entity.Group,
		}
		if priced {
			c := cost.Fine()
			row.Cost = &c
		}
		if q.capacity {
			cc, err := s.capacityOf(ctx, r.Entity.Cluster, r.Bucket)
			if err != nil {
				return nil, err
			}
			row.CapacityFields = capacityFields(q, r, cc)
		}
		out = append(out, row)
	}
	return out, nil
}

// addCost adds the days of r, priced on cluster, to cost.
func (s *Server) addCost(cost *pricing.Sum, q Query, cluster string, r rollup.Row) {
	field := rollup.Field(q.Item, q.Method)
	for j := range r.Days {
		if v := r.Days[j][field]; v != 0 {
			p, _ := s.pricing.Price(q.Item, q.Method, cluster, r.Bucket.First+rollup.Day(j))
			cost.Add(v, p)
		}
	}
}

// costPartsPage is how many of a project's clusters costParts reads at once.
const costPartsPage = 100

// costParts adds the cost of row r's per-cluster parts to cost: a
// project's project-cluster rollups, a group's group-namespace rollups
// (in the project, on the project route) over the same bucket. Exact, at
// one more store read per row and page of its parts.
func (s *Server) costParts(ctx context.Context, q Query, r rollup.Row, cost *pricing.Sum) error {
	sel := rollup.Selection{Scope: rollup.ScopeProjectCluster, Prefix: r.Entity.Project + rollup.Sep}
	what := fmt.Sprintf("the clusters of project %q", r.Entity.Project)
	if r.Entity.GroupKey != "" {
		prefix := rollup.GroupPrefix(r.Entity.GroupKey, "") + r.Entity.Group + rollup.Sep
		if r.Entity.Project != "" {
			prefix += r.Entity.Project + rollup.Sep
		}
		sel = rollup.Selection{Scope: rollup.ScopeGroupNamespace, Prefix: prefix}
		what = fmt.Sprintf("the namespaces of group %s=%s", r.Entity.GroupKey, r.Entity.Group)
	}
	for off := 0; ; off += costPartsPage {
		page, err := s.reader.Page(ctx, sel, []rollup.Bucket{r.Bucket}, off, costPartsPage)
		if err != nil {
			return fmt.Errorf("read %s to price them: %w", what, err)
		}
		for _, part := range page.Rows {
			s.addCost(cost, q, part.Entity.Cluster, part)
		}
		if off+costPartsPage >= page.Total || len(page.Rows) == 0 {
			return nil
		}
	}
}

// csvWriter starts a CSV answer with its header: the contract's columns,
// cost when priced, then the columns beyond the contract the kind has
// (groupBy and group; the cluster rows' capacity columns).
func (s *Server) csvWriter(c *gin.Context, q Query) *csv.Writer {
	c.Header("Content-Type", "text/csv; charset=utf-8")
	c.Header("Content-Disposition", `attachment; filename="usage.csv"`)
	c.Status(http.StatusOK)
	w := csv.NewWriter(c.Writer)
	header := []string{"project", "cluster", "namespace", "item", "method", "usage", "currency", "start", "end"}
	if s.pricing != nil {
		header = append(header, "cost")
	}
	if q.GroupBy != "" {
		header = append(header, "groupBy", "group")
	}
	if q.capacity {
		header = append(header, "capacity", "idle", "overcommit", "capacityKnownDays", "capacityUnknownDays")
	}
	_ = w.Write(header)
	return w
}

func (s *Server) writeCSV(w *csv.Writer, q Query, rows []Row) {
	for _, r := range rows {
		rec := []string{r.Project, r.Cluster, r.Namespace, r.Item, r.Method, formatFloat(r.Usage), r.Currency, r.Start, r.End}
		if s.pricing != nil {
			cost := ""
			if r.Cost != nil {
				cost = formatFloat(*r.Cost)
			}
			rec = append(rec, cost)
		}
		if q.GroupBy != "" {
			rec = append(rec, r.GroupBy, r.Group)
		}
		if c := r.CapacityFields; q.capacity && c != nil {
			rec = append(rec, formatFloat(c.Capacity), formatFloat(c.Idle), formatFloat(c.Overcommit),
				strconv.Itoa(c.CapacityKnownDays), strconv.Itoa(c.CapacityUnknownDays))
		}
		_ = w.Write(rec) // errors stick in w.Error
	}
}

func formatFloat(f float64) string {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return ""
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}

// exportCSV writes every row, reading csvChunk rows at a time; its cost
// grows with the number of rows exported.
func (s *Server) exportCSV(ctx context.Context, c *gin.Context, q Query, sel rollup.Selection, buckets []rollup.Bucket) error {
	// chunk reads csvChunk rows from off, and whatever pricing them needs,
	// within one query timeout.
	chunk := func(off int) (int, []Row, error) {
		ctx, cancel := context.WithTimeout(ctx, queryTimeout)
		defer cancel()
		p, err := s.page(ctx, q, sel, buckets, off, csvChunk)
		if err != nil {
			return 0, nil, err
		}
		rows, err := s.rows(ctx, q, p.Rows)
		return p.Total, rows, err
	}
	total, rows, err := chunk(0)
	if err != nil {
		return fmt.Errorf("export usage: %w", err)
	}
	w := s.csvWriter(c, q)
	s.writeCSV(w, q, rows)
	for off := csvChunk; off < total; off += csvChunk {
		_, rows, err := chunk(off)
		if err != nil {
			w.Flush()
			return fmt.Errorf("export usage at row %d: %w", off, err)
		}
		s.writeCSV(w, q, rows)
	}
	w.Flush()
	return w.Error()
}
