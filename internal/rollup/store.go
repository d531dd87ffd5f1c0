package rollup

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultRetention is how long day rollups are kept after their day ends.
const DefaultRetention = 400 * 24 * time.Hour

// ErrTimezoneMismatch is returned when Redis holds rollups made in another
// billing time zone: mixing zones would split days differently.
var ErrTimezoneMismatch = errors.New("billing time zone differs from the one recorded in redis")

// Verdict is what happened to one contribution.
type Verdict byte

// The verdicts.
const (
	Applied   Verdict = '0'
	Duplicate Verdict = '1'
	Overlap   Verdict = '2'
)

// Contribution is one day's piece of one sample, ready to apply.
type Contribution struct {
	Entity Entity
	Piece
}

// Change is the day rollup of one entity after a batch touched it.
type Change struct {
	Scope  Scope
	Day    Day
	Member string
	Values Values
}

// Result is what Apply did.
type Result struct {
	// Verdicts are in the order of the contributions.
	Verdicts []Verdict
	// Changes (when asked for) hold the new day rollups of every project,
	// cluster and namespace the batch touched, duplicates included: a
	// commit whose events were lost re-publishes them when redelivered.
	Changes []Change
}

// SeqRange is an inclusive range of stream sequences.
type SeqRange struct{ First, Last uint64 }

// Store keeps the rollups in Redis. It is safe for concurrent use; any
// number of Stores (processes) may apply to the same Redis at once.
type Store struct {
	rdb       redis.UniversalClient
	loc       *time.Location
	retention time.Duration
}

// NewStore returns a Store for the billing zone loc.
func NewStore(rdb redis.UniversalClient, loc *time.Location, retention time.Duration) (*Store, error) {
	if loc == nil {
		return nil, errors.New("rollup store: nil time zone")
	}
	if retention <= 0 {
		return nil, fmt.Errorf("rollup store: retention must be positive, got %s", retention)
	}
	return &Store{rdb: rdb, loc: loc, retention: retention}, nil
}

// Location returns the billing time zone.
func (s *Store) Location() *time.Location { return s.loc }

// Client returns the Redis client, for readers built on the same layout.
func (s *Store) Client() redis.UniversalClient { return s.rdb }

// CheckTimezone records the billing zone on first use and fails with
// ErrTimezoneMismatch when Redis already holds another one.
func (s *Store) CheckTimezone(ctx context.Context) error {
	if err := s.rdb.HSetNX(ctx, ConfigKey, "timezone", s.loc.String()).Err(); err != nil {
		return fmt.Errorf("record time zone: %w", err)
	}
	got, err := s.rdb.HGet(ctx, ConfigKey, "timezone").Result()
	if err != nil {
		return fmt.Errorf("read recorded time zone: %w", err)
	}
	if got != s.loc.String() {
		return fmt.Errorf("%w: redis has %q, configured %q", ErrTimezoneMismatch, got, s.loc.String())
	}
	return nil
}

// Expired reports whether day d is already past retention at now: its
// rollups would expire at once, so its samples are refused.
func (s *Store) Expired(d Day, now time.Time) bool {
	return !(d + 1).Start(s.loc).Add(s.retention).After(now)
}

// Apply adds the contributions exactly once and records seqs as applied,
// atomically per month (one Lua script each; a sample that crosses a month
// boundary is two independent, individually exactly-once pieces). The
// returned verdicts are in the order of cs. Applying the same contributions
// again is harmless: they come back as duplicates. With changes set, the
// result also carries the touched entities' new day rollups.
//
// Contiguous pieces of the same namespace and day in one batch (a backlog
// of one-minute windows) are merged into one run before they reach Redis:
// one coverage check and one increment instead of one per window. A run
// that is wholly new is applied whole and wholly a duplicate is dropped
// whole; only a run that partly overlaps counted time is sent again piece
// by piece, so every piece still gets its own verdict.
func (s *Store) Apply(ctx context.Context, cs []Contribution, stream string, seqs []SeqRange, changes bool) (Result, error) {
	runs, members, alone := mergeRuns(cs)
	res, err := s.apply(ctx, runs, stream, seqs, changes)
	if err != nil {
		return Result{}, err
	}
	if len(runs) == len(cs) {
		return res, nil
	}
	out := Result{Verdicts: make([]Verdict, len(cs)), Changes: res.Changes}
	retry := alone
	for r, v := range res.Verdicts {
		if v == Overlap && len(members[r]) > 1 {
			retry = append(retry, members[r]...)
			continue
		}
		for _, i := range members[r] {
			out.Verdicts[i] = v
		}
	}
	if len(retry) == 0 {
		return out, nil
	}
	// In the batch's own order, so that a window sent twice in one batch
	// is judged after the pieces before it, as it would be on its own.
	sort.Ints(retry)
	sub := make([]Contribution, len(retry))
	for j, i := range retry {
		sub[j] = cs[i]
	}
	res2, err := s.apply(ctx, sub, stream, nil, changes)
	if err != nil {
		return Result{}, err
	}
	for j, i := range retry {
		out.Verdicts[i] = res2.Verdicts[j]
	}
	out.Changes = append(out.Changes, res2.Changes...)
	return out, nil
}

// mergeRuns merges each namespace-day's contiguous pieces into runs;
// members[r] lists the indexes of cs merged into runs[r]. A piece that
// overlaps its run (the same window twice in one batch) is left out and
// returned in alone, to be applied after the runs.
func mergeRuns(cs []Contribution) ([]Contribution, [][]int, []int) {
	type key struct {
		day Day
		e   Entity
	}
	groups := map[key][]int{}
	var order []key
	for i := range cs {
		k := key{cs[i].Day, cs[i].Entity}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], i)
	}
	if len(order) == len(cs) {
		members := make([][]int, len(cs))
		for i := range cs {
			members[i] = []int{i}
		}
		return cs, members, nil
	}
	runs := make([]Contribution, 0, len(order))
	members := make([][]int, 0, len(order))
	var alone []int
	for _, k := range order {
		idx := groups[k]
		sort.SliceStable(idx, func(a, b int) bool { return cs[idx[a]].From < cs[idx[b]].From })
		cur := -1
		for _, i := range idx {
			switch {
			case cur >= 0 && cs[i].From == runs[cur].To:
				runs[cur].To = cs[i].To
				runs[cur].Values.Add(&cs[i].Values)
				members[cur] = append(members[cur], i)
			case cur >= 0 && cs[i].From < runs[cur].To:
				alone = append(alone, i)
			default:
				runs = append(runs, cs[i])
				members = append(members, []int{i})
				cur = len(runs) - 1
			}
		}
	}
	return runs, members, alone
}

// maxPiecesPerScript bounds one apply script: Redis runs a script to the
// end before it serves anyone else, so a batch is cut into scripts of at
// most this many pieces (tens of milliseconds each) that queries can slip
// between. Each piece is exactly-once within its own script, so cutting
// changes nothing else.
const maxPiecesPerScript = 2000

// apply sends contributions to Redis as they are: one script per month and
// chunk of maxPiecesPerScript, pipelined with the sequence mark.
func (s *Store) apply(ctx context.Context, cs []Contribution, stream string, seqs []SeqRange, changes bool) (Result, error) {
	type scriptBatch struct {
		month string
		idx   []int
		aggs  map[aggKey]*Values
	}
	var (
		batches []*scriptBatch
		open    = map[string]*scriptBatch{} // the month's batch being filled
	)
	for i := range cs {
		m := cs[i].Day.Month()
		b := open[m]
		if b == nil || len(b.idx) == maxPiecesPerScript {
			b = &scriptBatch{month: m, aggs: map[aggKey]*Values{}}
			open[m] = b
			batches = append(batches, b)
		}
		b.idx = append(b.idx, i)
		e := cs[i].Entity
		for _, sc := range []Scope{ScopeProject, ScopeCluster, ScopeProjectCluster} {
			k := aggKey{day: cs[i].Day, scope: sc, member: e.Member(sc)}
			v := b.aggs[k]
			if v == nil {
				v = new(Values)
				b.aggs[k] = v
			}
			v.Add(&cs[i].Values)
		}
	}

	want := 0
	if changes {
		want = 1
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(batches))
	for bi, b := range batches {
		keys := make([]aggKey, 0, len(b.aggs))
		for k := range b.aggs {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(a, b int) bool { return keys[a].less(keys[b]) })
		args := make([]any, 0, 5+len(keys)*(5+2*Fields)+len(b.idx)*(8+2*Fields))
		args = append(args, monthPrefix(b.month), s.monthExpireAt(cs[b.idx[0]].Day), len(b.idx), len(keys), want)
		for _, k := range keys {
			args = append(args, dd(k.day), string(k.scope), k.member, valueKeyMember(k.member))
			args = appendValues(args, b.aggs[k])
		}
		for _, i := range b.idx {
			c := &cs[i]
			args = append(args, dd(c.Day), s.dayExpireAt(c.Day), c.Entity.Project, c.Entity.Cluster, c.Entity.Namespace, c.From, c.To)
			args = appendValues(args, &c.Values)
		}
		cmds[bi] = applyScript.EvalSha(ctx, pipe, []string{CoverageKey(cs[b.idx[0]].Day)}, args...)
	}
	var mark *redis.Cmd
	if len(seqs) > 0 {
		margs := make([]any, 0, 2*len(seqs))
		for _, r := range seqs {
			margs = append(margs, r.First, r.Last)
		}
		mark = markScript.EvalSha(ctx, pipe, []string{AppliedKey(stream)}, margs...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		if !isNoScript(err) {
			return Result{}, fmt.Errorf("apply %d contributions: %w", len(cs), err)
		}
		if err := s.LoadScripts(ctx); err != nil {
			return Result{}, err
		}
		// Safe to repeat: what the first attempt applied comes back as
		// duplicates.
		return s.apply(ctx, cs, stream, seqs, changes)
	}
	if mark != nil {
		if err := mark.Err(); err != nil {
			return Result{}, fmt.Errorf("mark applied sequences: %w", err)
		}
	}
	res := Result{Verdicts: make([]Verdict, len(cs))}
	for bi, b := range batches {
		m := b.month
		reply, err := cmds[bi].Slice()
		if err != nil {
			return Result{}, fmt.Errorf("apply month %s: %w", m, err)
		}
		vs, _ := reply[0].(string)
		if overflow, _ := reply[1].(int64); overflow > 0 {
			return Result{}, fmt.Errorf("apply month %s: %d increments overflowed int64 and were not applied", m, overflow)
		}
		idx := b.idx
		if len(vs) != len(idx) {
			return Result{}, fmt.Errorf("apply month %s: %d verdicts for %d pieces", m, len(vs), len(idx))
		}
		for j, i := range idx {
			res.Verdicts[i] = Verdict(vs[j])
		}
		if len(reply) > 2 {
			flat, _ := reply[2].([]any)
			firstDay := cs[idx[0]].Day
			first := firstDay - Day(firstDay.DayOfMonth()-1)
			for j := 0; j+3 < len(flat); j += 4 {
				scope, _ := flat[j].(string)
				ddStr, _ := flat[j+1].(string)
				member, _ := flat[j+2].(string)
				val, _ := flat[j+3].(string)
				n, err := strconv.Atoi(ddStr)
				if err != nil {
					return Result{}, fmt.Errorf("apply month %s: bad day %q in changes", m, ddStr)
				}
				res.Changes = append(res.Changes, Change{Scope: Scope(scope), Day: first + Day(n-1), Member: member, Values: DecodeValues([]byte(val))})
			}
		}
	}
	return res, nil
}

// LoadScripts loads the Lua scripts, after a Redis restart lost them.
func (s *Store) LoadScripts(ctx context.Context) error {
	for _, sc := range []*redis.Script{applyScript, markScript, rangeIndexScript} {
		if err := sc.Load(ctx, s.rdb).Err(); err != nil {
			return fmt.Errorf("load lua script: %w", err)
		}
	}
	return nil
}

func isNoScript(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT")
}

// Applied returns the highest stream sequence L such that every sequence
// from first to L is recorded as applied (first-1 when first itself is
// not). Sequences before first (gone from the stream) are not asked about.
// Ranges are merged whenever they touch, so only the range with the largest
// start at or before first can extend the contiguous run.
func (s *Store) Applied(ctx context.Context, stream string, first uint64) (uint64, error) {
	if first == 0 {
		first = 1
	}
	ranges, err := s.rdb.ZRevRangeByScore(ctx, AppliedKey(stream), &redis.ZRangeBy{
		Max: strconv.FormatUint(first, 10), Min: "-inf", Count: 1,
	}).Result()
	if err != nil {
		return 0, fmt.Errorf("read applied sequences of %s: %w", stream, err)
	}
	low := first - 1
	if len(ranges) == 1 {
		if _, last, ok := parseRange(ranges[0]); ok && last > low {
			low = last
		}
	}
	return low, nil
}

func parseRange(r string) (uint64, uint64, bool) {
	a, b, ok := strings.Cut(r, "-")
	if !ok {
		return 0, 0, false
	}
	first, err1 := strconv.ParseUint(a, 10, 64)
	last, err2 := strconv.ParseUint(b, 10, 64)
	return first, last, err1 == nil && err2 == nil
}

func (s *Store) dayExpireAt(d Day) int64 {
	return (d + 1).Start(s.loc).Add(s.retention).Unix()
}

func (s *Store) monthExpireAt(d Day) int64 {
	y, m, _ := d.Date()
	return time.Date(y, m+1, 1, 0, 0, 0, 0, s.loc).Add(s.retention).Unix()
}

func appendValues(args []any, v *Values) []any {
	n := 0
	for _, x := range v {
		if x != 0 {
			n++
		}
	}
	args = append(args, n)
	for f, x := range v {
		if x != 0 {
			args = append(args, f, x)
		}
	}
	return args
}

type aggKey struct {
	day    Day
	scope  Scope
	member string
}

func (a aggKey) less(b aggKey) bool {
	if a.day != b.day {
		return a.day < b.day
	}
	if a.scope != b.scope {
		return a.scope < b.scope
	}
	return a.member < b.member
}
