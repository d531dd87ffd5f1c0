package rollup_test

import (
	"github.com/redis/go-redis/v9"

	"context"
	"strings"
	"testing"
	"time"

	"github.com/alauda/costmeter/internal/rollup"
)

func day(t *testing.T, s string) rollup.Day {
	t.Helper()
	v, err := time.Parse(time.DateOnly, s)
	if err != nil {
		t.Fatal(err)
	}
	return rollup.DayFromDate(v.Date())
}

func TestBuckets(t *testing.T) {
	tests := []struct {
		name       string
		start, end string
		step       rollup.Step
		want       string
	}{
		{"days", "2024-02-28", "2024-03-01", rollup.StepDay, "20240228-20240228 20240229-20240229 20240301-20240301"},
		{"week from a Sunday", "2025-06-01", "2025-06-09", rollup.StepWeek, "20250601-20250601 20250602-20250608 20250609-20250609"},
		{"week across a year", "2024-12-29", "2025-01-06", rollup.StepWeek, "20241229-20241229 20241230-20250105 20250106-20250106"},
		{"one day week", "2025-06-04", "2025-06-04", rollup.StepWeek, "20250604-20250604"},
		{"months with a leap day", "2024-01-31", "2024-03-01", rollup.StepMonth, "20240131-20240131 20240201-20240229 20240301-20240301"},
		{"month across a year", "2024-12-15", "2025-01-15", rollup.StepMonth, "20241215-20241231 20250101-20250115"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, b := range rollup.Buckets(day(t, tt.start), day(t, tt.end), tt.step) {
				got = append(got, b.First.String()+"-"+b.Last.String())
			}
			if strings.Join(got, " ") != tt.want {
				t.Fatalf("got  %s\nwant %s", strings.Join(got, " "), tt.want)
			}
		})
	}
}

func TestDaysMask(t *testing.T) {
	if got := rollup.DaysMask(day(t, "2025-07-01"), day(t, "2025-07-31")); got != 1<<31-1 {
		t.Fatalf("July: %b", got)
	}
	if got := rollup.DaysMask(day(t, "2025-07-02"), day(t, "2025-07-03")); got != 0b110 {
		t.Fatalf("2..3: %b", got)
	}
	if rollup.MonthLast(day(t, "2024-02-10")) != day(t, "2024-02-29") || rollup.MonthFirst(day(t, "2024-02-10")) != day(t, "2024-02-01") {
		t.Fatal("February 2024")
	}
}

// testRangeIndex: clipped buckets list exactly the members present on
// one of their days, through the month index when nothing was counted
// outside the bucket, through a cache otherwise, and the cache follows
// writes.
func testRangeIndex(t *testing.T, rdb redis.UniversalClient) {
	ctx := context.Background()
	store, err := rollup.NewStore(rdb, time.UTC, 20*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var cs []rollup.Contribution
	cs = append(cs, contribution(t, time.UTC, "pay", "east", "api", "2025-06-02T10:00:00Z", "2025-06-02T11:00:00Z", 1)...)
	cs = append(cs, contribution(t, time.UTC, "pay", "east", "web", "2025-06-05T10:00:00Z", "2025-06-05T11:00:00Z", 1)...)
	if _, err := store.Apply(ctx, cs, "S", nil, false); err != nil {
		t.Fatal(err)
	}
	list := func(first, last string) string {
		t.Helper()
		p, err := store.Page(ctx, rollup.Selection{Scope: rollup.ScopeNamespace}, []rollup.Bucket{{First: day(t, first), Last: day(t, last)}}, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range p.Rows {
			out = append(out, r.Entity.Member(rollup.ScopeNamespace))
		}
		if p.Total != len(out) {
			t.Fatalf("%s..%s: total %d for %d rows", first, last, p.Total, len(out))
		}
		return strings.Join(out, ",")
	}
	if got := list("2025-06-01", "2025-06-03"); got != "pay east api" {
		t.Fatalf("days 1..3: %q", got)
	}
	cs = contribution(t, time.UTC, "ops", "west", "db", "2025-06-03T10:00:00Z", "2025-06-03T11:00:00Z", 1)
	if _, err := store.Apply(ctx, cs, "S", nil, false); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ first, last, want string }{
		{"2025-06-01", "2025-06-03", "ops west db,pay east api"},              // cache, rebuilt after the write
		{"2025-06-01", "2025-06-06", "ops west db,pay east api,pay east web"}, // month index: nothing after the 6th
		{"2025-06-03", "2025-06-05", "ops west db,pay east web"},
		{"2025-06-04", "2025-06-04", ""},
		{"2025-06-06", "2025-06-20", ""},
	} {
		if got := list(tc.first, tc.last); got != tc.want {
			t.Errorf("%s..%s: %q, want %q", tc.first, tc.last, got, tc.want)
		}
	}
}
