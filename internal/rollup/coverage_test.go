package rollup_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/alauda/costmeter/internal/rollup"
)

// testClusterCoverage: a cluster's day is covered only by the union of
// its namespaces' windows, which live in different shards (twelve
// namespaces, each a 2-hour block plus half an hour of its neighbour's);
// the reader unites the shards' parts exactly, a piece past midnight
// starts the next day, and duplicates and a refused overlap change
// nothing.
func testClusterCoverage(t *testing.T, rdb redis.UniversalClient) {
	ctx := context.Background()
	store, err := rollup.NewStore(rdb, time.UTC, 20*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.LoadScripts(ctx); err != nil {
		t.Fatal(err)
	}
	at := func(h, m int) string {
		return time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute).Format(time.RFC3339)
	}
	var cs []rollup.Contribution
	for i := range 12 {
		ns := fmt.Sprintf("ns-%d", i)
		cs = append(cs, contribution(t, time.UTC, "p", "east", ns, at(2*i, 0), at(2*i+2, 0), 1)...)
		if i < 11 {
			cs = append(cs, contribution(t, time.UTC, "p", "east", ns, at(2*i+2, 0), at(2*i+2, 30), 1)...)
		}
	}
	cs = append(cs, contribution(t, time.UTC, "p", "east", "ns-5", at(23, 30), at(24, 30), 1)...)
	cs = append(cs, contribution(t, time.UTC, "q", "west", "db", at(10, 0), at(10, 30), 1)...)
	if _, err := store.Apply(ctx, cs, "S", nil, false); err != nil {
		t.Fatal(err)
	}
	again := append(append([]rollup.Contribution{}, cs...), contribution(t, time.UTC, "q", "west", "db", at(10, 15), at(10, 45), 1)...)
	res, err := store.Apply(ctx, again, "S", nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if v := res.Verdicts[len(res.Verdicts)-1]; v != rollup.Overlap {
		t.Fatalf("straddling window: verdict %c, want overlap", v)
	}
	d := rollup.DayFromDate(2025, 6, 1)
	reader := rollup.NewReader(rdb)
	got, err := reader.ClusterCoverage(ctx, d-1, d+1, "")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprint([]rollup.ClusterDay{
		{Cluster: "east", Day: d, Spans: []rollup.Span{{From: 0, To: 86400}}},
		{Cluster: "east", Day: d + 1, Spans: []rollup.Span{{From: 0, To: 1800}}},
		{Cluster: "west", Day: d, Spans: []rollup.Span{{From: 36000, To: 37800}}},
	})
	if fmt.Sprint(got) != want {
		t.Fatalf("coverage %v, want %s", got, want)
	}
	west, err := reader.ClusterCoverage(ctx, d, d+1, "west")
	if err != nil {
		t.Fatal(err)
	}
	if len(west) != 1 || west[0].Covered() != 1800 || west[0].LastEnd() != 37800 {
		t.Fatalf("west: %v", west)
	}
}
