package api_test

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"github.com/alauda/costmeter/api"
	"github.com/alauda/costmeter/internal/auth"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/telemetry"
	"github.com/alauda/costmeter/internal/testenv"
)

// coverageSamples is a data set with holes, billed in America/New_York:
//
//	east/a  hourly windows 2025-03-08..03-10 local, silent 10:00–13:00 local on 03-10
//	east/b  from 12:00 local on 03-08 (inside a's coverage), and alone on 11-02 from 12:00
//	east/c  7-minute windows overlapping a's on 03-08 00:00–06:00 (union, not sum)
//	east/a  one 10-minute window on 11-01 at 08:00 local
//	west/x  06:00Z–08:00Z on 03-09 (across the spring-forward gap) and a window across midnight 03-09/03-10
func coverageSamples(t *testing.T, ny *time.Location) []sample.Sample {
	t.Helper()
	var out []sample.Sample
	add := func(cl, ns string, from, to time.Time, step time.Duration) {
		for at := from; at.Before(to); at = at.Add(step) {
			end := at.Add(step)
			if end.After(to) {
				end = to
			}
			out = append(out, sample.Sample{Cluster: cl, Project: "p", Namespace: ns, Start: at, End: end,
				CPU: sample.Resources{Usage: 1, Request: 1}})
		}
	}
	local := func(y int, m time.Month, d, h, min int) time.Time { return time.Date(y, m, d, h, min, 0, 0, ny) }
	add("east", "a", local(2025, 3, 8, 0, 0), local(2025, 3, 10, 10, 0), time.Hour)
	add("east", "a", local(2025, 3, 10, 13, 0), local(2025, 3, 11, 0, 0), time.Hour)
	add("east", "b", local(2025, 3, 8, 12, 0), local(2025, 3, 9, 0, 0), time.Hour)
	add("east", "c", local(2025, 3, 8, 0, 0), local(2025, 3, 8, 6, 0), 7*time.Minute)
	add("east", "a", local(2025, 11, 1, 8, 0), local(2025, 11, 1, 8, 10), 10*time.Minute)
	add("east", "b", local(2025, 11, 2, 12, 0), local(2025, 11, 3, 0, 0), time.Hour)
	utc := func(d, h, m int) time.Time { return time.Date(2025, 3, d, h, m, 0, 0, time.UTC) }
	add("west", "x", utc(9, 6, 0), utc(9, 8, 0), time.Hour)
	add("west", "x", utc(10, 3, 30), utc(10, 4, 30), time.Hour) // 23:30–00:30 EDT
	for i := range out {
		if err := out[i].Validate(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// wantCoverage is computed by hand from the list above.
var wantCoverage = []api.CoverageRow{
	{Cluster: "east", Day: "20250308", CoveredSeconds: 86400, DaySeconds: 86400, Ratio: 1, LastSampleEnd: "2025-03-09T05:00:00Z"},
	{Cluster: "east", Day: "20250309", CoveredSeconds: 82800, DaySeconds: 82800, Ratio: 1, LastSampleEnd: "2025-03-10T04:00:00Z"},
	{Cluster: "east", Day: "20250310", CoveredSeconds: 75600, DaySeconds: 86400, Ratio: 0.875, LastSampleEnd: "2025-03-11T04:00:00Z"},
	{Cluster: "east", Day: "20251101", CoveredSeconds: 600, DaySeconds: 86400, Ratio: 0.006944, LastSampleEnd: "2025-11-01T12:10:00Z"},
	{Cluster: "east", Day: "20251102", CoveredSeconds: 43200, DaySeconds: 90000, Ratio: 0.48, LastSampleEnd: "2025-11-03T05:00:00Z"},
	{Cluster: "west", Day: "20250309", CoveredSeconds: 7200 + 1800, DaySeconds: 82800, Ratio: 0.108696, LastSampleEnd: "2025-03-10T04:00:00Z"},
	{Cluster: "west", Day: "20250310", CoveredSeconds: 1800, DaySeconds: 86400, Ratio: 0.020833, LastSampleEnd: "2025-03-10T04:30:00Z"},
}

func applySamples(t *testing.T, store *rollup.Store, loc *time.Location, ss []sample.Sample) []rollup.Verdict {
	t.Helper()
	var cs []rollup.Contribution
	for i := range ss {
		s := &ss[i]
		for _, p := range rollup.Split(s, loc) {
			cs = append(cs, rollup.Contribution{Entity: rollup.Entity{Project: s.Project, Cluster: s.Cluster, Namespace: s.Namespace}, Piece: p})
		}
	}
	res, err := store.Apply(context.Background(), cs, "test", nil, false)
	if err != nil {
		t.Fatal(err)
	}
	return res.Verdicts
}

func coveragePage(t *testing.T, h http.Handler, q string) api.CoverageResponse {
	t.Helper()
	rec := get(h, api.CoveragePath, mustQuery(t, q))
	if rec.Code != http.StatusOK {
		t.Fatalf("%s: status %d: %s", q, rec.Code, rec.Body)
	}
	var r api.CoverageResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func newCoverageEnv(t *testing.T) (*rollup.Store, *redis.Client, *time.Location) {
	t.Helper()
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	r := testenv.StartRedis(t)
	rdb := r.Client()
	store, err := rollup.NewStore(rdb, ny, retention)
	if err != nil {
		t.Fatal(err)
	}
	return store, rdb, ny
}

// TestCoverage: holes, a namespace starting mid-day, overlapping windows
// of two namespaces and DST days give exactly the covered seconds worked
// out by hand; duplicates and a refused overlap change nothing; paging,
// the cluster filter and parameter errors behave like the usage route's.
func TestCoverage(t *testing.T) {
	store, rdb, ny := newCoverageEnv(t)
	ss := coverageSamples(t, ny)
	for _, v := range applySamples(t, store, ny, ss) {
		if v != rollup.Applied {
			t.Fatalf("verdict %c, want applied", v)
		}
	}
	// Everything again (duplicates), and a window straddling the silent
	// hours and counted time (an overlap, refused).
	applySamples(t, store, ny, ss)
	overlap := sample.Sample{Cluster: "east", Project: "p", Namespace: "a", Start: time.Date(2025, 3, 10, 9, 0, 0, 0, ny), End: time.Date(2025, 3, 10, 11, 0, 0, 0, ny)}
	if v := applySamples(t, store, ny, []sample.Sample{overlap}); len(v) != 1 || v[0] != rollup.Overlap {
		t.Fatalf("verdicts %c, want one overlap", v)
	}

	srv, err := api.New(api.DefaultConfig(), store, ny)
	if err != nil {
		t.Fatal(err)
	}
	h := conform(t, srv.Handler())
	all := coveragePage(t, h, "start=2025-03-01&end=2025-11-30&pageSize=1000")
	if all.Total != len(wantCoverage) || len(all.Items) != len(wantCoverage) {
		t.Fatalf("total %d, %d rows; want %d: %+v", all.Total, len(all.Items), len(wantCoverage), all.Items)
	}
	for i, w := range wantCoverage {
		if all.Items[i] != w {
			t.Errorf("row %d:\n got %+v\nwant %+v", i, all.Items[i], w)
		}
	}
	// Paging: 7 rows, pages of 3.
	p3 := coveragePage(t, h, "start=2025-03-01&end=2025-11-30&pageSize=3&currentPage=3")
	if p3.Total != 7 || p3.PageSize != 3 || p3.CurrentPage != 3 || len(p3.Items) != 1 || p3.Items[0] != wantCoverage[6] {
		t.Fatalf("page 3: %+v", p3)
	}
	if p := coveragePage(t, h, "start=2025-03-01&end=2025-11-30&currentPage=9"); p.Total != 7 || len(p.Items) != 0 || p.PageSize != 20 {
		t.Fatalf("past the end: %+v", p)
	}
	// One cluster, a range that clips.
	west := coveragePage(t, h, "start=2025-03-10&end=2025-03-10&cluster=west")
	if west.Total != 1 || west.Items[0] != wantCoverage[6] {
		t.Fatalf("cluster=west: %+v", west)
	}
	if p := coveragePage(t, h, "start=2025-03-01&end=2025-03-31&cluster=nowhere"); p.Total != 0 || p.Items == nil {
		t.Fatalf("unknown cluster: %+v", p)
	}

	for _, tc := range []struct {
		query, want string
	}{
		{"end=2025-03-01", "start: required (YYYY-MM-DD)"},
		{"start=2025-03-01", "end: required (YYYY-MM-DD)"},
		{"start=2025-03-02&end=2025-03-01", "end: 2025-03-01 is before start 2025-03-02"},
		{"start=2024-01-01&end=2025-03-01", "end: at most 366 days after start"},
		{"start=2025-03-01&end=2025-03-02&cluster=Prod_East", `cluster: \"Prod_East\" is not a lowercase DNS label`},
		{"start=2025-03-01&end=2025-03-02&pageSize=1001", "pageSize: must be at most 1000, got 1001"},
		{"start=2025-03-01&end=2025-03-02&currentPage=0", "currentPage: must be at least 1, got 0"},
	} {
		rec := get(h, api.CoveragePath, mustQuery(t, tc.query))
		if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), tc.want) || !strings.Contains(rec.Body.String(), `"kind":"Status"`) {
			t.Errorf("%s: %d %s, want 400 with %q", tc.query, rec.Code, rec.Body, tc.want)
		}
	}
	t.Run("metrics", func(t *testing.T) { testCoverageMetrics(t, rdb, ny) })

	// Platform scope only.
	member, err := api.New(api.DefaultConfig(), store, ny, api.WithAuthenticate(func(c *gin.Context) {
		c.Request = c.Request.WithContext(auth.WithPrincipal(c.Request.Context(), &auth.Principal{Name: "alice", Projects: []string{"p"}}))
	}))
	if err != nil {
		t.Fatal(err)
	}
	if rec := get(conform(t, member.Handler()), api.CoveragePath, url.Values{"start": {"2025-03-01"}, "end": {"2025-03-02"}}); rec.Code != http.StatusForbidden {
		t.Fatalf("project member: %d %s, want 403", rec.Code, rec.Body)
	}
}

// testCoverageMetrics: at 2025-03-10 18:00 local the metrics give each
// cluster's newest counted end, yesterday's ratio and today's so far.
func testCoverageMetrics(t *testing.T, rdb *redis.Client, ny *time.Location) {
	tel, err := telemetry.Setup(context.Background(), telemetry.Config{}, "cost-api")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	now := time.Date(2025, 3, 10, 18, 0, 0, 0, ny)
	srv, err := api.New(api.DefaultConfig(), rollup.NewReader(rdb), ny, api.WithClock(func() time.Time { return now }),
		api.WithTelemetry(tel.MeterProvider(), tel.TracerProvider(), tel.Handler()))
	if err != nil {
		t.Fatal(err)
	}
	m := testenv.Scrape(t, conform(t, srv.Handler()))
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		// east's newest window ends at midnight after the 10th (the test
		// data runs ahead of the clock); west's at 00:30 EDT on the 10th.
		{"cost_cluster_last_sample_end_timestamp_seconds", []string{"cluster", "east"}, float64(time.Date(2025, 3, 11, 4, 0, 0, 0, time.UTC).Unix())},
		{"cost_cluster_last_sample_end_timestamp_seconds", []string{"cluster", "west"}, float64(time.Date(2025, 3, 10, 4, 30, 0, 0, time.UTC).Unix())},
		{"cost_cluster_covered_ratio", []string{"cluster", "east", "day", "yesterday"}, 1},
		{"cost_cluster_covered_ratio", []string{"cluster", "west", "day", "yesterday"}, 9000.0 / 82800},
		// Today so far: 18 h elapsed, east covered all but 3 h (and the
		// hours ahead of the clock are capped at 1), west 30 minutes.
		{"cost_cluster_covered_ratio", []string{"cluster", "east", "day", "today"}, 1},
		{"cost_cluster_covered_ratio", []string{"cluster", "west", "day", "today"}, 1800.0 / (18 * 3600)},
	} {
		got, ok := m.Value(tc.name, tc.labels...)
		if !ok || math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("%s%v = %v (present %v), want %v; series %q", tc.name, tc.labels, got, ok, tc.want, m.Series(tc.name))
		}
	}
}
