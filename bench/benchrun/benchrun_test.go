package benchrun_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/alauda/costmeter/bench/benchrun"
)

// TestQuick runs the whole benchmark at its quick sizes, so that `make
// bench` cannot rot: every phase must finish, the ingest phases must find
// the exact ledger sums in Redis, and the report must hold every section.
// Figures are not checked: under the race detector they mean nothing.
func TestQuick(t *testing.T) {
	cfg := benchrun.Config{Sizes: benchrun.QuickSizes(), Quick: true, AggregatorBatch: benchrun.DefaultAggregatorBatch, CPUProfile: filepath.Join(t.TempDir(), "cpu.pprof")}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	rep, err := benchrun.Run(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"jetstream publish", "jetstream consume", "redis BITFIELD", "steady: samples/s", "catch-up: samples/s",
		"namespace_all step=day, page of 20, p95", "p95 ratio", "per namespace-day", "peak RSS",
		"freshness: publish ack to rollup event, p99", "freshness: publish ack to API answer, p99",
		"single, ns=1000: new-day burst / steady", "cluster, ns=1000: largest master's share of rollup writes, steady", "cluster, ns=1000: longest redis command"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("the table lacks %q:\n%s", want, table.String())
		}
	}
	if err := rep.WriteJSON(filepath.Join(t.TempDir(), "r.json")); err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*benchrun.Sizes)
		ok   bool
	}{
		{"full", func(*benchrun.Sizes) {}, true},
		{"no raw", func(s *benchrun.Sizes) { s.RawMessages = 0 }, false},
		{"one query size", func(s *benchrun.Sizes) { s.QueryNamespaces = s.QueryNamespaces[:1] }, false},
		{"short backfill", func(s *benchrun.Sizes) { s.CatchupBackfill = 0 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := benchrun.Config{Sizes: benchrun.FullSizes(), AggregatorBatch: benchrun.DefaultAggregatorBatch}
			tt.mod(&cfg.Sizes)
			if err := cfg.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok %v", err, tt.ok)
			}
		})
	}
}
