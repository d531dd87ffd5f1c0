package rollup

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Usage rankings. applyScript keeps, per shard, month, scope and item, a
// sorted set of the members with a non-zero part of the item's Effective
// month total in the shard, scored minus that part (millionths of a
// unit-second, as a double: exact below 2^53, about 2.5 million
// unit-hours per entity and month; beyond, ties may break by a rounding
// of the order, never of a value), so that ascending order is largest
// first and ties come by name (the key is in keys.go). It commits with the
// values (ZINCRBY in the same script; a duplicate subtracts its aggregate
// share again), so it is exact whatever the redelivery. Members whose
// month total is zero are not in it. A namespace lives in one shard, so
// its part is its total; a project's, cluster's or project-cluster's
// total is the sum of its shards' parts.
//
// Only Effective is ranked: one ZINCRBY per item and piece costs about
// what the piece's BITFIELD of all twelve fields costs. Effective is
// max(usage, request) (per pod from the Kubernetes collector), so it
// bounds Usage and Request from above: those are ranked by the threshold
// algorithm over the Effective rankings with their own exact totals.
// ProjectQuota has no such bound (ErrRankingIncomplete: the caller reads
// the selection whole). A sample may send an effective below its usage or
// request (the file source takes what it is given): applyScript then
// marks the shard-month's rankings loose (looseKey), and Usage and
// Request over a range that meets a loose shard-month are not ranked
// (ErrRankingIncomplete) rather than misordered.

// rankFields are the ranked fields, one per item in stored order: each
// item's Effective. applyScript keeps a ranking of each (rankKey); it
// receives them from here (scriptLayout).
func rankFields() (out [numItems]int) {
	for it := range numItems {
		out[it] = Field(it, Effective)
	}
	return out
}

// rankField is the field whose ranking bounds field, and whether there is
// one.
func rankField(field int) (int, bool) {
	it, m := Item(field/int(numMethods)), Method(field%int(numMethods))
	if m == ProjectQuota {
		return 0, false
	}
	return Field(it, Effective), true
}

// Ranked is a member with its exact total over a range.
type Ranked struct {
	Member string
	Total  int64
}

// ErrRankingIncomplete is returned by Reader.TopByUsage when the range's
// first n cannot be told from the rankings alone: fewer than n members
// have a non-zero total in the range (the rest are zeros, in name order,
// which the rankings do not list).
var ErrRankingIncomplete = errors.New("ranking holds fewer members than asked")

// maxRankChunk bounds how many members of each ranking the threshold
// algorithm reads at once: it starts at the page's size and doubles.
const maxRankChunk = 4096

func byTotal(a, b Ranked) int {
	if c := cmp.Compare(b.Total, a.Total); c != 0 {
		return c
	}
	return cmp.Compare(a.Member, b.Member)
}

// TopByUsage returns the first n members of the whole scope sc by their
// exact total of field over first..last (descending, ties by member), all
// with a non-zero total.
//
// Its cost does not grow with the number of members, only with how deep
// the rankings must be read. Namespaces over one whole month: each
// shard's first n (one ZRANGE per shard), merged; a namespace's score is
// its month total. Otherwise the threshold algorithm over the (shard,
// month) rankings: read each in chunks (the page's size, doubling), largest first, compute the
// candidates' exact range totals from their day rollups, and stop once the
// n-th best exact total exceeds the sum of the lists' current scores,
// which bounds the total of every member not read yet. How deep that is
// depends on the data: with a range covering most of its months, about n
// members per list.
func (r *Reader) TopByUsage(ctx context.Context, sc Scope, first, last Day, field, n int) ([]Ranked, error) {
	return r.TopByUsagePrefix(ctx, sc, "", first, last, field, n)
}

// TopByUsagePrefix is TopByUsage among the members of sc that start with
// prefix (a label key's groups: GroupPrefix(key, "") in ScopeGroup). The
// rankings hold every member, so the members of other prefixes are read
// and passed over: the cost grows with the depth of the whole ranking
// that the page needs (for groups, times the number of kept keys).
func (r *Reader) TopByUsagePrefix(ctx context.Context, sc Scope, prefix string, first, last Day, field, n int) ([]Ranked, error) {
	if n <= 0 {
		return nil, nil
	}
	rf, ok := rankField(field)
	if !ok {
		return nil, ErrRankingIncomplete
	}
	parts := partsOf(Bucket{First: first, Last: last})
	if rf == field && sc == ScopeNamespace && prefix == "" && len(parts) == 1 && parts[0].first == MonthFirst(first) && parts[0].last == MonthLast(first) {
		pipe := r.rdb.Pipeline()
		cmds := make([]*redis.ZSliceCmd, Shards)
		for i := range Shards {
			cmds[i] = pipe.ZRangeWithScores(ctx, rankKey(i, parts[0].month, sc, field), 0, int64(n-1))
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("read usage rankings: %w", err)
		}
		var out []Ranked
		for _, c := range cmds {
			for _, z := range c.Val() {
				m, _ := z.Member.(string)
				if t := int64(-z.Score); t > 0 {
					out = append(out, Ranked{Member: m, Total: t})
				}
			}
		}
		slices.SortFunc(out, byTotal)
		if len(out) < n {
			return out, ErrRankingIncomplete
		}
		return out[:n], nil
	}
	if rf != field {
		loose, err := r.loose(ctx, parts)
		if err != nil {
			return nil, err
		}
		if loose {
			return nil, ErrRankingIncomplete
		}
	}
	return r.threshold(ctx, sc, prefix, first, last, parts, rf, field, n)
}

// loose reports whether any shard-month of parts has loose rankings.
func (r *Reader) loose(ctx context.Context, parts []part) (bool, error) {
	pipe := r.rdb.Pipeline()
	var cmds []*redis.IntCmd
	for _, p := range parts {
		for i := range Shards {
			cmds = append(cmds, pipe.Exists(ctx, looseKey(i, p.month)))
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return false, fmt.Errorf("read ranking bounds: %w", err)
	}
	for _, c := range cmds {
		if c.Val() > 0 {
			return true, nil
		}
	}
	return false, nil
}

// threshold is TopByUsage over a range that is not one whole month.
// The rankings of rf bound field's totals.
func (r *Reader) threshold(ctx context.Context, sc Scope, prefix string, first, last Day, parts []part, rf, field, n int) ([]Ranked, error) {
	type list struct {
		shard int
		key   string
		depth int64
		score float64 // the month total at depth (0 once exhausted)
		done  bool
	}
	var lists []*list
	for _, p := range parts {
		for i := range Shards {
			lists = append(lists, &list{shard: i, key: rankKey(i, p.month, sc, rf), score: math.Inf(1)})
		}
	}
	seen := map[string]bool{}
	var best []Ranked // exact, sorted
	chunk := int64(max(32, n))
	for {
		// Sorted access: the next chunk of every month's ranking.
		pipe := r.rdb.Pipeline()
		cmds := make([]*redis.ZSliceCmd, len(lists))
		for i, l := range lists {
			if !l.done {
				cmds[i] = pipe.ZRangeWithScores(ctx, l.key, l.depth, l.depth+chunk-1)
			}
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("read usage rankings: %w", err)
		}
		var fresh []string
		for i, l := range lists {
			if l.done {
				continue
			}
			zs := cmds[i].Val()
			l.depth += int64(len(zs))
			if int64(len(zs)) < chunk {
				l.done, l.score = true, 0
			} else {
				l.score = -zs[len(zs)-1].Score
			}
			for _, z := range zs {
				m, _ := z.Member.(string)
				if !seen[m] {
					seen[m] = true
					if strings.HasPrefix(m, prefix) {
						fresh = append(fresh, m)
					}
				}
			}
		}
		// Random access: the candidates' exact totals over the range.
		if len(fresh) > 0 {
			rows := make([]Row, len(fresh))
			for i, m := range fresh {
				rows[i] = Row{Bucket: Bucket{First: first, Last: last}, Entity: ParseMember(sc, m)}
			}
			if err := r.fillValues(ctx, sc, rows, nil, true); err != nil {
				return nil, err
			}
			for i, row := range rows {
				t := row.Total[field]
				if t > 0 {
					best = append(best, Ranked{Member: fresh[i], Total: t})
				}
			}
			slices.SortFunc(best, byTotal)
		}
		// Every member not read yet totals at most the sum of the
		// lists' current scores; a namespace lives in one shard, so for
		// namespaces the most of any one shard's months.
		perShard := make([]float64, Shards)
		exhausted := true
		for _, l := range lists {
			perShard[l.shard] += l.score
			exhausted = exhausted && l.done
		}
		bound := 0.0
		for _, b := range perShard {
			if !sc.isSum() {
				bound = math.Max(bound, b)
			} else {
				bound += b
			}
		}
		if exhausted {
			if len(best) < n {
				return best, ErrRankingIncomplete
			}
			return best[:n], nil
		}
		if len(best) >= n && float64(best[n-1].Total) > bound {
			return best[:n], nil
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		chunk = min(2*chunk, maxRankChunk)
	}
}

// RowCounts returns, for each member of scope sc, how many of buckets it
// has a sample in (its rows in a query), from the months' presence masks:
// one round trip.
func (r *Reader) RowCounts(ctx context.Context, sc Scope, members []string, buckets []Bucket) ([]int, error) {
	out := make([]int, len(members))
	if len(members) == 0 {
		return out, nil
	}
	pipe := r.rdb.Pipeline()
	cmds := map[string]*redis.SliceCmd{}
	for _, b := range buckets {
		for _, p := range partsOf(b) {
			if cmds[p.month] == nil {
				cmds[p.month] = pipe.HMGet(ctx, maskKey(p.month, sc), members...)
			}
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read presence masks: %w", err)
	}
	masks := map[string][]uint32{}
	for m, c := range cmds {
		ms := make([]uint32, len(members))
		for i, v := range c.Val() {
			s, _ := v.(string)
			x, _ := strconv.ParseUint(s, 10, 32)
			ms[i] = uint32(x)
		}
		masks[m] = ms
	}
	for i := range members {
		for _, b := range buckets {
			for _, p := range partsOf(b) {
				if masks[p.month][i]&p.mask() != 0 {
					out[i]++
					break
				}
			}
		}
	}
	return out, nil
}
