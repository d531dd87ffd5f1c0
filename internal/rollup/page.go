package rollup

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Step is the width of a query's buckets.
type Step int

// The steps. Weeks are ISO weeks (Monday to Sunday), months calendar
// months of the billing time zone.
const (
	StepDay Step = iota
	StepWeek
	StepMonth
)

// Bucket is one step of a query, clipped to the query's range: the days
// First..Last, both inclusive.
type Bucket struct{ First, Last Day }

// Buckets cuts start..end (inclusive) into steps, the first and last
// clipped to the range.
func Buckets(start, end Day, step Step) []Bucket {
	var out []Bucket
	for d := start; d <= end; {
		last := d
		switch step {
		case StepWeek:
			last = d + Day((7-int(d.Weekday()))%7) // to Sunday (time.Sunday is 0)
		case StepMonth:
			last = MonthLast(d)
		}
		if last > end {
			last = end
		}
		out = append(out, Bucket{First: d, Last: last})
		d = last + 1
	}
	return out
}

// Selection says which entities of a scope a query reports. At most one
// of Prefix, Member and Namespace is set; none means every member of Scope.
type Selection struct {
	Scope Scope
	// Prefix keeps the members that start with it: Entity{Project: p}.Member
	// plus Sep selects project p's namespaces or clusters.
	Prefix string
	// Member is one entity's member (a single project, cluster, or project
	// cluster share).
	Member string
	// Namespace selects the namespaces of that name (Scope must be
	// ScopeNamespace), through the month's name index; with Project set,
	// only those of that project.
	Namespace string
	Project   string
	// Totals asks only for each row's Total, not its Days: a project's,
	// cluster's or project-cluster's month is then read from its month
	// parts where the bucket covers most of it (6 reads instead of 6 per
	// day; see fillValues).
	Totals bool
}

// Row is one entity in one bucket.
type Row struct {
	Bucket Bucket
	Entity Entity
	// Total is the entity's rollup summed over Bucket.
	Total Values
	// Days holds the entity's rollup of each day of Bucket, in order; a day
	// without a sample is zero. It is nil when the selection asked for
	// Totals only and a month part was read whole.
	Days []Values
}

// Page is one page of a query's rows.
type Page struct {
	// Total counts every row of the query, on every page.
	Total int
	Rows  []Row
}

// Page returns the rows offset..offset+limit-1 of sel over buckets, in the
// API's order: bucket, then project, cluster, namespace.
func (r *Reader) Page(ctx context.Context, sel Selection, buckets []Bucket, offset, limit int) (Page, error) {
	switch {
	case sel.Member != "":
		return r.memberPage(ctx, sel, buckets, offset, limit)
	case sel.Namespace != "":
		return r.namePage(ctx, sel, buckets, offset, limit)
	default:
		return r.listPage(ctx, sel, buckets, offset, limit)
	}
}

// maxMerged bounds the cache of straddling-week merges.
const maxMerged = 16

type mergedSet struct {
	version string
	members []string
}

// part is the share of a bucket that lies in one month.
type part struct {
	month       string
	first, last Day
}

func partsOf(b Bucket) []part {
	var ps []part
	for d := b.First; d <= b.Last; {
		last := MonthLast(d)
		if last > b.Last {
			last = b.Last
		}
		ps = append(ps, part{month: d.Month(), first: d, last: last})
		d = last + 1
	}
	return ps
}

func (p part) mask() uint32 { return DaysMask(p.first, p.last) }

// lexRange returns the ZRANGEBYLEX bounds of the members starting with
// prefix.
func lexRange(prefix string) (string, string) {
	if prefix == "" {
		return "-", "+"
	}
	up := []byte(prefix)
	up[len(up)-1]++
	return "[" + prefix, "(" + string(up)
}

// rangeAt is a clipped part of a source.
type rangeAt struct {
	part int
	req  rangeReq
}

// source is where one bucket's members are read from.
type source struct {
	bucket Bucket
	parts  []part
	keys   []string // index key of each part
	count  int
	before int       // members sorting before the prefix (single part)
	merged []string  // the bucket's members (several parts)
	ranges []rangeAt // clipped parts, their keys resolved by rangeIndexes
	cache  string    // merge cache key
	ver    string    // the parts' index versions, joined
	reads  countCmds // the reads that count it
}

// countCmds are the reads that count a source's members.
type countCmds struct {
	in, before *redis.IntCmd
	parts      []*redis.StringSliceCmd
	// page is the first source's members from offset on, read with its
	// count: a page within the first bucket (the usual case: one bucket,
	// or the first page) costs no round trip of its own.
	page *redis.StringSliceCmd
}

// err is the first error of c's single-index reads.
func (c *countCmds) err() error {
	if err := c.in.Err(); err != nil {
		return err
	}
	if c.before != nil {
		if err := c.before.Err(); err != nil {
			return err
		}
	}
	if c.page != nil {
		return c.page.Err()
	}
	return nil
}

// listPlan is what the steps of listPage hand on: the query, one source
// per bucket, and the clipped parts whose index is still to be found.
type listPlan struct {
	sel            Selection
	lexMin, lexMax string
	offset, limit  int
	srcs           []source
	reqs           []rangeReq // the clipped parts, each once
	multi          bool       // a bucket spans two months
}

// listPage pages every member of a scope (or those under a prefix) in
// five steps: plan each bucket's indexes, read the index versions of
// buckets that span two months, count each bucket's members, read the
// page's members by rank, and fill their values.
func (r *Reader) listPage(ctx context.Context, sel Selection, buckets []Bucket, offset, limit int) (Page, error) {
	pl := planList(sel, buckets, offset, limit)
	if err := r.readVersions(ctx, &pl); err != nil {
		return Page{}, err
	}
	total, err := r.countSources(ctx, &pl)
	if err != nil {
		return Page{}, err
	}
	rows, err := r.pageMembers(ctx, &pl)
	if err != nil {
		return Page{}, err
	}
	if err := r.fillValues(ctx, sel.Scope, rows, nil, sel.Totals); err != nil {
		return Page{}, err
	}
	return Page{Total: total, Rows: rows}, nil
}

// planList cuts each bucket into its months' parts and names the index
// of each part: a day index, a month index, or a clipped part whose index
// is found later (rangeIndexes).
func planList(sel Selection, buckets []Bucket, offset, limit int) listPlan {
	pl := listPlan{sel: sel, offset: offset, limit: limit, srcs: make([]source, len(buckets))}
	pl.lexMin, pl.lexMax = lexRange(sel.Prefix)
	seen := map[rangeReq]bool{}
	for i, b := range buckets {
		s := source{bucket: b, parts: partsOf(b)}
		for _, p := range s.parts {
			switch {
			case p.first == p.last:
				s.keys = append(s.keys, dayIndexKey(p.first, sel.Scope))
			case p.first == MonthFirst(p.first) && p.last == MonthLast(p.first):
				s.keys = append(s.keys, monthIndexKey(p.month, sel.Scope))
			default:
				rq := rangeReq{month: p.month, first: MonthFirst(p.first), scope: sel.Scope, mask: p.mask()}
				if !seen[rq] {
					seen[rq] = true
					pl.reqs = append(pl.reqs, rq)
				}
				s.keys = append(s.keys, "")
				s.ranges = append(s.ranges, rangeAt{part: len(s.keys) - 1, req: rq})
			}
		}
		pl.multi = pl.multi || len(s.parts) > 1
		pl.srcs[i] = s
	}
	return pl
}

// readVersions reads the index versions of the months of every source
// that spans two months. They are read before the indexes: a merge
// cached under a version is never older than that version.
func (r *Reader) readVersions(ctx context.Context, pl *listPlan) error {
	if !pl.multi {
		return nil
	}
	pipe := r.rdb.Pipeline()
	vers := map[string]*redis.StringCmd{}
	for _, s := range pl.srcs {
		for _, p := range s.parts {
			if len(s.parts) > 1 && vers[p.month] == nil {
				vers[p.month] = pipe.Get(ctx, versionKey(p.month, pl.sel.Scope))
			}
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("read index versions: %w", err)
	}
	for i := range pl.srcs {
		s := &pl.srcs[i]
		if len(s.parts) < 2 {
			continue
		}
		vs := make([]string, len(s.parts))
		for j, p := range s.parts {
			vs[j] = vers[p.month].Val()
		}
		s.ver = strings.Join(vs, ",")
	}
	return nil
}

// queueCount queues the reads that count source i's members in index
// key (and, for the first source, its page).
func (pl *listPlan) queueCount(ctx context.Context, pipe redis.Pipeliner, i int, key string) {
	c := &pl.srcs[i].reads
	if pl.sel.Prefix == "" {
		c.in = pipe.ZCard(ctx, key)
	} else {
		c.in = pipe.ZLexCount(ctx, key, pl.lexMin, pl.lexMax)
		c.before = pipe.ZLexCount(ctx, key, "-", "("+pl.sel.Prefix)
	}
	if i == 0 && pl.limit > 0 {
		if pl.sel.Prefix == "" {
			c.page = pipe.ZRange(ctx, key, int64(pl.offset), int64(pl.offset+pl.limit-1))
		} else {
			c.page = pipe.ZRangeByLex(ctx, key, &redis.ZRangeBy{Min: pl.lexMin, Max: pl.lexMax, Offset: int64(pl.offset), Count: int64(pl.limit)})
		}
	}
}

// findIndexes resolves the index of every clipped part and reports
// whether the sources were counted on the way. One clipped bucket (a
// week, this month up to today): its month index usually answers
// (nothing counted outside the bucket), so it is counted and paged with
// the checks that tell, in one round trip; if another index answers,
// those reads are dropped.
func (r *Reader) findIndexes(ctx context.Context, pl *listPlan) (bool, error) {
	counted := false
	var rkeys map[rangeReq]string
	if len(pl.srcs) == 1 && len(pl.srcs[0].parts) == 1 && len(pl.srcs[0].ranges) == 1 {
		month := monthIndexKey(pl.reqs[0].month, pl.sel.Scope)
		pipe := r.rdb.Pipeline()
		checks := queueRangeChecks(ctx, pipe, pl.reqs)
		pl.queueCount(ctx, pipe, 0, month)
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return false, fmt.Errorf("check clipped bucket index: %w", err)
		}
		var err error
		if rkeys, err = r.resolveRanges(ctx, pl.reqs, checks); err != nil {
			return false, err
		}
		if counted = rkeys[pl.reqs[0]] == month; !counted {
			pl.srcs[0].reads = countCmds{}
		} else if err := pl.srcs[0].reads.err(); err != nil {
			return false, fmt.Errorf("count index members: %w", err)
		}
	} else {
		var err error
		if rkeys, err = r.rangeIndexes(ctx, pl.reqs); err != nil {
			return false, err
		}
	}
	for i := range pl.srcs {
		s := &pl.srcs[i]
		for _, ra := range s.ranges {
			s.keys[ra.part] = rkeys[ra.req]
		}
		if len(s.parts) > 1 {
			s.cache = strings.Join(s.keys, ",") + "|" + pl.sel.Prefix
		}
	}
	return counted, nil
}

// countSources counts each source's members and returns their sum, the
// query's row count. A source of several parts is merged whole (or taken
// from the merge cache); the others are counted in their one index.
func (r *Reader) countSources(ctx context.Context, pl *listPlan) (int, error) {
	counted, err := r.findIndexes(ctx, pl)
	if err != nil {
		return 0, err
	}
	pipe := r.rdb.Pipeline()
	for i := range pl.srcs {
		s := &pl.srcs[i]
		if len(s.parts) > 1 {
			if m, ok := r.cached(s.cache, s.ver); ok {
				s.merged = m
				continue
			}
			for _, k := range s.keys {
				s.reads.parts = append(s.reads.parts, pipe.ZRangeByLex(ctx, k, &redis.ZRangeBy{Min: pl.lexMin, Max: pl.lexMax}))
			}
			continue
		}
		if !counted {
			pl.queueCount(ctx, pipe, i, s.keys[0])
		}
	}
	if !counted {
		if _, err := pipe.Exec(ctx); err != nil {
			return 0, fmt.Errorf("count index members: %w", err)
		}
	}
	total := 0
	for i := range pl.srcs {
		s := &pl.srcs[i]
		switch {
		case s.reads.in != nil:
			s.count = int(s.reads.in.Val())
			if s.reads.before != nil {
				s.before = int(s.reads.before.Val())
			}
		case s.reads.parts != nil:
			lists := make([][]string, len(s.reads.parts))
			for j, c := range s.reads.parts {
				lists[j] = c.Val()
			}
			s.merged = mergeSorted(lists)
			r.remember(s.cache, s.ver, s.merged)
			s.count = len(s.merged)
		default:
			s.count = len(s.merged)
		}
		total += s.count
	}
	return total, nil
}

// pageMembers returns the rows of the page's members, by rank across the
// counted sources, values not yet filled.
func (r *Reader) pageMembers(ctx context.Context, pl *listPlan) ([]Row, error) {
	type want struct {
		src  int
		list *redis.StringSliceCmd
		mems []string
	}
	var wants []want
	pipe := r.rdb.Pipeline()
	queued := false
	cum := 0
	for i := range pl.srcs {
		s := &pl.srcs[i]
		lo, hi := max(pl.offset-cum, 0), min(s.count, pl.offset+pl.limit-cum)
		cum += s.count
		if lo >= hi {
			continue
		}
		if s.merged != nil || len(s.parts) > 1 {
			wants = append(wants, want{src: i, mems: s.merged[lo:hi]})
			continue
		}
		if p := s.reads.page; p != nil {
			// Read in the same pipeline as the count, so consistent with
			// it: exactly hi-lo members.
			mems := p.Val()
			wants = append(wants, want{src: i, mems: mems[:min(len(mems), hi-lo)]})
			continue
		}
		wants = append(wants, want{src: i, list: pipe.ZRange(ctx, s.keys[0], int64(s.before+lo), int64(s.before+hi-1))})
		queued = true
	}
	if queued {
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("read page members: %w", err)
		}
	}
	var rows []Row
	for _, w := range wants {
		mems := w.mems
		if w.list != nil {
			mems = w.list.Val()
		}
		for _, m := range mems {
			if pl.sel.Prefix != "" && !strings.HasPrefix(m, pl.sel.Prefix) {
				continue // the index changed between counting and paging
			}
			rows = append(rows, Row{Bucket: pl.srcs[w.src].bucket, Entity: ParseMember(pl.sel.Scope, m)})
		}
	}
	return rows, nil
}

func (r *Reader) cached(key, ver string) ([]string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok := r.merged[key]
	if !ok || m.version != ver {
		return nil, false
	}
	return m.members, true
}

func (r *Reader) remember(key, ver string, members []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.merged[key]; !ok && len(r.merged) >= maxMerged {
		for k := range r.merged { // evict one, any
			delete(r.merged, k)
			break
		}
	}
	r.merged[key] = mergedSet{version: ver, members: members}
}

// mergeSorted merges sorted lists into one sorted list without duplicates.
func mergeSorted(lists [][]string) []string {
	n := 0
	for _, l := range lists {
		n += len(l)
	}
	out := make([]string, 0, n)
	for _, l := range lists {
		out = append(out, l...)
	}
	sort.Strings(out)
	w := 0
	for i, m := range out {
		if i > 0 && m == out[w-1] {
			continue
		}
		out[w] = m
		w++
	}
	return out[:w:w]
}

// memberPage reports one entity: the month masks tell its buckets.
func (r *Reader) memberPage(ctx context.Context, sel Selection, buckets []Bucket, offset, limit int) (Page, error) {
	pipe := r.rdb.Pipeline()
	masks := map[string]*redis.StringCmd{}
	for _, b := range buckets {
		for _, p := range partsOf(b) {
			if masks[p.month] == nil {
				masks[p.month] = pipe.HGet(ctx, maskKey(p.month, sel.Scope), sel.Member)
			}
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return Page{}, fmt.Errorf("read presence masks: %w", err)
	}
	monthMask := map[string]uint32{}
	for m, c := range masks {
		v, _ := c.Uint64()
		monthMask[m] = uint32(v)
	}
	var all []Row
	for _, b := range buckets {
		for _, p := range partsOf(b) {
			if monthMask[p.month]&p.mask() != 0 {
				all = append(all, Row{Bucket: b, Entity: ParseMember(sel.Scope, sel.Member)})
				break
			}
		}
	}
	rows := pageOf(all, offset, limit)
	presence := func(Entity) map[string]uint32 { return monthMask }
	if err := r.fillValues(ctx, sel.Scope, rows, presence, sel.Totals); err != nil {
		return Page{}, err
	}
	return Page{Total: len(all), Rows: rows}, nil
}

// namePage reports the namespaces of one name, found in the months' name
// indexes (members "namespace project cluster").
func (r *Reader) namePage(ctx context.Context, sel Selection, buckets []Bucket, offset, limit int) (Page, error) {
	prefix := sel.Namespace + Sep
	if sel.Project != "" {
		prefix += sel.Project + Sep
	}
	lexMin, lexMax := lexRange(prefix)
	var months []string
	for _, b := range buckets {
		for _, p := range partsOf(b) {
			if len(months) == 0 || months[len(months)-1] != p.month {
				months = append(months, p.month)
			}
		}
	}
	pipe := r.rdb.Pipeline()
	names := make([]*redis.StringSliceCmd, len(months))
	for i, m := range months {
		names[i] = pipe.ZRangeByLex(ctx, nameIndexKey(m), &redis.ZRangeBy{Min: lexMin, Max: lexMax})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return Page{}, fmt.Errorf("read namespace name index: %w", err)
	}
	members := make([][]string, len(months))
	pipe = r.rdb.Pipeline()
	maskCmds := make([]*redis.SliceCmd, len(months))
	for i, m := range months {
		for _, n := range names[i].Val() {
			parts := strings.Split(n, Sep)
			if len(parts) != 3 || parts[0] != sel.Namespace {
				continue
			}
			members[i] = append(members[i], Entity{Project: parts[1], Cluster: parts[2], Namespace: parts[0]}.Member(ScopeNamespace))
		}
		if len(members[i]) > 0 {
			maskCmds[i] = pipe.HMGet(ctx, maskKey(m, ScopeNamespace), members[i]...)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return Page{}, fmt.Errorf("read namespace masks: %w", err)
	}
	masks := map[string]map[string]uint32{} // member -> month -> mask
	var cands []string
	for i, m := range months {
		if maskCmds[i] == nil {
			continue
		}
		for j, v := range maskCmds[i].Val() {
			s, _ := v.(string)
			mask, _ := strconv.ParseUint(s, 10, 32)
			mem := members[i][j]
			if masks[mem] == nil {
				masks[mem] = map[string]uint32{}
				cands = append(cands, mem)
			}
			masks[mem][m] = uint32(mask)
		}
	}
	sort.Strings(cands)
	var all []Row
	for _, b := range buckets {
		ps := partsOf(b)
		for _, c := range cands {
			for _, p := range ps {
				if masks[c][p.month]&p.mask() != 0 {
					all = append(all, Row{Bucket: b, Entity: ParseMember(ScopeNamespace, c)})
					break
				}
			}
		}
	}
	rows := pageOf(all, offset, limit)
	presence := func(e Entity) map[string]uint32 { return masks[e.Member(ScopeNamespace)] }
	if err := r.fillValues(ctx, ScopeNamespace, rows, presence, sel.Totals); err != nil {
		return Page{}, err
	}
	return Page{Total: len(all), Rows: rows}, nil
}

func pageOf(all []Row, offset, limit int) []Row {
	if offset >= len(all) {
		return []Row{}
	}
	end := min(len(all), offset+limit)
	return append([]Row(nil), all[offset:end]...)
}
