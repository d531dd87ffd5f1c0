package rollup_test

import (
	"context"
	"io"
	"log/slog"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/alauda/costmeter/aggregator"
	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/pipelinetest"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/testenv"
)

// testKeyLayout fills the store through the pipeline (samples published
// to an embedded JetStream, consumed by the aggregator, applied to rdb),
// queries it as the API does (a clipped bucket that needs a cache, the
// usage rankings), then scans every key of Redis: each must be described
// by a row of the key table, with that row's type. Every row must have
// been met (but the cache being built, which lives only during a build),
// or the test proves nothing.
func testKeyLayout(t *testing.T, rdb redis.UniversalClient) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n := testenv.StartNATS(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	nc, js, err := natsconn.Connect(n.URL(), "test", log)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	keys := []string{"team", "example.com/env"}
	store, err := rollup.NewStore(rdb, time.UTC, 20*365*24*time.Hour, rollup.WithGroupKeys(keys))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.CheckTimezone(ctx); err != nil {
		t.Fatal(err)
	}
	if err := stream.Ensure(ctx, js, stream.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	pub, err := collector.NewPublisher(js, collector.PublisherConfig{MaxBatch: 50}, log)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2025, 6, 25, 0, 0, 0, 0, time.UTC)
	agg, err := aggregator.New(aggregator.DefaultConfig(), js, store, aggregator.WithLogger(log), aggregator.WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	pipelinetest.Start(t, agg)
	// Two days of June (the 20th lies outside the clipped bucket below, so
	// the bucket needs a cache) and the last hour of May, and one sample
	// whose Effective is below its Usage, which marks the rankings loose.
	l := pipelinetest.NewLedger().KeepGroups(keys...)
	one := 1.0
	loose := sample.Sample{
		Cluster: "east", Project: "p0", Namespace: "loose",
		Start: time.Date(2025, 6, 5, 12, 0, 0, 0, time.UTC), End: time.Date(2025, 6, 5, 12, 20, 0, 0, time.UTC),
		CPU: sample.Resources{Usage: 2, Request: 1, Effective: &one},
	}
	if err := pub.Publish(ctx, []sample.Sample{loose}); err != nil {
		t.Fatal(err)
	}
	l.Add(loose)
	for _, at := range []time.Time{
		time.Date(2025, 5, 31, 23, 0, 0, 0, time.UTC),
		time.Date(2025, 6, 5, 10, 0, 0, 0, time.UTC),
		time.Date(2025, 6, 20, 10, 0, 0, 0, time.UTC),
	} {
		samples := pipelinetest.Gen("east", 12, at, 3, 20*time.Minute)
		for i := range samples {
			// Teams on some namespaces, an environment on others.
			switch i % 3 {
			case 0:
				samples[i].Labels = map[string]string{"team": "t" + samples[i].Namespace}
			case 1:
				samples[i].Labels = map[string]string{"example.com/env": "prod"}
			}
		}
		samples = append(samples, sample.Sample{Cluster: "east", Start: at, End: at.Add(time.Hour),
			Capacity: &sample.Capacity{CPU: 64, Memory: 256 << 30, Storage: 1 << 40}})
		if err := pub.Publish(ctx, samples); err != nil {
			t.Fatal(err)
		}
		l.Add(samples...)
	}
	pipelinetest.WaitExact(t, js, store, l, time.Minute)

	june := rollup.DayFromDate(2025, 6, 1)
	sel := rollup.Selection{Scope: rollup.ScopeNamespace}
	page, err := store.Page(ctx, sel, []rollup.Bucket{{First: june, Last: june + 9}}, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if page.Total != 13 {
		t.Fatalf("clipped bucket: %d rows, want 13 (12 generated namespaces and loose)", page.Total)
	}
	if _, err := store.TopByUsage(ctx, rollup.ScopeProject, june, june+29, rollup.Field(rollup.Cpu, rollup.Effective), 2); err != nil {
		t.Fatal(err)
	}

	all := scanAll(t, ctx, rdb)
	met := map[string]int{}
	var bad []string
	types := map[string]*redis.StatusCmd{}
	expiry := map[string]*redis.DurationCmd{}
	pipe := rdb.Pipeline()
	for _, k := range all {
		types[k] = pipe.Type(ctx, k)
		expiry[k] = pipe.ExpireTime(ctx, k)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	for _, k := range all {
		f, ok := rollup.MatchKey(k)
		switch {
		case !ok:
			bad = append(bad, k+": no row of the key table describes it")
		case types[k].Val() != f.Type:
			bad = append(bad, k+": a "+types[k].Val()+", the table ("+f.Form+") says "+f.Type)
		case expiry[k].Val() < 0 && !strings.Contains(f.Form, ":applied:") && f.Form != "c:{cfg}" && !strings.HasSuffix(f.Form, ":bxr"):
			// Everything of a month expires with it (keys.go).
			bad = append(bad, k+": no expiry")
		default:
			met[f.Form]++
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		t.Fatalf("%d keys of %d break the layout:\n%s", len(bad), len(keys), strings.Join(bad, "\n"))
	}
	for _, f := range rollup.KeyTable {
		if met[f.Form] == 0 && !strings.HasSuffix(f.Form, "<build>") {
			t.Errorf("the test proves nothing for %s: no such key was written", f.Form)
		}
	}
	t.Logf("%d keys, every one in the table: %v", len(all), met)
}

// scanAll returns every key of rdb (of every master of a cluster).
func scanAll(t *testing.T, ctx context.Context, rdb redis.UniversalClient) []string {
	t.Helper()
	var keys []string
	scan := func(ctx context.Context, c *redis.Client) ([]string, error) {
		var out []string
		it := c.Scan(ctx, 0, "*", 1000).Iterator()
		for it.Next(ctx) {
			out = append(out, it.Val())
		}
		return out, it.Err()
	}
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		ch := make(chan []string, 16)
		err := c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			ks, err := scan(ctx, m)
			ch <- ks
			return err
		})
		close(ch)
		if err != nil {
			t.Fatal(err)
		}
		for ks := range ch {
			keys = append(keys, ks...)
		}
	case *redis.Client:
		ks, err := scan(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		keys = ks
	default:
		t.Fatalf("unsupported client %T", rdb)
	}
	if len(keys) == 0 {
		t.Fatal("the test proves nothing: redis holds no key")
	}
	return keys
}
