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

// Span is [From, To) in seconds since the start of a billing day.
type Span struct{ From, To int32 }

// ClusterDay is the coverage of one cluster on one billing day: the union
// of the windows counted for any of its namespaces, merged and sorted.
type ClusterDay struct {
	Cluster string
	Day     Day
	Spans   []Span
}

// Covered is the number of seconds the spans cover.
func (c ClusterDay) Covered() int64 {
	var n int64
	for _, s := range c.Spans {
		n += int64(s.To - s.From)
	}
	return n
}

// LastEnd is the end of the last counted second of the day (seconds since
// its start; 0 when nothing was counted).
func (c ClusterDay) LastEnd() int32 {
	if len(c.Spans) == 0 {
		return 0
	}
	return c.Spans[len(c.Spans)-1].To
}

// MaxCoverageDays bounds one ClusterCoverage read.
const MaxCoverageDays = 400

// ClusterCoverage reads the coverage of every cluster (or only of cluster,
// when not empty) on the days first..last that had at least one counted
// sample, ordered by cluster then day. It reads one small hash per day
// (its fields are clusters, not namespaces): the cost grows with days ×
// clusters, never with namespaces. Each shard keeps the union for its
// namespaces; the shards' parts are united here.
func (r *Reader) ClusterCoverage(ctx context.Context, first, last Day, cluster string) ([]ClusterDay, error) {
	return r.coverage(ctx, "coverage", first, last, cluster, clusterCoverageKey, nil, parseSpans)
}

// CapacityCoverage reads, like ClusterCoverage, the seconds of every
// cluster's (or only cluster's) capacity samples counted on the days
// first..last that had one: a cluster-day missing here has no capacity
// known (its ScopeCapacity rollup is absent), which is not a capacity
// of zero. It reads one small hash per day (and shard, or only the
// cluster's shard).
func (r *Reader) CapacityCoverage(ctx context.Context, first, last Day, cluster string) ([]ClusterDay, error) {
	var shards []int
	if cluster != "" {
		shards = []int{shardOf(cluster, "")}
	}
	return r.coverage(ctx, "capacity coverage", first, last, cluster, capacityCoverageKey, shards, func(v string) []Span {
		_, spans, _ := strings.Cut(v, ";")
		return parseSpans(spans)
	})
}

// coverage reads per-cluster coverage hashes of the days first..last
// (key), of the shards (nil: every shard), and unites each cluster-day's
// spans across them.
func (r *Reader) coverage(ctx context.Context, what string, first, last Day, cluster string, key func(int, Day) string, shards []int, parse func(string) []Span) ([]ClusterDay, error) {
	if last < first || last-first >= MaxCoverageDays {
		return nil, fmt.Errorf("read %s %s..%s: at most %d days", what, first, last, MaxCoverageDays)
	}
	if shards == nil {
		for sh := range Shards {
			shards = append(shards, sh)
		}
	}
	pipe := r.rdb.Pipeline()
	type read struct {
		day Day
		all *redis.MapStringStringCmd
		one *redis.StringCmd
	}
	reads := make([]read, 0, (last-first+1)*Shards)
	for d := first; d <= last; d++ {
		for _, sh := range shards {
			rd := read{day: d}
			if cluster != "" {
				rd.one = pipe.HGet(ctx, key(sh, d), cluster)
			} else {
				rd.all = pipe.HGetAll(ctx, key(sh, d))
			}
			reads = append(reads, rd)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read %s %s..%s: %w", what, first, last, err)
	}
	type cday struct {
		cluster string
		day     Day
	}
	parts := map[cday][]Span{}
	for _, rd := range reads {
		if rd.one != nil {
			v, err := rd.one.Result()
			if errors.Is(err, redis.Nil) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("read %s of %s on %s: %w", what, cluster, rd.day, err)
			}
			k := cday{cluster, rd.day}
			parts[k] = append(parts[k], parse(v)...)
			continue
		}
		for c, v := range rd.all.Val() {
			k := cday{c, rd.day}
			parts[k] = append(parts[k], parse(v)...)
		}
	}
	out := make([]ClusterDay, 0, len(parts))
	for k, spans := range parts {
		out = append(out, ClusterDay{Cluster: k.cluster, Day: k.day, Spans: UnionSpans(spans)})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Cluster != out[j].Cluster {
			return out[i].Cluster < out[j].Cluster
		}
		return out[i].Day < out[j].Day
	})
	return out, nil
}

// parseSpans reads "from-to,from-to" (merged and sorted by the script).
func parseSpans(v string) []Span {
	var out []Span
	for _, part := range strings.Split(v, ",") {
		a, b, ok := strings.Cut(part, "-")
		if !ok {
			continue
		}
		from, err1 := strconv.ParseInt(a, 10, 32)
		to, err2 := strconv.ParseInt(b, 10, 32)
		if err1 != nil || err2 != nil || to <= from {
			continue
		}
		out = append(out, Span{int32(from), int32(to)})
	}
	return UnionSpans(out)
}

// UnionSpans merges spans into sorted, disjoint, non-touching spans.
func UnionSpans(spans []Span) []Span {
	if len(spans) == 0 {
		return nil
	}
	s := append([]Span(nil), spans...)
	sort.Slice(s, func(i, j int) bool { return s[i].From < s[j].From })
	out := s[:1]
	for _, x := range s[1:] {
		last := &out[len(out)-1]
		if x.From <= last.To {
			last.To = max(last.To, x.To)
			continue
		}
		out = append(out, x)
	}
	return out
}
