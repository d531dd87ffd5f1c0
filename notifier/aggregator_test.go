package notifier_test

import (
	"context"
	"testing"
	"time"

	"github.com/alauda/costmeter/aggregator"
	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/internal/pipelinetest"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/testenv"
	"github.com/alauda/costmeter/notifier"
	"github.com/nats-io/nats.go/jetstream"
)

// hourly makes one-core samples of namespace payments/east/api, one per
// hour from start for n hours (instants, so a 25-hour day gets 25).
func hourly(start time.Time, n int) []sample.Sample {
	var out []sample.Sample
	for i := range n {
		t := start.Add(time.Duration(i) * time.Hour)
		out = append(out, sample.Sample{Cluster: "east", Project: "payments", Namespace: "api", Start: t, End: t.Add(time.Hour),
			CPU: sample.Resources{Usage: 1, Request: 1, Quota: 4}})
	}
	return out
}

// TestAggregatorEventsInADSTZone runs a real aggregator in America/New_York
// across the end of daylight saving time (Sunday 2026-11-01 has 25 hours)
// and then sends a late sample for the previous month.
func TestAggregatorEventsInADSTZone(t *testing.T) {
	e := newEnv(t)
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 20, 12, 0, 0, 0, ny)
	ctx := context.Background()
	startAggregator(t, e, ny, now)
	pub, err := collector.NewPublisher(e.js, collector.PublisherConfig{MaxBatch: 10}, e.log)
	if err != nil {
		t.Fatal(err)
	}

	e.writeRules(
		"name: p-day, kind: project, entity: payments, item: Cpu, method: Effective, period: day, thresholds: [24.5]",
		"name: p-week, kind: project, entity: payments, item: Cpu, method: Effective, period: week, thresholds: [40]",
		"name: p-month, kind: project, entity: payments, item: Cpu, method: Effective, period: month, budget: 60, percent: [50, 75]",
	)
	e.recv.up()
	e.start(testConfig(notifier.DefaultConsumer))

	// Saturday 2026-10-31 00:00 EDT to Tuesday 2026-11-03 00:00 EST: 73
	// hours; the days hold 24, 25 and 24 core-hours.
	if err := pub.Publish(ctx, hourly(time.Date(2026, 10, 31, 0, 0, 0, 0, ny), 73)); err != nil {
		t.Fatal(err)
	}
	want := map[crossing]bool{
		{"p-day", "project:payments", "20261101", "20261101", 24.5}: true, // only the 25-hour day
		{"p-week", "project:payments", "20261026", "20261101", 40}:  true, // Oct 31 + Nov 1 = 49; Nov 2 alone is 24
		{"p-month", "project:payments", "20261101", "20261130", 30}: true, // November: 49; October: 24
		{"p-month", "project:payments", "20261101", "20261130", 45}: true,
	}
	before := e.waitDelivered(want)

	// A late sample for last month (Friday 2026-10-30, 24 hours): October
	// reaches 48 and fires both of its thresholds; November and the week
	// fired already, and the day stays below its threshold.
	if err := pub.Publish(ctx, hourly(time.Date(2026, 10, 30, 0, 0, 0, 0, ny), 24)); err != nil {
		t.Fatal(err)
	}
	want[crossing{"p-month", "project:payments", "20261001", "20261031", 30}] = true
	want[crossing{"p-month", "project:payments", "20261001", "20261031", 45}] = true
	after := e.waitDelivered(want)
	e.drained(notifier.DefaultConsumer)
	for id, ce := range after {
		if _, old := before[id]; !old && ce.Data.PeriodStart != "20261001" {
			t.Errorf("the late sample fired %s", crossingOf(ce))
		}
		if ce.Data.PeriodStart == "20261001" && (ce.Data.Usage < ce.Data.Threshold || ce.Data.Usage > 48) {
			t.Errorf("October's %g fired at %g core-hours, want within [threshold, 48]", ce.Data.Threshold, ce.Data.Usage)
		}
	}
}

// TestNewPeriodSeededFromTheRollups: a rule's first event for a period
// comes after the period's earlier events left the stream (they are kept
// 7 days, a month is longer; or the rule was added late): the period is
// totalled from its first day all the same, from the rollups.
func TestNewPeriodSeededFromTheRollups(t *testing.T) {
	e := newEnv(t)
	now := time.Date(2026, 9, 20, 12, 0, 0, 0, time.UTC)
	ctx := context.Background()
	store := startAggregator(t, e, time.UTC, now)
	pub, err := collector.NewPublisher(e.js, collector.PublisherConfig{MaxBatch: 50}, e.log)
	if err != nil {
		t.Fatal(err)
	}
	// September 1 to 5: 120 core-hours, then their events are gone.
	l := pipelinetest.NewLedger()
	first := hourly(time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC), 5*24)
	l.Add(first...)
	if err := pub.Publish(ctx, first); err != nil {
		t.Fatal(err)
	}
	pipelinetest.WaitExact(t, e.js, store, l, 60*time.Second)
	st, err := e.js.Stream(ctx, stream.Rollups)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	if info, err := st.Info(ctx); err != nil || info.State.Msgs != 0 {
		t.Fatalf("the test proves nothing: the rollup events of September 1-5 are still in the stream (%v, %v)", info, err)
	}

	e.writeRules("name: p-month, kind: project, entity: payments, item: Cpu, method: Usage, period: month, thresholds: [100, 130, 200]")
	e.recv.up()
	e.start(testConfig(notifier.DefaultConsumer))
	// September 6: 24 more, 144 in all.
	if err := pub.Publish(ctx, hourly(time.Date(2026, 9, 6, 0, 0, 0, 0, time.UTC), 24)); err != nil {
		t.Fatal(err)
	}
	e.waitDelivered(map[crossing]bool{
		{"p-month", "project:payments", "20260901", "20260930", 100}: true,
		{"p-month", "project:payments", "20260901", "20260930", 130}: true,
	})
}

// TestTeamBudgetThroughTheAggregator: a team's budget fires from the group
// events a real aggregator keeping team publishes: the search team's two
// namespaces (in two projects) reach 30 core-hours on the day, the
// payments team's one namespace 12, and only search's rule fires.
func TestTeamBudgetThroughTheAggregator(t *testing.T) {
	e := newEnv(t)
	now := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	ctx := context.Background()
	startAggregator(t, e, time.UTC, now, rollup.WithGroupKeys([]string{"team"}))
	pub, err := collector.NewPublisher(e.js, collector.PublisherConfig{MaxBatch: 10}, e.log)
	if err != nil {
		t.Fatal(err)
	}
	e.writeRules(
		"name: search-day, kind: group, groupBy: team, entity: search, item: Cpu, method: Effective, period: day, thresholds: [25]",
		"name: payments-day, kind: group, groupBy: team, entity: payments, item: Cpu, method: Effective, period: day, thresholds: [25]",
	)
	e.recv.up()
	e.start(testConfig(notifier.DefaultConsumer))
	day := time.Date(2026, 11, 19, 0, 0, 0, 0, time.UTC)
	var ss []sample.Sample
	for _, s := range hourly(day, 12) { // payments/api: 12 core-hours
		s.Labels = map[string]string{"team": "payments"}
		ss = append(ss, s)
	}
	for _, s := range hourly(day, 24) { // 24 + 6 core-hours of search
		s.Project, s.Namespace, s.Labels = "catalog", "index", map[string]string{"team": "search"}
		ss = append(ss, s)
		if s.Start.Hour() < 6 {
			s.Project, s.Namespace = "shop", "query"
			ss = append(ss, s)
		}
	}
	if err := pub.Publish(ctx, ss); err != nil {
		t.Fatal(err)
	}
	e.waitDelivered(map[crossing]bool{{"search-day", "group:team=search", "20261119", "20261119", 25}: true})
	e.drained(notifier.DefaultConsumer)
}

// startAggregator runs a real aggregator in zone loc whose clock stands at
// now, and returns its store; it returns once the aggregator consumes.
func startAggregator(t *testing.T, e *env, loc *time.Location, now time.Time, opts ...rollup.StoreOption) *rollup.Store {
	t.Helper()
	ctx := context.Background()
	store, err := rollup.NewStore(e.rdb, loc, rollup.DefaultRetention, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.LoadScripts(ctx); err != nil {
		t.Fatal(err)
	}
	if err := stream.Ensure(ctx, e.js, stream.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	cfg := aggregator.DefaultConfig()
	cfg.BatchSize, cfg.MaxWait = 64, 20*time.Millisecond
	agg, err := aggregator.New(cfg, e.js, store, aggregator.WithLogger(e.log), aggregator.WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	pipelinetest.Start(t, agg)
	aggregatorConsuming(t, e.js)
	return store
}

// aggregatorConsuming waits until the aggregator has created its consumer,
// which it does only after updating the streams: a stream update racing the
// notifier's consumer creation on the same embedded server is a data race
// inside nats-server (seen under -race), which a real deployment never runs
// in one process.
func aggregatorConsuming(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	testenv.Eventually(t, 20*time.Second, "the aggregator's consumer exists", func() (bool, string) {
		if _, err := pipelinetest.ConsumerInfo(js); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
}
