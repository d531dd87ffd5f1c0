package api

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/alauda/costmeter/internal/rollup"
)

// OrderByUsage is the value of the orderBy parameter that orders rows by
// usage, beyond the contract: entities by their total over the whole
// range (of the query's item and method), largest first, ties by the
// contract's name order (project, cluster, namespace); each entity's rows
// then by bucket. Paging, total and CSV are those of the default order:
// the same rows, in another order.
const OrderByUsage = "usage"

// page returns the rows offset..offset+limit-1 of the query in its order.
func (s *Server) page(ctx context.Context, q Query, sel rollup.Selection, buckets []rollup.Bucket, offset, limit int) (rollup.Page, error) {
	if q.OrderBy != OrderByUsage {
		return s.reader.Page(ctx, sel, buckets, offset, limit)
	}
	return s.rankedPage(ctx, q, sel, buckets, offset, limit)
}

// rankedPage reads every row of the selection, ranks the entities by their
// total over the range and returns the page.
//
// TODO(console): bounded version from the aggregator's per-month rankings.
func (s *Server) rankedPage(ctx context.Context, q Query, sel rollup.Selection, buckets []rollup.Bucket, offset, limit int) (rollup.Page, error) {
	var all []rollup.Row
	for off := 0; ; off += csvChunk {
		p, err := s.reader.Page(ctx, sel, buckets, off, csvChunk)
		if err != nil {
			return rollup.Page{}, fmt.Errorf("rank by usage at row %d: %w", off, err)
		}
		all = append(all, p.Rows...)
		if off+csvChunk >= p.Total || len(p.Rows) == 0 {
			break
		}
	}
	field := rollup.Field(q.Item, q.Method)
	totals := map[string]int64{}
	for _, r := range all {
		m := r.Entity.Member(sel.Scope)
		for _, d := range r.Days {
			totals[m] += d[field]
		}
	}
	slices.SortStableFunc(all, func(a, b rollup.Row) int {
		ma, mb := a.Entity.Member(sel.Scope), b.Entity.Member(sel.Scope)
		if c := cmp.Compare(totals[mb], totals[ma]); c != 0 {
			return c
		}
		if c := cmp.Compare(ma, mb); c != 0 {
			return c
		}
		return cmp.Compare(a.Bucket.First, b.Bucket.First)
	})
	page := rollup.Page{Total: len(all), Rows: []rollup.Row{}}
	if offset < len(all) {
		page.Rows = all[offset:min(len(all), offset+limit)]
	}
	return page, nil
}
