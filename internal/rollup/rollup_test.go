package rollup_test

import (
	"github.com/redis/go-redis/v9"

	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
	_ "time/tzdata"

	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/testenv"
)

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestSplit(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	shanghai, _ := time.LoadLocation("Asia/Shanghai")
	tests := []struct {
		name       string
		loc        *time.Location
		start, end string
		want       []struct {
			day      string
			from, to int32
		}
	}{
		{"inside one day", time.UTC, "2025-06-01T10:00:00Z", "2025-06-01T10:01:00Z", []struct {
			day      string
			from, to int32
		}{{"20250601", 36000, 36060}}},
		{"across UTC midnight", time.UTC, "2025-06-01T23:30:00Z", "2025-06-02T00:30:00Z", []struct {
			day      string
			from, to int32
		}{{"20250601", 84600, 86400}, {"20250602", 0, 1800}}},
		{"midnight in Shanghai is 16:00 UTC", shanghai, "2025-06-01T15:30:00Z", "2025-06-01T16:30:00Z", []struct {
			day      string
			from, to int32
		}{{"20250601", 84600, 86400}, {"20250602", 0, 1800}}},
		// 2025-03-09 is 23 hours long in New York: 24 h from 23:30 the day
		// before covers three calendar days.
		{"24h across a 23-hour DST day", ny, "2025-03-09T04:30:00Z", "2025-03-10T04:30:00Z", []struct {
			day      string
			from, to int32
		}{{"20250308", 84600, 86400}, {"20250309", 0, 82800}, {"20250310", 0, 1800}}},
		// 2025-11-02 is 25 hours long.
		{"the 25-hour day", ny, "2025-11-02T06:00:00Z", "2025-11-03T06:00:00Z", []struct {
			day      string
			from, to int32
		}{{"20251102", 7200, 90000}, {"20251103", 0, 3600}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := sample.Sample{Cluster: "c", Project: "p", Namespace: "n", Start: mustTime(t, tt.start), End: mustTime(t, tt.end),
				CPU: sample.Resources{Usage: 1, Request: 2, Quota: 4}}
			got := rollup.Split(&s, tt.loc)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d pieces, want %d: %+v", len(got), len(tt.want), got)
			}
			var total int64
			for i, w := range tt.want {
				g := got[i]
				if g.Day.String() != w.day || g.From != w.from || g.To != w.to {
					t.Errorf("piece %d = %s [%d,%d), want %s [%d,%d)", i, g.Day, g.From, g.To, w.day, w.from, w.to)
				}
				secs := int64(w.to - w.from)
				if u := g.Values[rollup.Field(rollup.Cpu, rollup.Usage)]; u != secs*rollup.Scale {
					t.Errorf("piece %d cpu usage = %d, want %d", i, u, secs*rollup.Scale)
				}
				if e := g.Values[rollup.Field(rollup.Cpu, rollup.Effective)]; e != 2*secs*rollup.Scale {
					t.Errorf("piece %d cpu effective = %d, want max(usage, request) = %d", i, e, 2*secs*rollup.Scale)
				}
				total += secs
			}
			if want := int64(s.End.Sub(s.Start) / time.Second); total != want {
				t.Errorf("pieces cover %d s, window is %d s", total, want)
			}
		})
	}
}

func TestHours(t *testing.T) {
	for _, v := range []int64{0, 1, rollup.Scale * 3600, math.MaxInt64, -rollup.Scale * 3600 * 5} {
		want := float64(v) / (rollup.Scale * 3600)
		if got := rollup.Hours(v); math.Abs(got-want) > math.Abs(want)*1e-15 {
			t.Errorf("Hours(%d) = %v, want %v", v, got, want)
		}
	}
}

// newTestStore starts a Redis child of the test's own and returns a
// Store over it (UTC, a retention that keeps any test date) and its client.
func newTestStore(t *testing.T) (*rollup.Store, *redis.Client) {
	t.Helper()
	rdb := testenv.StartRedis(t).Client()
	store, err := rollup.NewStore(rdb, time.UTC, 20*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return store, rdb
}

func contribution(t *testing.T, loc *time.Location, p, c, n, start, end string, cpu float64) []rollup.Contribution {
	t.Helper()
	s := sample.Sample{Cluster: c, Project: p, Namespace: n, Start: mustTime(t, start), End: mustTime(t, end), CPU: sample.Resources{Usage: cpu}}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	var out []rollup.Contribution
	for _, pc := range rollup.Split(&s, loc) {
		out = append(out, rollup.Contribution{Entity: rollup.Entity{Project: p, Cluster: c, Namespace: n}, Piece: pc})
	}
	return out
}

func testApplyExactlyOnce(t *testing.T, rdb redis.UniversalClient) {
	ctx := context.Background()
	store, err := rollup.NewStore(rdb, time.UTC, 20*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.LoadScripts(ctx); err != nil {
		t.Fatal(err)
	}
	var cs []rollup.Contribution
	cs = append(cs, contribution(t, time.UTC, "pay", "east", "api", "2025-06-01T10:00:00Z", "2025-06-01T10:01:00Z", 1)...)
	cs = append(cs, contribution(t, time.UTC, "pay", "east", "api", "2025-06-01T10:02:00Z", "2025-06-01T10:03:00Z", 1)...)
	cs = append(cs, contribution(t, time.UTC, "pay", "west", "api", "2025-06-01T10:00:00Z", "2025-06-01T10:01:00Z", 2)...)
	res, err := store.Apply(ctx, cs, "S", []rollup.SeqRange{{First: 1, Last: 3}}, true)
	if err != nil {
		t.Fatal(err)
	}
	if string(verdicts(res.Verdicts)) != "000" {
		t.Fatalf("verdicts %q, want 000", verdicts(res.Verdicts))
	}
	// Changes: 2 namespaces, 1 project, 2 clusters (project-cluster sums
	// are not reported).
	got := map[string]int64{}
	for _, c := range res.Changes {
		got[string(c.Scope)+" "+c.Member] = c.Values[rollup.Field(rollup.Cpu, rollup.Usage)]
	}
	wantChanges := map[string]int64{"ns pay east api": 120 * rollup.Scale, "ns pay west api": 120 * rollup.Scale, "pr pay": 240 * rollup.Scale, "cl east": 120 * rollup.Scale, "cl west": 120 * rollup.Scale}
	if fmt.Sprint(got) != fmt.Sprint(wantChanges) {
		t.Fatalf("changes %v, want %v", got, wantChanges)
	}
	// Redelivered: all duplicates; the filler window is new; a straddling
	// window overlaps.
	cs2 := append([]rollup.Contribution{}, cs...)
	cs2 = append(cs2, contribution(t, time.UTC, "pay", "east", "api", "2025-06-01T10:01:00Z", "2025-06-01T10:02:00Z", 1)...)
	cs2 = append(cs2, contribution(t, time.UTC, "pay", "east", "api", "2025-06-01T10:02:30Z", "2025-06-01T10:03:30Z", 5)...)
	cs2 = append(cs2, contribution(t, time.UTC, "pay", "east", "api", "2025-06-01T10:00:00Z", "2025-06-01T10:03:00Z", 5)...)
	res, err = store.Apply(ctx, cs2, "S", []rollup.SeqRange{{First: 4, Last: 6}}, false)
	if err != nil {
		t.Fatal(err)
	}
	v := res.Verdicts
	if string(verdicts(v)) != "111021" {
		t.Logf("coverage: %v", rdb.HGetAll(ctx, rollup.CoverageKey(rollup.ShardOf("east", "api"), rollup.DayFromDate(2025, 6, 1))).Val())
		t.Fatalf("verdicts %q, want 111021", verdicts(v))
	}
	d := rollup.DayFromDate(2025, 6, 1)
	cpuUsage := rollup.Field(rollup.Cpu, rollup.Usage)
	for _, tc := range []struct {
		sc     rollup.Scope
		member string
		want   int64
	}{
		{rollup.ScopeNamespace, "pay east api", 180 * rollup.Scale},
		{rollup.ScopeNamespace, "pay west api", 120 * rollup.Scale},
		{rollup.ScopeProject, "pay", 300 * rollup.Scale},
		{rollup.ScopeCluster, "east", 180 * rollup.Scale},
		{rollup.ScopeProjectCluster, "pay west", 120 * rollup.Scale},
	} {
		got, ok, err := store.DayValues(ctx, d, tc.sc, tc.member)
		if err != nil || !ok {
			t.Fatalf("%s %s: ok=%v err=%v", tc.sc, tc.member, ok, err)
		}
		if got[cpuUsage] != tc.want {
			t.Errorf("%s %s cpu usage = %d, want %d", tc.sc, tc.member, got[cpuUsage], tc.want)
		}
	}
	for _, sc := range rollup.Scopes() {
		n, err := rdb.ZCard(ctx, rollup.DayIndexKey(d, sc)).Result()
		if err != nil {
			t.Fatal(err)
		}
		want := map[rollup.Scope]int64{rollup.ScopeNamespace: 2, rollup.ScopeProject: 1, rollup.ScopeCluster: 2, rollup.ScopeProjectCluster: 2}[sc]
		if n != want {
			t.Errorf("day index %s has %d members, want %d", sc, n, want)
		}
	}
	// A month is kept whole: its days' keys and its month keys all expire
	// retention after the month ends.
	monthEnd := time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC).Add(20 * 365 * 24 * time.Hour).Unix()
	dayEnd := monthEnd
	east, west := rollup.ShardOf("east", "api"), rollup.ShardOf("west", "api")
	for key, want := range map[string]int64{
		rollup.ShardValueKey(east, d, rollup.ScopeNamespace, "pay east api"):  dayEnd,
		rollup.ShardValueKey(east, d, rollup.ScopeProject, "pay"):             dayEnd,
		rollup.ShardValueKey(west, d, rollup.ScopeProject, "pay"):             dayEnd,
		rollup.ShardValueKey(west, d, rollup.ScopeProjectCluster, "pay west"): dayEnd,
		rollup.ShardValueKey(east, d, rollup.ScopeCluster, "east"):            dayEnd,
		rollup.CoverageKey(east, d):                                           dayEnd,
		rollup.CoverageKey(west, d):                                           dayEnd,
		rollup.DayIndexKey(d, rollup.ScopeCluster):                            dayEnd,
		rollup.MonthIndexKey("202506", rollup.ScopeNamespace):                 monthEnd,
		rollup.MaskKey("202506", rollup.ScopeProject):                         monthEnd,
		rollup.NameIndexKey("202506"):                                         monthEnd,
	} {
		got, err := rdb.ExpireTime(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if int64(got/time.Second) != want {
			t.Errorf("%s expires at %d, want %d", key, int64(got/time.Second), want)
		}
	}
	low, err := store.Applied(ctx, "S", 1)
	if err != nil || low != 6 {
		t.Fatalf("applied watermark = %d, %v; want 6", low, err)
	}
	if _, err := store.Apply(ctx, nil, "S", []rollup.SeqRange{{First: 9, Last: 9}}, false); err != nil {
		t.Fatal(err)
	}
	if low, _ := store.Applied(ctx, "S", 1); low != 6 {
		t.Fatalf("watermark with a gap = %d, want 6", low)
	}
	if _, err := store.Apply(ctx, nil, "S", []rollup.SeqRange{{First: 7, Last: 8}}, false); err != nil {
		t.Fatal(err)
	}
	if low, _ := store.Applied(ctx, "S", 1); low != 9 {
		t.Fatalf("watermark after filling the gap = %d, want 9", low)
	}
	if low, _ := store.Applied(ctx, "S", 20); low != 19 {
		t.Fatalf("watermark when the stream starts after every mark = %d, want 19", low)
	}
}

func verdicts(v []rollup.Verdict) []byte {
	b := make([]byte, len(v))
	for i, x := range v {
		b[i] = byte(x)
	}
	return b
}

// TestApplyLargeBatch: a batch longer than one script is cut into several;
// verdicts stay in order and the project's sum is exact across the cuts,
// including a run merged from consecutive windows and duplicates within
// the batch.
func testApplyLargeBatch(t *testing.T, rdb redis.UniversalClient) {
	ctx := context.Background()
	store, err := rollup.NewStore(rdb, time.UTC, 20*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var cs []rollup.Contribution
	for n := 0; n < 4500; n++ {
		cs = append(cs, contribution(t, time.UTC, "big", "east", fmt.Sprintf("ns-%d", n), "2025-06-03T10:00:00Z", "2025-06-03T10:01:00Z", 1)...)
	}
	// Three consecutive windows of one namespace (one run) and a repeat.
	for _, w := range [][2]string{{"10:01", "10:02"}, {"10:02", "10:03"}, {"10:03", "10:04"}, {"10:02", "10:03"}} {
		cs = append(cs, contribution(t, time.UTC, "big", "east", "ns-7", "2025-06-03T"+w[0]+":00Z", "2025-06-03T"+w[1]+":00Z", 1)...)
	}
	res, err := store.Apply(ctx, cs, "S", nil, true)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Repeat("0", 4503) + "1"
	if got := string(verdicts(res.Verdicts)); got != want {
		t.Fatalf("verdicts: %d applied of %d, last %q", strings.Count(got, "0"), len(got), got[len(got)-1:])
	}
	d := rollup.DayFromDate(2025, 6, 3)
	v, _, err := store.DayValues(ctx, d, rollup.ScopeProject, "big")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := v[rollup.Field(rollup.Cpu, rollup.Usage)], int64(4503*60*rollup.Scale); got != want {
		t.Fatalf("project sum %d, want %d", got, want)
	}
	again, err := store.Apply(ctx, cs, "S", nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(verdicts(again.Verdicts)); got != strings.Repeat("1", 4504) {
		t.Fatalf("re-applied batch: %d duplicates of %d", strings.Count(got, "1"), len(got))
	}
	if v2, _, _ := store.DayValues(ctx, d, rollup.ScopeProject, "big"); v2 != v {
		t.Fatalf("re-applying changed the project sum")
	}
}

// TestSplitWhereDSTSkipsMidnight: in America/Santiago the clock jumps from
// 2024-09-07 23:59:59 to 2024-09-08 01:00 (04:00 UTC), so September 8th
// begins at 04:00 UTC. A window 02:30-04:30 UTC has 90 minutes on the 7th
// and 30 on the 8th (time.Date normalises the missing midnight to the hour
// before, still the 7th, which booked an hour on the wrong day).
func TestSplitWhereDSTSkipsMidnight(t *testing.T) {
	loc, err := time.LoadLocation("America/Santiago")
	if err != nil {
		t.Fatal(err)
	}
	d := rollup.DayFromDate(2024, time.September, 8)
	if got, want := d.Start(loc), mustTime(t, "2024-09-08T04:00:00Z"); !got.Equal(want) {
		t.Fatalf("start of %s = %s, want %s", d, got.UTC(), want)
	}
	s := sample.Sample{Cluster: "c", Project: "p", Namespace: "n", Start: mustTime(t, "2024-09-08T02:30:00Z"), End: mustTime(t, "2024-09-08T04:30:00Z"), CPU: sample.Resources{Usage: 1}}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	ps := rollup.Split(&s, loc)
	if len(ps) != 2 || ps[0].Day != d-1 || ps[0].From != 81000 || ps[0].To != 86400 || ps[1].Day != d || ps[1].From != 0 || ps[1].To != 1800 {
		t.Fatalf("pieces %+v", ps)
	}
	if got := ps[0].Values[rollup.Field(rollup.Cpu, rollup.Usage)]; got != 5400*rollup.Scale {
		t.Fatalf("September 7th counts %d, want %d", got, 5400*rollup.Scale)
	}
}

// TestExpiredByMonth: a month is kept or dropped whole, so a day is
// refused as expired only once its month ended retention ago: the month's
// keys (sums' month parts, rankings) never outlive days they count.
func TestExpiredByMonth(t *testing.T) {
	store, err := rollup.NewStore(redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}), time.UTC, 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	june1 := rollup.DayFromDate(2025, time.June, 1)
	monthEnd := time.Date(2025, time.July, 1, 0, 0, 0, 0, time.UTC)
	if store.Expired(june1, monthEnd.Add(47*time.Hour)) {
		t.Fatal("June 1st expired while June is retained")
	}
	if !store.Expired(june1, monthEnd.Add(48*time.Hour)) || !store.Expired(june1+29, monthEnd.Add(48*time.Hour)) {
		t.Fatal("June's days not expired once June ended retention ago")
	}
}
