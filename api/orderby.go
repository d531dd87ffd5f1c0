package api

import (
	"cmp"
	"context"
	"errors"
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
//
// orderBy=usage over a whole scope (the _all kinds of the platform route,
// where entities are many) reads the aggregator's month rankings
// (rollup.Reader.TopByUsage): its cost grows with the page's depth
// (offset+limit entities), not with the number of entities. A selection
// inside one project, or of one name, is small: its entities are read
// whole and ranked here (rankAll), as are pages that reach past every
// entity with a non-zero total (the rankings leave zeros out).
func (s *Server) page(ctx context.Context, q Query, sel rollup.Selection, buckets []rollup.Bucket, offset, limit int) (rollup.Page, error) {
	if q.OrderBy != OrderByUsage {
		return s.reader.Page(ctx, sel, buckets, offset, limit)
	}
	if sel.Prefix == "" && sel.Member == "" && sel.Namespace == "" {
		p, err := s.topPage(ctx, q, sel, buckets, offset, limit)
		if !errors.Is(err, rollup.ErrRankingIncomplete) {
			return p, err
		}
	}
	return s.rankAll(ctx, q, sel, buckets, offset, limit)
}

// topPage is a page of orderBy=usage from the rankings; it returns
// rollup.ErrRankingIncomplete when the page reaches past them.
func (s *Server) topPage(ctx context.Context, q Query, sel rollup.Selection, buckets []rollup.Bucket, offset, limit int) (rollup.Page, error) {
	all, err := s.reader.Page(ctx, sel, buckets, 0, 0)
	if err != nil {
		return rollup.Page{}, fmt.Errorf("count rows: %w", err)
	}
	page := rollup.Page{Total: all.Total, Rows: []rollup.Row{}}
	if offset >= all.Total || limit <= 0 {
		return page, nil
	}
	// Every ranked entity has at least one row: offset+limit entities
	// cover the page.
	first, last := buckets[0].First, buckets[len(buckets)-1].Last
	top, err := s.reader.TopByUsage(ctx, sel.Scope, first, last, rollup.Field(q.Item, q.Method), min(offset+limit, all.Total))
	if err != nil && !errors.Is(err, rollup.ErrRankingIncomplete) {
		return rollup.Page{}, fmt.Errorf("rank by usage: %w", err)
	}
	incomplete := err != nil
	members := make([]string, len(top))
	for i, t := range top {
		members[i] = t.Member
	}
	counts, err := s.reader.RowCounts(ctx, sel.Scope, members, buckets)
	if err != nil {
		return rollup.Page{}, err
	}
	skip := offset
	for i, m := range members {
		if skip >= counts[i] {
			skip -= counts[i]
			continue
		}
		p, err := s.reader.Page(ctx, rollup.Selection{Scope: sel.Scope, Member: m, Totals: sel.Totals}, buckets, skip, limit-len(page.Rows))
		if err != nil {
			return rollup.Page{}, fmt.Errorf("read ranked rows: %w", err)
		}
		skip = 0
		page.Rows = append(page.Rows, p.Rows...)
		if len(page.Rows) >= limit {
			return page, nil
		}
	}
	if incomplete && offset+len(page.Rows) < all.Total {
		return rollup.Page{}, rollup.ErrRankingIncomplete
	}
	return page, nil
}

// rankAll reads every row of the selection, ranks the entities by their
// total over the range and returns the page: for small selections.
func (s *Server) rankAll(ctx context.Context, q Query, sel rollup.Selection, buckets []rollup.Bucket, offset, limit int) (rollup.Page, error) {
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
		totals[m] += r.Total[field]
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
