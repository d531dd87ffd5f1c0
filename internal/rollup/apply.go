package rollup

import (
	"context"
	"fmt"
	"sort"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// applyRuns is Apply without the sequence marks: merge the batch's runs,
// apply them, and apply again piece by piece what a run cannot judge
// whole.
func (s *Store) applyRuns(ctx context.Context, cs []Contribution, changes bool) (Result, error) {
	runs, alone := mergeRuns(cs, func(c *Contribution) string { return s.groupSig(s.groupValues(c)) })
	if runs == nil {
		return s.apply(ctx, cs, changes)
	}
	merged := make([]Contribution, len(runs))
	for r := range runs {
		merged[r] = runs[r].Contribution
	}
	res, err := s.apply(ctx, merged, changes)
	if err != nil {
		return Result{}, err
	}
	out := Result{Verdicts: make([]Verdict, len(cs)), Changes: res.Changes}
	retry := alone
	for r := range runs {
		v := res.Verdicts[r]
		if v == Overlap && len(runs[r].pieces) > 1 {
			retry = append(retry, runs[r].pieces...)
			continue
		}
		for _, i := range runs[r].pieces {
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
	res2, err := s.apply(ctx, sub, changes)
	if err != nil {
		return Result{}, err
	}
	for j, i := range retry {
		out.Verdicts[i] = res2.Verdicts[j]
	}
	out.Changes = append(out.Changes, res2.Changes...)
	return out, nil
}

// run is contiguous pieces of one namespace-day of a batch merged into
// one contribution; pieces are their indexes in the batch.
type run struct {
	Contribution
	pieces []int
}

// mergeRuns merges each namespace-day's contiguous pieces into runs
// (pieces of a capacity apart, and pieces under other groups, sig, apart)
// (runs come in another order than cs even when nothing merges: the
// verdicts must be mapped back through each run's pieces). A piece that
// overlaps its run (the same window twice in one batch) is left out and
// returned in alone, to be applied after the runs. When no namespace-day
// has two pieces, runs is nil: cs is applied as it is.
func mergeRuns(cs []Contribution, sig func(*Contribution) string) (runs []run, alone []int) {
	type key struct {
		day   Day
		e     Entity
		cap   bool
		group string
	}
	groups := map[key][]int{}
	var order []key
	for i := range cs {
		k := key{cs[i].Day, cs[i].Entity, cs[i].capacity(), sig(&cs[i])}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], i)
	}
	if len(order) == len(cs) {
		return nil, nil
	}
	runs = make([]run, 0, len(order))
	for _, k := range order {
		idx := groups[k]
		sort.SliceStable(idx, func(a, b int) bool { return cs[idx[a]].From < cs[idx[b]].From })
		var cur *run
		for _, i := range idx {
			switch {
			case cur != nil && cs[i].From == cur.To:
				cur.To = cs[i].To
				cur.Values.Add(&cs[i].Values)
				cur.pieces = append(cur.pieces, i)
			case cur != nil && cs[i].From < cur.To:
				alone = append(alone, i)
			default:
				runs = append(runs, run{Contribution: cs[i], pieces: []int{i}})
				cur = &runs[len(runs)-1]
			}
		}
	}
	return runs, alone
}

// maxPiecesPerScript bounds one apply script: Redis runs a script to the
// end before it serves anyone else, so a batch is cut into scripts of at
// most this many pieces (a few milliseconds each) that queries and other
// writers slip between. Each piece is exactly-once within its own script,
// so cutting changes nothing else. 32 pieces run in about 1.4 ms (p50;
// p99 5 ms) on the bench's contended 2 cores, against 4.6 ms (p99 13 ms)
// for 128, at a cost within the runs' noise (3-5% of ingest).
const maxPiecesPerScript = 32

// shardBatch is one apply script's share of a batch: pieces of one month
// in one shard.
type shardBatch struct {
	shard int
	month string
	idx   []int // the pieces, indexes in the contributions
	aggs  map[aggKey]*Values
	reply applyReply // what the script said, once it ran
}

// apply sends contributions to Redis as they are: one apply script per
// shard, month and chunk of maxPiecesPerScript, all pipelined; then the
// index writes of what they found new or duplicate, and, when asked, the
// touched sums read back from every shard.
func (s *Store) apply(ctx context.Context, cs []Contribution, changes bool) (Result, error) {
	if len(cs) == 0 {
		return Result{}, nil
	}
	groups := make([][]string, len(cs))
	for i := range cs {
		groups[i] = s.groupValues(&cs[i])
	}
	batches := s.cutBatches(cs, groups)
	if err := s.runApply(ctx, cs, groups, batches, changes); err != nil {
		return Result{}, err
	}
	res := Result{Verdicts: make([]Verdict, len(cs))}
	var ix indexSet
	for _, b := range batches {
		if b.reply.overflows > 0 {
			return Result{}, fmt.Errorf("apply month %s: %d increments overflowed int64 and were not applied", b.month, b.reply.overflows)
		}
		for j, i := range b.idx {
			res.Verdicts[i] = b.reply.verdicts[j]
			if b.reply.index[j] {
				g := groups[i]
				if b.reply.noGroups[j] {
					g = nil
				}
				ix.addPiece(&cs[i], s.groupKeys, g)
			}
		}
		res.Changes = append(res.Changes, b.reply.changes...)
	}
	if err := s.index(ctx, ix.entries); err != nil {
		return Result{}, err
	}
	if changes {
		sums, err := s.sums(ctx, batches)
		if err != nil {
			return Result{}, err
		}
		// Sums first, as before: events of a batch list projects and
		// clusters before namespaces.
		res.Changes = append(sums, res.Changes...)
	}
	return res, nil
}

// cutBatches cuts cs into apply scripts: by shard and month, in sumOrder,
// at most maxPiecesPerScript pieces each, with each script's
// pre-aggregated sums: project, cluster, project-cluster, and per kept
// key (groups[i] are piece i's values) group and project-group.
func (s *Store) cutBatches(cs []Contribution, groups [][]string) []*shardBatch {
	var (
		batches []*shardBatch
		open    = map[string]*shardBatch{} // the shard-month's batch being filled
	)
	for _, i := range sumOrder(cs) {
		e := cs[i].Entity
		sh := shardOf(e.Cluster, e.Namespace)
		m := cs[i].Day.Month()
		bk := strconv.Itoa(sh) + m
		b := open[bk]
		if b == nil || len(b.idx) == maxPiecesPerScript {
			b = &shardBatch{shard: sh, month: m, aggs: map[aggKey]*Values{}}
			open[bk] = b
			batches = append(batches, b)
		}
		b.idx = append(b.idx, i)
		if cs[i].capacity() {
			continue
		}
		add := func(sc Scope, member string) {
			k := aggKey{day: cs[i].Day, scope: sc, member: member}
			v := b.aggs[k]
			if v == nil {
				v = new(Values)
				b.aggs[k] = v
			}
			v.Add(&cs[i].Values)
		}
		for _, sc := range []Scope{ScopeProject, ScopeCluster, ScopeProjectCluster} {
			add(sc, e.Member(sc))
		}
		for j, v := range groups[i] {
			g := Entity{GroupKey: s.groupKeys[j], Group: v, Project: e.Project}
			add(ScopeGroup, g.Member(ScopeGroup))
			add(ScopeProjectGroup, g.Member(ScopeProjectGroup))
		}
	}
	return batches
}

// applyReply is applyScript's reply, decoded (see applyScript for the
// wire form).
type applyReply struct {
	verdicts  []Verdict // one per piece of the script, in its order
	overflows int64     // increments that overflowed int64 (not applied)
	// index tells, per piece, whether its entities need their index
	// writes: the namespace's first piece on that day (or under that
	// project or groups), or a duplicate; noGroups that a duplicate's
	// groups do not (it came under groups it did not count in).
	index, noGroups []bool
	// changes are the new day rollups of the namespaces the script
	// touched, when asked for.
	changes []Change
}

// decodeApplyReply decodes the reply of b's apply script.
func decodeApplyReply(raw []any, b *shardBatch, month Day) (applyReply, error) {
	if len(raw) != 4 {
		return applyReply{}, fmt.Errorf("apply month %s shard %d: reply of %d parts", b.month, b.shard, len(raw))
	}
	vs, _ := raw[0].(string)
	overflows, _ := raw[1].(int64)
	flat, _ := raw[2].([]any)
	ix, _ := raw[3].(string)
	if len(vs) != len(b.idx) || len(ix) != len(b.idx) {
		return applyReply{}, fmt.Errorf("apply month %s: %d verdicts for %d pieces", b.month, len(vs), len(b.idx))
	}
	rep := applyReply{verdicts: make([]Verdict, len(vs)), overflows: overflows, index: make([]bool, len(ix)), noGroups: make([]bool, len(ix))}
	for j := range vs {
		rep.verdicts[j] = Verdict(vs[j])
		rep.index[j] = ix[j] != '0'
		rep.noGroups[j] = ix[j] == '2'
	}
	first := MonthFirst(month)
	for j := 0; j+2 < len(flat); j += 3 {
		ddStr, _ := flat[j].(string)
		member, _ := flat[j+1].(string)
		val, _ := flat[j+2].(string)
		n, err := strconv.Atoi(ddStr)
		if err != nil {
			return applyReply{}, fmt.Errorf("apply month %s: bad day %q in changes", b.month, ddStr)
		}
		rep.changes = append(rep.changes, Change{Scope: ScopeNamespace, Day: first + Day(n-1), Member: member, Values: DecodeValues([]byte(val))})
	}
	return rep, nil
}

// sumOrder is the order in which apply cuts cs into scripts: by day,
// project and cluster, so that a script's pieces share few sums (one
// script of 200 pieces of random namespaces touches about as many
// project, cluster and project-cluster sums as pieces; sorted, a few
// dozen), and each sum is incremented once per script. Pieces of one
// namespace-day keep the batch's order, which their verdicts depend on:
// they sort together, under the project of the first of them (a
// namespace-day sent under two projects is judged in batch order), and
// the sort is stable.
func sumOrder(cs []Contribution) []int {
	type nsDay struct {
		day                Day
		cluster, namespace string
	}
	first := make(map[nsDay]string, len(cs))
	project := make([]string, len(cs)) // the project piece i sorts under
	order := make([]int, len(cs))
	for i := range cs {
		order[i] = i
		k := nsDay{cs[i].Day, cs[i].Entity.Cluster, cs[i].Entity.Namespace}
		p, ok := first[k]
		if !ok {
			p = cs[i].Entity.Project
			first[k] = p
		}
		project[i] = p
	}
	sort.SliceStable(order, func(a, b int) bool {
		i, j := order[a], order[b]
		x, y := &cs[i], &cs[j]
		if x.Day != y.Day {
			return x.Day < y.Day
		}
		if project[i] != project[j] {
			return project[i] < project[j]
		}
		if x.Entity.Cluster != y.Entity.Cluster {
			return x.Entity.Cluster < y.Entity.Cluster
		}
		return x.Entity.Namespace < y.Entity.Namespace
	})
	return order
}

// scriptsPerRoundTrip bounds how many apply scripts go in one pipeline:
// a round trip of at most a few thousand pieces, so that a burst's batch
// is never one buffer of tens of megabytes that Redis reads while it runs
// the scripts before it (and the client's write times out): 2,048 pieces.
const scriptsPerRoundTrip = 64

// runApply runs the apply scripts of batches, pipelined
// scriptsPerRoundTrip at a time, and sets each batch's reply. Two round
// trips in flight at once (the next prepared and sent while Redis runs
// one) were tried: BenchmarkApplySteady/batch=10000 showed no
// difference, and queries under load waited behind both.
func (s *Store) runApply(ctx context.Context, cs []Contribution, groups [][]string, batches []*shardBatch, changes bool) error {
	for len(batches) > 0 {
		n := min(len(batches), scriptsPerRoundTrip)
		if err := s.runApplyOnce(ctx, cs, groups, batches[:n], changes); err != nil {
			return err
		}
		batches = batches[n:]
	}
	return nil
}

// applyArgs are the arguments of b's apply script (see applyScript).
func (s *Store) applyArgs(cs []Contribution, groups [][]string, b *shardBatch, want int) []any {
	keys := make([]aggKey, 0, len(b.aggs))
	for k := range b.aggs {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(a, b int) bool { return keys[a].less(keys[b]) })
	args := make([]any, 0, 4+len(keys)*(4+2*Fields)+len(b.idx)*(11+2*len(s.groupKeys)+2*Fields))
	args = append(args, shardMonth(b.shard, b.month), len(b.idx), len(keys), want, s.monthExpireAt(cs[b.idx[0]].Day))
	for _, k := range keys {
		args = append(args, dd(k.day), string(k.scope), valueKeyMember(k.member))
		args = appendValues(args, b.aggs[k])
	}
	for _, i := range b.idx {
		c := &cs[i]
		if c.capacity() {
			args = append(args, dd(c.Day), s.dayExpireAt(c.Day), "", c.Entity.Cluster, "", c.From, c.To, capacityFlag, "", 0)
			args = appendValues(args, &c.Values)
			continue
		}
		g := groups[i]
		args = append(args, dd(c.Day), s.dayExpireAt(c.Day), c.Entity.Project, c.Entity.Cluster, c.Entity.Namespace, c.From, c.To, looseFlag(&c.Values), c.Entity.Project+s.groupSig(g), len(g))
		for j, v := range g {
			args = append(args, encodeGroupKey(s.groupKeys[j]), v)
		}
		args = appendValues(args, &c.Values)
	}
	return args
}

// runApplyOnce runs the apply scripts of batches in one pipeline.
func (s *Store) runApplyOnce(ctx context.Context, cs []Contribution, groups [][]string, batches []*shardBatch, changes bool) error {
	want := 0
	if changes {
		want = 1
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(batches))
	for bi, b := range batches {
		cmds[bi] = applyScript.EvalSha(ctx, pipe, []string{coverageKey(b.shard, cs[b.idx[0]].Day)}, s.applyArgs(cs, groups, b, want)...)
	}
	_, _ = pipe.Exec(ctx)   // each command's own error is read below
	var again []*shardBatch // the scripts Redis did not know (it restarted)
	for bi, b := range batches {
		raw, err := cmds[bi].Slice()
		if isNoScript(err) {
			again = append(again, b)
			continue
		}
		if err != nil {
			return fmt.Errorf("apply month %s shard %d: %w", b.month, b.shard, err)
		}
		if b.reply, err = decodeApplyReply(raw, b, cs[b.idx[0]].Day); err != nil {
			return err
		}
	}
	if len(again) == 0 {
		return nil
	}
	if err := s.LoadScripts(ctx); err != nil {
		return err
	}
	// Only those run again: the others ran (another client may have loaded
	// the script meanwhile), and running them again would turn their
	// verdicts into duplicates. Running any again would count nothing twice.
	return s.runApplyOnce(ctx, cs, groups, again, changes)
}

// sums reads back the project and cluster day sums the batches touched,
// adding every shard's part: the new totals events report. Read after the
// commit, they include it (and maybe later commits: totals only grow).
func (s *Store) sums(ctx context.Context, batches []*shardBatch) ([]Change, error) {
	var keys []aggKey
	seen := map[aggKey]bool{}
	for _, b := range batches {
		for k := range b.aggs {
			if (k.scope == ScopeProject || k.scope == ScopeCluster || k.scope == ScopeGroup) && !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}
	sort.Slice(keys, func(a, b int) bool { return keys[a].less(keys[b]) })
	reads := make([]valueRead, len(keys))
	for i, k := range keys {
		reads[i].want = valueWant{day: k.day, scope: k.scope, member: k.member}
	}
	if err := s.Reader.readValues(ctx, valueReadsOf(reads, func(r *valueRead) *valueRead { return r })); err != nil {
		return nil, fmt.Errorf("read back touched sums: %w", err)
	}
	out := make([]Change, len(reads))
	for i := range reads {
		w := &reads[i].want
		out[i] = Change{Scope: w.scope, Day: w.day, Member: w.member, Values: reads[i].v}
	}
	return out, nil
}

// fieldTokens are BITFIELD's offsets of the fields ("#n": the n-th i64).
var fieldTokens = func() (t [Fields]string) {
	for f := range t {
		t[f] = "#" + strconv.Itoa(f)
	}
	return t
}()

// appendValues appends v in applyScript's form: the number of non-zero
// fields, each as (token, amount), then each ranked field's increment
// (minus its amount, "" when zero; rankFields).
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
			args = append(args, fieldTokens[f], x)
		}
	}
	for _, f := range rankFields() {
		x := v[f]
		if x == 0 {
			args = append(args, "")
			continue
		}
		args = append(args, -x)
	}
	return args
}

// capacityFlag is applyScript's flag of a capacity piece (in place of
// the loose flag).
const capacityFlag = "c"

// looseFlag is applyScript's loose flag of a piece: "1" when an item's
// Effective is below its Usage or Request, which breaks the bound the
// rankings give those methods (rank.go).
func looseFlag(v *Values) string {
	for it := Item(0); it < numItems; it++ {
		e := v[Field(it, Effective)]
		if e < v[Field(it, Usage)] || e < v[Field(it, Request)] {
			return "1"
		}
	}
	return "0"
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
