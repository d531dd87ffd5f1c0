package rollup_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/alauda/costmeter/internal/rollup"
)

// groupModel is the test's own account of what the group rollups must
// hold: every counted piece added under its labels' values, written apart
// from the store (plain maps, "__unallocated__" spelled out).
type groupModel struct {
	keys     []string
	platform map[rollup.Day]rollup.Values
	project  map[string]rollup.Values // day/project
	group    map[string]rollup.Values // key/value/day
	pgroup   map[string]rollup.Values // key/project/value/day
	gns      map[string]rollup.Values // key/value/project/cluster/namespace/day
}

func newGroupModel(keys []string) *groupModel {
	return &groupModel{keys: keys, platform: map[rollup.Day]rollup.Values{}, project: map[string]rollup.Values{},
		group: map[string]rollup.Values{}, pgroup: map[string]rollup.Values{}, gns: map[string]rollup.Values{}}
}

func addTo(m map[string]rollup.Values, k string, v *rollup.Values) {
	x := m[k]
	for f := range x {
		x[f] += v[f]
	}
	m[k] = x
}

func (m *groupModel) count(c *rollup.Contribution) {
	p := m.platform[c.Day]
	for f := range p {
		p[f] += c.Values[f]
	}
	m.platform[c.Day] = p
	e := c.Entity
	addTo(m.project, fmt.Sprint(c.Day, "/", e.Project), &c.Values)
	for _, k := range m.keys {
		v, ok := c.Labels[k]
		if !ok {
			v = "__unallocated__"
		}
		addTo(m.group, fmt.Sprint(k, "/", v, "/", c.Day), &c.Values)
		addTo(m.pgroup, fmt.Sprint(k, "/", e.Project, "/", v, "/", c.Day), &c.Values)
		addTo(m.gns, fmt.Sprint(k, "/", v, "/", e.Project, "/", e.Cluster, "/", e.Namespace, "/", c.Day), &c.Values)
	}
}

// groupPieces generates namespace-days of ten-minute windows: namespaces
// that move project and change team mid-day, some without one or both
// keys, on the last two days of June and the first of July.
func groupPieces(r *rand.Rand) []rollup.Contribution {
	days := []rollup.Day{rollup.DayFromDate(2025, 6, 29), rollup.DayFromDate(2025, 6, 30), rollup.DayFromDate(2025, 7, 1)}
	var out []rollup.Contribution
	for c := range 2 {
		for n := range 8 {
			for _, d := range days {
				project := fmt.Sprintf("p%d", r.IntN(3))
				labels := map[string]string{}
				if r.IntN(4) > 0 {
					labels["team"] = fmt.Sprintf("t%d", r.IntN(4))
				}
				if r.IntN(3) > 0 {
					labels["example.com/env"] = []string{"prod", "dev"}[r.IntN(2)]
				}
				labels["other"] = "ignored"
				// A run of adjacent slots and scattered ones.
				slots := map[int]bool{}
				at := r.IntN(100)
				for k := at; k < at+8; k++ {
					slots[k] = true
				}
				for range 12 {
					slots[r.IntN(144)] = true
				}
				keys := make([]int, 0, len(slots))
				for k := range slots {
					keys = append(keys, k)
				}
				sort.Ints(keys)
				for _, k := range keys {
					if r.IntN(10) == 0 { // moves project
						project = fmt.Sprintf("p%d", r.IntN(3))
					}
					if r.IntN(8) == 0 { // relabelled
						labels = copyLabels(labels)
						if r.IntN(3) == 0 {
							delete(labels, "team")
						} else {
							labels["team"] = fmt.Sprintf("t%d", r.IntN(4))
						}
					}
					var v rollup.Values
					for f := range v {
						v[f] = r.Int64N(1_000_000_000)
					}
					out = append(out, rollup.Contribution{
						Entity: rollup.Entity{Project: project, Cluster: fmt.Sprintf("c%d", c), Namespace: fmt.Sprintf("n%d", n)},
						Labels: labels,
						Piece:  rollup.Piece{Day: d, From: int32(k * 600), To: int32(k*600 + 600), Values: v},
					})
				}
			}
		}
	}
	return out
}

func copyLabels(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// testGroups applies random pieces with kept label keys (in random
// batches, each redelivered at random, then overlapping and duplicate
// windows under other labels and projects mixed with new pieces) and
// checks the group rollups against the model: for every key, day and
// field the values' totals equal, as integers, the platform's total
// (the projects' day totals added up); each project's groups add up to
// the project; each group, project-group and group-namespace equals the
// model, by day and over a month (month parts) and in the usage ranking.
func testGroups(t *testing.T, rdb redis.UniversalClient) {
	ctx := context.Background()
	keys := []string{"team", "example.com/env"}
	store, err := rollup.NewStore(rdb, time.UTC, 20*365*24*time.Hour, rollup.WithGroupKeys(keys))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.LoadScripts(ctx); err != nil {
		t.Fatal(err)
	}
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(uint64(seed), 21))
	all := groupPieces(r)
	r.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	held := all[:len(all)/5]
	first := all[len(all)/5:]
	model := newGroupModel(keys)
	counted := map[string]bool{} // cluster/namespace/day/slot
	slotKey := func(c *rollup.Contribution, from int32) string {
		return fmt.Sprint(c.Entity.Cluster, "/", c.Entity.Namespace, "/", c.Day, "/", from)
	}
	seq := uint64(0)
	groupChanges := 0
	apply := func(cs []rollup.Contribution) string {
		seq++
		res, err := store.Apply(ctx, cs, "S", []rollup.SeqRange{{First: seq, Last: seq}}, r.IntN(2) == 0)
		if err != nil {
			t.Fatal(err)
		}
		// The group sums a batch touched come back as changes (the
		// notifier's team budgets), with their new day totals.
		for _, c := range res.Changes {
			if c.Scope != rollup.ScopeGroup {
				continue
			}
			groupChanges++
			v, ok, err := store.DayValues(ctx, c.Day, c.Scope, c.Member)
			if err != nil || !ok || v != c.Values {
				t.Fatalf("change of group %q on %s: %v, the store holds %v (ok %v, %v)", c.Member, c.Day, c.Values, v, ok, err)
			}
		}
		return string(verdicts(res.Verdicts))
	}
	defer func() {
		if groupChanges == 0 && !t.Failed() {
			t.Error("no batch reported a change of a group: the events of team budgets would never come")
		}
	}()
	var batches [][]rollup.Contribution
	for len(first) > 0 {
		n := min(len(first), 1+r.IntN(120))
		b := first[:n]
		first = first[n:]
		if got := apply(b); got != strings.Repeat("0", n) {
			t.Fatalf("a new batch of %d: verdicts %s", n, got)
		}
		for i := range b {
			model.count(&b[i])
			counted[slotKey(&b[i], b[i].From)] = true
		}
		batches = append(batches, b)
		if r.IntN(3) == 0 { // redelivered
			old := batches[r.IntN(len(batches))]
			if got := apply(old); got != strings.Repeat("1", len(old)) {
				t.Fatalf("a redelivered batch of %d: verdicts %s", len(old), got)
			}
		}
	}
	// Mixed: the held-back pieces (new), and windows half a slot late or
	// sent again, under other labels and another project, which must count
	// nothing.
	var mixed []rollup.Contribution
	want := ""
	for i := range held {
		c := held[i]
		mixed = append(mixed, c)
		want += "0"
	}
	var bad []rollup.Contribution
	for range 200 {
		b := batches[r.IntN(len(batches))]
		c := b[r.IntN(len(b))]
		c.Labels = map[string]string{"team": "intruder", "example.com/env": "intruder"}
		c.Entity.Project = "intruder"
		c.Values[0]++
		if r.IntN(2) == 0 && c.From < 143*600 {
			c.From, c.To = c.From+300, c.To+300
		}
		bad = append(bad, c)
	}
	// The bad ones after the held ones, so the held pieces' slots are
	// counted when they are judged.
	for i := range held {
		counted[slotKey(&held[i], held[i].From)] = true
	}
	for i := range bad {
		c := &bad[i]
		switch {
		case c.From%600 == 0:
			want += "1"
		case counted[slotKey(c, c.From+300)]:
			want += "1" // inside two adjacent counted slots
		default:
			want += "2"
		}
	}
	mixed = append(mixed, bad...)
	// Applied in chunks in order (each chunk's verdicts depend only on what
	// was counted before it, and a chunk's new pieces come before its bad
	// ones).
	var got string
	for len(mixed) > 0 {
		n := min(len(mixed), 1+r.IntN(150))
		got += apply(mixed[:n])
		mixed = mixed[n:]
	}
	if got != want {
		t.Fatalf("mixed verdicts\n got %s\nwant %s", got, want)
	}
	for i := range held {
		model.count(&held[i])
	}
	checkGroups(t, ctx, store, model)
}

func checkGroups(t *testing.T, ctx context.Context, store *rollup.Store, model *groupModel) {
	t.Helper()
	var days []rollup.Day
	for d := range model.platform {
		days = append(days, d)
	}
	sort.Slice(days, func(i, j int) bool { return days[i] < days[j] })
	page := func(sel rollup.Selection, b rollup.Bucket) []rollup.Row {
		t.Helper()
		p, err := store.Page(ctx, sel, []rollup.Bucket{b}, 0, 100000)
		if err != nil {
			t.Fatal(err)
		}
		if p.Total != len(p.Rows) {
			t.Fatalf("%+v: %d rows of %d", sel, len(p.Rows), p.Total)
		}
		return p.Rows
	}
	sum := func(rows []rollup.Row) rollup.Values {
		var v rollup.Values
		for _, r := range rows {
			v.Add(&r.Total)
		}
		return v
	}
	projects := map[string]bool{}
	for _, d := range days {
		b := rollup.Bucket{First: d, Last: d}
		prs := page(rollup.Selection{Scope: rollup.ScopeProject}, b)
		platform := sum(prs)
		if platform != model.platform[d] {
			t.Fatalf("%s: the projects add up to %v, the model says %v", d, platform, model.platform[d])
		}
		for _, row := range prs {
			projects[row.Entity.Project] = true
		}
		for _, k := range model.keys {
			grs := page(rollup.Selection{Scope: rollup.ScopeGroup, Prefix: rollup.GroupPrefix(k, "")}, b)
			if s := sum(grs); s != platform {
				t.Errorf("%s key %s: the groups add up to %v, the platform is %v", d, k, s, platform)
			}
			n := 0
			for mk := range model.group {
				if strings.HasPrefix(mk, k+"/") && strings.HasSuffix(mk, "/"+d.String()) {
					n++
				}
			}
			if len(grs) != n {
				t.Errorf("%s key %s: %d groups, the model has %d", d, k, len(grs), n)
			}
			for _, row := range grs {
				if row.Entity.GroupKey != k {
					t.Fatalf("%s: a row of key %q under key %q", d, row.Entity.GroupKey, k)
				}
				if w := model.group[fmt.Sprint(k, "/", row.Entity.Group, "/", d)]; row.Total != w {
					t.Errorf("%s %s=%s: %v, the model says %v", d, k, row.Entity.Group, row.Total, w)
				}
			}
			for _, pr := range prs {
				p := pr.Entity.Project
				gps := page(rollup.Selection{Scope: rollup.ScopeProjectGroup, Prefix: rollup.GroupPrefix(k, p)}, b)
				if s := sum(gps); s != pr.Total {
					t.Errorf("%s key %s project %s: the groups add up to %v, the project is %v", d, k, p, s, pr.Total)
				}
				for _, row := range gps {
					if w := model.pgroup[fmt.Sprint(k, "/", p, "/", row.Entity.Group, "/", d)]; row.Total != w || row.Entity.Project != p {
						t.Errorf("%s %s=%s in %s (row of %s): %v, the model says %v", d, k, row.Entity.Group, p, row.Entity.Project, row.Total, w)
					}
				}
			}
			gns := page(rollup.Selection{Scope: rollup.ScopeGroupNamespace, Prefix: rollup.GroupPrefix(k, "")}, b)
			n = 0
			for mk := range model.gns {
				if strings.HasPrefix(mk, k+"/") && strings.HasSuffix(mk, "/"+d.String()) {
					n++
				}
			}
			if len(gns) != n {
				t.Errorf("%s key %s: %d group-namespaces, the model has %d", d, k, len(gns), n)
			}
			if s := sum(gns); s != platform {
				t.Errorf("%s key %s: the group-namespaces add up to %v, the platform is %v", d, k, s, platform)
			}
			for _, row := range gns {
				e := row.Entity
				if w := model.gns[fmt.Sprint(k, "/", e.Group, "/", e.Project, "/", e.Cluster, "/", e.Namespace, "/", d)]; row.Total != w {
					t.Errorf("%s %s=%s %s/%s/%s: %v, the model says %v", d, k, e.Group, e.Project, e.Cluster, e.Namespace, row.Total, w)
				}
			}
		}
	}
	// June from its month parts, and the June ranking of Effective CPU.
	june := rollup.Bucket{First: rollup.DayFromDate(2025, 6, 1), Last: rollup.DayFromDate(2025, 6, 30)}
	monthModel := map[string]rollup.Values{} // key/value
	for mk, v := range model.group {
		parts := strings.Split(mk, "/")
		d := parts[len(parts)-1]
		if !strings.HasPrefix(d, "202506") {
			continue
		}
		addTo(monthModel, strings.Join(parts[:len(parts)-1], "/"), &v)
	}
	type ranked struct {
		member string
		total  int64
	}
	var want []ranked
	for _, k := range model.keys {
		rows := page(rollup.Selection{Scope: rollup.ScopeGroup, Prefix: rollup.GroupPrefix(k, ""), Totals: true}, june)
		for _, row := range rows {
			if w := monthModel[k+"/"+row.Entity.Group]; row.Total != w {
				t.Errorf("June %s=%s: %v, the model says %v", k, row.Entity.Group, row.Total, w)
			}
		}
	}
	field := rollup.Field(rollup.Cpu, rollup.Effective)
	for mk, v := range monthModel {
		k, val, _ := strings.Cut(mk, "/")
		if strings.Contains(val, "/") { // a key with a prefix
			i := strings.LastIndex(mk, "/")
			k, val = mk[:i], mk[i+1:]
		}
		want = append(want, ranked{rollup.Entity{GroupKey: k, Group: val}.Member(rollup.ScopeGroup), v[field]})
	}
	sort.Slice(want, func(i, j int) bool {
		if want[i].total != want[j].total {
			return want[i].total > want[j].total
		}
		return want[i].member < want[j].member
	})
	top, err := store.TopByUsage(ctx, rollup.ScopeGroup, june.First, june.Last, field, len(want))
	if err != nil {
		t.Fatal(err)
	}
	var got []ranked
	for _, x := range top {
		got = append(got, ranked{x.Member, x.Total})
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("June ranking of groups:\n got %v\nwant %v", got, want)
	}
	// One key's ranking, among the members of both keys.
	for _, k := range model.keys {
		prefix := rollup.GroupPrefix(k, "")
		var wantK []ranked
		for _, w := range want {
			if strings.HasPrefix(w.member, prefix) {
				wantK = append(wantK, w)
			}
		}
		n := max(1, len(wantK)-1)
		top, err := store.TopByUsagePrefix(ctx, rollup.ScopeGroup, prefix, june.First, june.Last, field, n)
		if err != nil {
			t.Fatal(err)
		}
		var got []ranked
		for _, x := range top {
			got = append(got, ranked{x.Member, x.Total})
		}
		if fmt.Sprint(got) != fmt.Sprint(wantK[:n]) {
			t.Errorf("June ranking of %s:\n got %v\nwant %v", k, got, wantK[:n])
		}
	}
	if len(projects) < 2 {
		t.Fatalf("the test proves little: %d projects", len(projects))
	}
}

// testCapacity applies capacity pieces of two clusters beside a
// namespace's: a capacity window is counted once (Duplicate again, Overlap
// when it straddles a counted one), apart from the namespaces' coverage
// (a namespace window at the same time is new) and from the cluster's
// namespace coverage; its day values are listed per cluster, and
// CapacityCoverage says which seconds of which days are known.
func testCapacity(t *testing.T, rdb redis.UniversalClient) {
	ctx := context.Background()
	store, err := rollup.NewStore(rdb, time.UTC, 20*365*24*time.Hour, rollup.WithGroupKeys([]string{"team"}))
	if err != nil {
		t.Fatal(err)
	}
	d := rollup.DayFromDate(2025, 6, 30)
	cap64 := func(cluster string, from, to int32) rollup.Contribution {
		var v rollup.Values
		v[rollup.Field(rollup.Cpu, rollup.Effective)] = 64 * int64(to-from) * rollup.Scale
		v[rollup.Field(rollup.Memory, rollup.Effective)] = 256 * int64(to-from) * rollup.Scale
		return rollup.Contribution{Scope: rollup.ScopeCapacity, Entity: rollup.Entity{Cluster: cluster}, Piece: rollup.Piece{Day: d, From: from, To: to, Values: v}}
	}
	ns := func(from, to int32) rollup.Contribution {
		var v rollup.Values
		v[rollup.Field(rollup.Cpu, rollup.Effective)] = int64(to-from) * rollup.Scale
		return rollup.Contribution{Entity: rollup.Entity{Project: "p", Cluster: "east", Namespace: "n"}, Labels: map[string]string{"team": "a"}, Piece: rollup.Piece{Day: d, From: from, To: to, Values: v}}
	}
	apply := func(cs ...rollup.Contribution) string {
		res, err := store.Apply(ctx, cs, "S", nil, false)
		if err != nil {
			t.Fatal(err)
		}
		return string(verdicts(res.Verdicts))
	}
	if got := apply(cap64("east", 0, 3600), cap64("east", 3600, 7200), cap64("west", 0, 60), ns(0, 3600)); got != "0000" {
		t.Fatalf("first: verdicts %s, want 0000", got)
	}
	// Again (a run of two merged), a straddling window, a window inside
	// counted time, a new one; and the namespace at the same time again.
	if got := apply(cap64("east", 0, 3600), cap64("east", 3600, 7200), cap64("east", 7000, 7400), cap64("east", 100, 200), cap64("east", 7200, 7260), ns(0, 3600), ns(3600, 3660)); got != "1121010" {
		t.Fatalf("second: verdicts %s, want 1121010", got)
	}
	rows, err := store.Page(ctx, rollup.Selection{Scope: rollup.ScopeCapacity}, []rollup.Bucket{{First: d, Last: d}}, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, r := range rows.Rows {
		got[r.Entity.Cluster] = r.Total[rollup.Field(rollup.Cpu, rollup.Effective)]
		if r.Total[rollup.Field(rollup.Cpu, rollup.Usage)] != 0 || r.Total[rollup.Field(rollup.Storage, rollup.Effective)] != 0 {
			t.Errorf("%s: %v, only Effective of cpu and memory were sent", r.Entity.Cluster, r.Total)
		}
	}
	if want := map[string]int64{"east": 64 * 7260 * rollup.Scale, "west": 64 * 60 * rollup.Scale}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("capacity of the day: %v, want %v", got, want)
	}
	if v, ok, err := store.DayValues(ctx, d, rollup.ScopeCapacity, "east"); err != nil || !ok || v[rollup.Field(rollup.Memory, rollup.Effective)] != 256*7260*rollup.Scale {
		t.Fatalf("DayValues east: %v %v %v", v, ok, err)
	}
	// The namespace's coverage and the cluster's are the namespace's.
	if v, _, err := store.DayValues(ctx, d, rollup.ScopeNamespace, "p east n"); err != nil || v[rollup.Field(rollup.Cpu, rollup.Effective)] != 3660*rollup.Scale {
		t.Fatalf("namespace: %v %v", v, err)
	}
	cc, err := store.ClusterCoverage(ctx, d-1, d, "")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(cc) != fmt.Sprintf("[{east %s [{0 3660}]}]", d) {
		t.Fatalf("cluster coverage %v: capacity must not count as namespaces' time", cc)
	}
	// Capacity coverage of every cluster, then of one.
	kc, err := store.CapacityCoverage(ctx, d-1, d+1, "")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(kc) != fmt.Sprintf("[{east %s [{0 7260}]} {west %s [{0 60}]}]", d, d) {
		t.Fatalf("capacity coverage %v", kc)
	}
	kc, err = store.CapacityCoverage(ctx, d-1, d+1, "west")
	if err != nil {
		t.Fatal(err)
	}
	if len(kc) != 1 || kc[0].Covered() != 60 {
		t.Fatalf("capacity coverage of west %v", kc)
	}
	if kc, err = store.CapacityCoverage(ctx, d+1, d+1, "east"); err != nil || len(kc) != 0 {
		t.Fatalf("a day without capacity samples: %v %v", kc, err)
	}
	// The group-namespace of the capacity's cluster is untouched.
	p, err := store.Page(ctx, rollup.Selection{Scope: rollup.ScopeGroupNamespace, Prefix: rollup.GroupPrefix("team", "")}, []rollup.Bucket{{First: d, Last: d}}, 0, 10)
	if err != nil || p.Total != 1 || p.Rows[0].Total[rollup.Field(rollup.Cpu, rollup.Effective)] != 3660*rollup.Scale {
		t.Fatalf("group-namespaces: %+v %v", p, err)
	}
}
