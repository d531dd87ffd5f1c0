package pipelinetest_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/alauda/costmeter/internal/pipelinetest"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/testenv"
)

// apply writes samples to the store directly, as an aggregator would,
// without booking them anywhere.
func apply(t *testing.T, store *rollup.Store, samples ...sample.Sample) {
	t.Helper()
	var cs []rollup.Contribution
	for i := range samples {
		s := &samples[i]
		for _, p := range rollup.Split(s, store.Location()) {
			cs = append(cs, rollup.Contribution{Entity: rollup.Entity{Project: s.Project, Cluster: s.Cluster, Namespace: s.Namespace}, Piece: p})
		}
	}
	res, err := store.Apply(context.Background(), cs, "test", nil, false)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range res.Verdicts {
		if v != rollup.Applied {
			t.Fatalf("contribution %d: verdict %c, want applied", i, v)
		}
	}
}

// TestDiffBothWays: Diff fails on a rollup the ledger booked and Redis
// lacks, on one whose values differ, and on one Redis holds that the
// ledger never booked (another namespace, another day of a booked
// namespace, or a day in another booked month), naming its scope, member
// and day.
func TestDiffBothWays(t *testing.T) {
	start := time.Date(2026, 5, 31, 22, 0, 0, 0, time.UTC) // the windows cross into June
	booked := pipelinetest.Gen("east", 4, start, 6, time.Hour)
	one := func(ns string, at time.Time) sample.Sample {
		return sample.Sample{Cluster: "east", Project: "p0", Namespace: ns, Start: at, End: at.Add(time.Minute), CPU: sample.Resources{Usage: 1}}
	}
	tests := []struct {
		name  string
		extra []sample.Sample // applied to Redis, not booked
		book  []sample.Sample // booked, not applied
		want  string          // "" or what the message must contain
	}{
		{"equal", nil, nil, ""},
		{"another namespace", []sample.Sample{one("stray", start)}, nil, `extra rollup: ns "p0 east stray" 20260531`},
		{"another day of a booked namespace", []sample.Sample{one("ns-0", start.Add(-48*time.Hour))}, nil, `extra rollup: ns "p0 east ns-0" 20260529`},
		{"a later day in a booked month", []sample.Sample{one("ns-3", time.Date(2026, 6, 30, 12, 0, 0, 0, time.UTC))}, nil, `extra rollup: ns "p0 east ns-3" 20260630`},
		{"missing", nil, []sample.Sample{one("ghost", start)}, `missing rollup: ns "p0 east ghost" 20260531`},
		{"more in redis than booked", []sample.Sample{one("ns-0", start.Add(-time.Hour))}, nil, `ns "p0 east ns-0" 20260531: redis`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rdb := testenv.StartRedis(t).Client()
			store, err := rollup.NewStore(rdb, time.UTC, 10*365*24*time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			l := pipelinetest.NewLedger()
			l.Add(booked...)
			apply(t, store, booked...)
			if d := l.Diff(context.Background(), store); d != "" {
				t.Fatalf("before the fault: %s", d)
			}
			if len(tt.extra) > 0 {
				apply(t, store, tt.extra...)
			}
			l.Add(tt.book...)
			d := l.Diff(context.Background(), store)
			switch {
			case tt.want == "" && d != "":
				t.Fatalf("diff %q, want none", d)
			case tt.want != "" && !strings.Contains(d, tt.want):
				t.Fatalf("diff %q, want it to say %q", d, tt.want)
			}
		})
	}
}
