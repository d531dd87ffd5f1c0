package aggregator_test

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/internal/pipelinetest"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/testenv"
)

var groupKeys = []string{"team", "example.com/env"}

// labelled makes samples of namespaces with teams and environments that
// change mid-stream (relabelled namespaces), some without either.
func labelled(cluster string, namespaces int, start time.Time, windows int, interval time.Duration) []sample.Sample {
	out := gen(cluster, namespaces, start, windows, interval)
	for i := range out {
		s := &out[i]
		w := i / namespaces
		n := i % namespaces
		switch {
		case n%4 == 3: // never labelled
		case w < windows/2:
			s.Labels = map[string]string{"team": fmt.Sprintf("t%d", n%3), "example.com/env": "prod", "other": "x"}
		default: // relabelled halfway: another team, the environment dropped
			s.Labels = map[string]string{"team": fmt.Sprintf("t%d", (n+1)%3)}
		}
	}
	return out
}

// capacities makes capacity samples of cluster, one per window.
func capacities(cluster string, start time.Time, windows int, interval time.Duration) []sample.Sample {
	var out []sample.Sample
	for w := range windows {
		t := start.Add(time.Duration(w) * interval)
		out = append(out, sample.Sample{Cluster: cluster, Start: t, End: t.Add(interval),
			Capacity: &sample.Capacity{CPU: 96 + float64(w%3)*0.25, Memory: 384e9 + float64(w), Storage: 2e12}})
	}
	return out
}

// TestGroupsAndCapacity: labelled and capacity samples flow through the
// aggregator into exact group and capacity rollups (checked by the
// ledger both ways, every member of every scope), through an aggregator
// killed before a write, between a write and its ack, and at an
// arbitrary moment, then redelivered under another batching; a capacity
// window straddling a counted one and an invalid capacity sample are
// dead-lettered.
func TestGroupsAndCapacity(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var err error
	e.store, err = rollup.NewStore(e.redis.Client(), time.UTC, testRetention, rollup.WithGroupKeys(groupKeys))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2025, 6, 5, 23, 0, 0, 0, time.UTC)
	samples := labelled("east", 16, start, 30, 4*time.Minute)
	samples = append(samples, capacities("east", start, 30, 4*time.Minute)...)
	samples = append(samples, capacities("west", start, 10, 12*time.Minute)...)
	l := pipelinetest.NewLedger().KeepGroups(groupKeys...)
	l.Add(samples...)
	small, _ := collector.NewPublisher(e.js, collector.PublisherConfig{MaxBatch: 5}, e.log)
	if err := small.Publish(ctx, samples); err != nil {
		t.Fatal(err)
	}
	env := "COSTMETER_GROUP_KEYS=" + strings.Join(groupKeys, ",")
	for _, at := range []string{"decoded:2", "committed:2", "committed:4"} {
		cmd := e.startChild(at, env)
		err := cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("child with kill at %s ended with %v, want SIGKILL", at, err)
		}
	}
	cmd := e.startChild("", env)
	testenv.Eventually(t, 30*time.Second, "progress before the external kill", func() (bool, string) {
		info, err := e.consumerInfo()
		if err != nil {
			return false, err.Error()
		}
		return info.AckFloor.Stream > 8, fmt.Sprint("ack floor ", info.AckFloor.Stream)
	})
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	e.startAggregator(16)
	e.waitExact(l, 60*time.Second)

	// Sent again under another batching: duplicates, nothing moves. A
	// capacity window straddling counted time, and an invalid one.
	again, _ := collector.NewPublisher(e.js, collector.PublisherConfig{MaxBatch: 9}, e.log)
	if err := again.Publish(ctx, samples); err != nil {
		t.Fatal(err)
	}
	over := capacities("east", start.Add(118*time.Minute), 1, 4*time.Minute)[0] // past the last counted second
	if err := again.Publish(ctx, []sample.Sample{over}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.Publish(ctx, "cost.samples.east", []byte(`{"cluster":"east","start":"2025-06-06T02:00:00Z","end":"2025-06-06T02:01:00Z","capacity":{"cpu":-1,"memory":1,"storage":1}}`)); err != nil {
		t.Fatal(err)
	}
	e.waitExact(l, 60*time.Second)
	want := map[string]int{"invalid": 1, "overlap": 1}
	testenv.Eventually(t, 10*time.Second, "dead letters by reason", func() (bool, string) {
		got := e.deadLetters()
		return fmt.Sprint(got) == fmt.Sprint(want), fmt.Sprintf("got %v, want %v", got, want)
	})

	// The invariant, read as the API reads it: for every key and day the
	// values add up to the platform, exactly.
	for _, d := range []rollup.Day{rollup.DayFromDate(2025, 6, 5), rollup.DayFromDate(2025, 6, 6)} {
		b := []rollup.Bucket{{First: d, Last: d}}
		prs, err := e.store.Page(ctx, rollup.Selection{Scope: rollup.ScopeProject}, b, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		var platform rollup.Values
		for _, r := range prs.Rows {
			platform.Add(&r.Total)
		}
		for _, k := range groupKeys {
			grs, err := e.store.Page(ctx, rollup.Selection{Scope: rollup.ScopeGroup, Prefix: rollup.GroupPrefix(k, "")}, b, 0, 1000)
			if err != nil {
				t.Fatal(err)
			}
			var sum rollup.Values
			for _, r := range grs.Rows {
				sum.Add(&r.Total)
			}
			if sum != platform || len(grs.Rows) == 0 {
				t.Errorf("%s key %s: %d values add up to %v, the platform is %v", d, k, len(grs.Rows), sum, platform)
			}
		}
	}
	kc, err := e.store.CapacityCoverage(ctx, rollup.DayFromDate(2025, 6, 5), rollup.DayFromDate(2025, 6, 7), "")
	if err != nil {
		t.Fatal(err)
	}
	// east: 23:00 to 01:00; west: 23:00 to 01:00 too (10 × 12 min).
	if got := fmt.Sprint(kc); got != "[{east 20250605 [{82800 86400}]} {east 20250606 [{0 3600}]} {west 20250605 [{82800 86400}]} {west 20250606 [{0 3600}]}]" {
		t.Errorf("capacity coverage %s", got)
	}
}
