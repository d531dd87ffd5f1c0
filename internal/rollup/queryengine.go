package rollup

import (
	"context"
	"errors"
	"fmt"
	"math"
	mathbits "math/bits"
	"sort"
	"strconv"
	"strings"
	"sync"

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

// Reader answers paged queries from the rollups, reading only what a page
// needs: index cardinalities per bucket, the page's members by rank, and
// the page's day rollups. A query's cost grows with the number of buckets
// and with page size × days per bucket, not with the number of entities,
// with one exception: an ISO week that straddles two months has its two
// parts in two months' indexes (two Redis Cluster slots), so its rows are
// the merge of both parts, read whole — O(members of the week) — and kept
// in memory, keyed by both months' index versions, until either changes.
// It is safe for concurrent use.
type Reader struct {
	rdb redis.UniversalClient

	mu       sync.Mutex
	merged   map[string]mergedSet
	building map[string]*flight // clipped bucket caches being built
}

// maxMerged bounds the cache of straddling-week merges.
const maxMerged = 16

type mergedSet struct {
	version string
	members []string
}

// NewReader returns a Reader of the rollups in rdb.
func NewReader(rdb redis.UniversalClient) *Reader {
	return &Reader{rdb: rdb, merged: map[string]mergedSet{}, building: map[string]*flight{}}
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

func (r *Reader) listPage(ctx context.Context, sel Selection, buckets []Bucket, offset, limit int) (Page, error) {
	srcs := make([]source, len(buckets))
	var reqs []rangeReq
	seen := map[rangeReq]bool{}
	multi := false
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
					reqs = append(reqs, rq)
				}
				s.keys = append(s.keys, "")
				s.ranges = append(s.ranges, rangeAt{part: len(s.keys) - 1, req: rq})
			}
		}
		multi = multi || len(s.parts) > 1
		srcs[i] = s
	}
	lexMin, lexMax := lexRange(sel.Prefix)

	// Versions first, then indexes: a merge cached under a version is
	// never older than that version.
	if multi {
		pipe := r.rdb.Pipeline()
		vers := map[string]*redis.StringCmd{}
		for _, s := range srcs {
			for _, p := range s.parts {
				if len(s.parts) > 1 && vers[p.month] == nil {
					vers[p.month] = pipe.Get(ctx, versionKey(p.month, sel.Scope))
				}
			}
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return Page{}, fmt.Errorf("read index versions: %w", err)
		}
		for i := range srcs {
			s := &srcs[i]
			if len(s.parts) < 2 {
				continue
			}
			vs := make([]string, len(s.parts))
			for j, p := range s.parts {
				vs[j] = vers[p.month].Val()
			}
			s.ver = strings.Join(vs, ",")
		}
	}
	cmds := make([]countCmds, len(srcs))
	queueCount := func(pipe redis.Pipeliner, i int, key string) {
		c := &cmds[i]
		if sel.Prefix == "" {
			c.in = pipe.ZCard(ctx, key)
		} else {
			c.in = pipe.ZLexCount(ctx, key, lexMin, lexMax)
			c.before = pipe.ZLexCount(ctx, key, "-", "("+sel.Prefix)
		}
		if i == 0 && limit > 0 {
			if sel.Prefix == "" {
				c.page = pipe.ZRange(ctx, key, int64(offset), int64(offset+limit-1))
			} else {
				c.page = pipe.ZRangeByLex(ctx, key, &redis.ZRangeBy{Min: lexMin, Max: lexMax, Offset: int64(offset), Count: int64(limit)})
			}
		}
	}

	// One clipped bucket (a week, this month up to today): its month
	// index usually answers (nothing counted outside the bucket), so it is
	// counted and paged with the checks that tell, in one round trip; if
	// another index answers, those reads are dropped.
	counted := false
	var rkeys map[rangeReq]string
	if len(srcs) == 1 && len(srcs[0].parts) == 1 && len(srcs[0].ranges) == 1 {
		month := monthIndexKey(reqs[0].month, sel.Scope)
		pipe := r.rdb.Pipeline()
		checks := queueRangeChecks(ctx, pipe, reqs)
		queueCount(pipe, 0, month)
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return Page{}, fmt.Errorf("check clipped bucket index: %w", err)
		}
		var err error
		if rkeys, err = r.resolveRanges(ctx, reqs, checks); err != nil {
			return Page{}, err
		}
		if counted = rkeys[reqs[0]] == month; !counted {
			cmds[0] = countCmds{}
		} else if err := cmds[0].err(); err != nil {
			return Page{}, fmt.Errorf("count index members: %w", err)
		}
	} else {
		var err error
		if rkeys, err = r.rangeIndexes(ctx, reqs); err != nil {
			return Page{}, err
		}
	}
	for i := range srcs {
		s := &srcs[i]
		for _, ra := range s.ranges {
			s.keys[ra.part] = rkeys[ra.req]
		}
		if len(s.parts) > 1 {
			s.cache = strings.Join(s.keys, ",") + "|" + sel.Prefix
		}
	}

	pipe := r.rdb.Pipeline()
	for i := range srcs {
		s := &srcs[i]
		if len(s.parts) > 1 {
			if m, ok := r.cached(s.cache, s.ver); ok {
				s.merged = m
				continue
			}
			for _, k := range s.keys {
				cmds[i].parts = append(cmds[i].parts, pipe.ZRangeByLex(ctx, k, &redis.ZRangeBy{Min: lexMin, Max: lexMax}))
			}
			continue
		}
		if !counted {
			queueCount(pipe, i, s.keys[0])
		}
	}
	if !counted {
		if _, err := pipe.Exec(ctx); err != nil {
			return Page{}, fmt.Errorf("count index members: %w", err)
		}
	}
	total := 0
	for i := range srcs {
		s := &srcs[i]
		switch {
		case cmds[i].in != nil:
			s.count = int(cmds[i].in.Val())
			if cmds[i].before != nil {
				s.before = int(cmds[i].before.Val())
			}
		case cmds[i].parts != nil:
			lists := make([][]string, len(cmds[i].parts))
			for j, c := range cmds[i].parts {
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

	// The page's members, by rank.
	type want struct {
		src  int
		list *redis.StringSliceCmd
		mems []string
	}
	var wants []want
	pipe = r.rdb.Pipeline()
	queued := false
	cum := 0
	for i := range srcs {
		s := &srcs[i]
		lo, hi := max(offset-cum, 0), min(s.count, offset+limit-cum)
		cum += s.count
		if lo >= hi {
			continue
		}
		if s.merged != nil || len(s.parts) > 1 {
			wants = append(wants, want{src: i, mems: s.merged[lo:hi]})
			continue
		}
		if p := cmds[i].page; p != nil {
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
			return Page{}, fmt.Errorf("read page members: %w", err)
		}
	}
	var rows []Row
	for _, w := range wants {
		mems := w.mems
		if w.list != nil {
			mems = w.list.Val()
		}
		for _, m := range mems {
			if sel.Prefix != "" && !strings.HasPrefix(m, sel.Prefix) {
				continue // the index changed between counting and paging
			}
			rows = append(rows, Row{Bucket: srcs[w.src].bucket, Entity: ParseMember(sel.Scope, m)})
		}
	}
	if err := r.fillValues(ctx, sel.Scope, rows, nil, sel.Totals); err != nil {
		return Page{}, err
	}
	return Page{Total: total, Rows: rows}, nil
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

// fillValues reads the rollups of rows and sets their Total and Days:
// one MGET per shard, a sum's parts added up. When presence is known
// (month -> mask of an entity), days without a sample are not asked for.
//
// With totals, a sum (project, cluster, project-cluster) is read by
// month where that is cheaper (Days stays nil): a whole month from its
// month parts; a month cut by the bucket but covering more than half of
// it (this month up to today) from its month parts minus the days
// outside the bucket that the parts' own day masks, written in the same
// commit as their values, say moved them (usually none: the days after
// today). A row whose month part saturated, or whose total would
// overflow int64, is read again day by day. With Days, Total wraps past
// int64: a caller that must be exact there sums Days itself (the API
// does).
func (r *Reader) fillValues(ctx context.Context, sc Scope, rows []Row, presence func(Entity) map[string]uint32, totals bool) error {
	type slot struct {
		row, day int  // day -1: a month part
		p        part // the month part's (clipped) days
	}
	var slots []slot
	var wants []valueWant
	bits := map[Day]uint32{}
	byMonth := totals && sc != ScopeNamespace
	for i := range rows {
		row := &rows[i]
		row.Total, row.Days = Values{}, nil
		n := int(row.Bucket.Last-row.Bucket.First) + 1
		member := row.Entity.Member(sc)
		if byMonth {
			for _, p := range partsOf(row.Bucket) {
				if inMonth := int(MonthLast(p.first)-MonthFirst(p.first)) + 1; 2*(int(p.last-p.first)+1) > inMonth {
					slots = append(slots, slot{row: i, day: -1, p: p})
					wants = append(wants, valueWant{month: p.month, scope: sc, member: member})
					continue
				}
				for d := p.first; d <= p.last; d++ {
					slots = append(slots, slot{row: i, day: int(d - row.Bucket.First)})
					wants = append(wants, valueWant{day: d, scope: sc, member: member})
				}
			}
			continue
		}
		row.Days = make([]Values, n)
		var pm map[string]uint32
		if presence != nil {
			pm = presence(row.Entity)
		}
		for j := 0; j < n; j++ {
			d := row.Bucket.First + Day(j)
			if pm != nil {
				b, ok := bits[d]
				if !ok {
					b = 1 << uint(d.DayOfMonth()-1)
					bits[d] = b
				}
				if pm[d.Month()]&b == 0 {
					continue
				}
			}
			slots = append(slots, slot{row: i, day: j})
			wants = append(wants, valueWant{day: d, scope: sc, member: member})
		}
	}
	reads, err := r.readValues(ctx, wants)
	if err != nil {
		return err
	}
	again := map[int]bool{}
	// Days outside a clipped month part that moved it: read and taken off.
	type outside struct {
		row int
		day Day
	}
	var outs []outside
	for i, sl := range slots {
		row := &rows[sl.row]
		v := &reads[i].v
		if sl.day >= 0 && row.Days != nil {
			row.Days[sl.day] = *v
		}
		if sl.day < 0 {
			if reads[i].inexact {
				again[sl.row] = true
				continue
			}
			first := MonthFirst(sl.p.first)
			for extra := reads[i].mask &^ sl.p.mask(); extra != 0; extra &= extra - 1 {
				outs = append(outs, outside{row: sl.row, day: first + Day(mathbits.TrailingZeros32(extra))})
			}
		}
		if !row.Total.addChecked(v) && byMonth {
			again[sl.row] = true
		}
	}
	if len(outs) > 0 {
		vals, err := r.sumValues(ctx, len(outs), func(i int) (Day, Scope, string) {
			return outs[i].day, sc, rows[outs[i].row].Entity.Member(sc)
		})
		if err != nil {
			return err
		}
		for i, o := range outs {
			neg := vals[i]
			for f := range neg {
				neg[f] = -neg[f]
			}
			if !rows[o.row].Total.addChecked(&neg) {
				again[o.row] = true
			}
		}
	}
	if len(again) == 0 {
		return nil
	}
	redo := make([]Row, 0, len(again))
	for i := range rows {
		if again[i] {
			redo = append(redo, Row{Bucket: rows[i].Bucket, Entity: rows[i].Entity})
		}
	}
	if err := r.fillValues(ctx, sc, redo, presence, false); err != nil {
		return err
	}
	for i, j := 0, 0; i < len(rows); i++ {
		if again[i] {
			rows[i] = redo[j]
			j++
		}
	}
	return nil
}

// saturated reports whether a month part hit the int64 limit (its
// increments saturate rather than fail).
func saturated(v *Values) bool {
	for _, x := range v {
		if x == math.MaxInt64 || x == math.MinInt64 {
			return true
		}
	}
	return false
}

// decodeValuesString is DecodeValues of a reply string, without copying it
// to a byte slice first.
func decodeValuesString(s string) Values {
	var v Values
	for i := range v {
		off := i * 8
		if off >= len(s) {
			break
		}
		var x uint64
		for b := 0; b < 8; b++ {
			x <<= 8
			if off+b < len(s) {
				x |= uint64(s[off+b])
			}
		}
		v[i] = int64(x)
	}
	return v
}
