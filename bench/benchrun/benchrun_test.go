package benchrun_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
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
	t.Parallel()
	cfg := benchrun.Config{Sizes: benchrun.QuickSizes(), Quick: true, AggregatorBatch: benchrun.DefaultAggregatorBatch, CPUProfile: filepath.Join(t.TempDir(), "cpu.pprof"),
		Skip: []string{"live"}}
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
		"backlog test: publish ack to rollup event, p99", "backlog test: publish ack to API answer, p99",
		"single, ns=1000: new-day burst / steady", "cluster, ns=1000: largest master's share of rollup writes, steady", "cluster, ns=1000: longest redis command"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("the table lacks %q:\n%s", want, table.String())
		}
	}
	if err := rep.WriteJSON(filepath.Join(t.TempDir(), "r.json")); err != nil {
		t.Fatal(err)
	}
}

// TestQuickLive runs the live phase at its quick sizes (600 namespaces in
// 3 clusters, windows 5 s apart, midnight at the third), on a single Redis
// and on a Redis Cluster, beside TestQuick: every window must be applied
// (then the new day's cluster rollups must hold the exact sums), every
// followed namespace's events and every probe's answer must come, no
// dashboard request may fail, and the report must hold every row and
// Redis's latency report. Figures are not checked.
func TestQuickLive(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := benchrun.Config{Sizes: benchrun.QuickSizes(), Quick: true, AggregatorBatch: benchrun.DefaultAggregatorBatch, Phases: []string{"live"}, ResultsDir: dir}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	rep, err := benchrun.Run(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"; 0 never seen", "; 0 not shown within"} {
		if n := strings.Count(table.String(), want); n != 2 {
			t.Errorf("the table holds %q %d times, want 2 (every window seen, on each backend):\n%s", want, n, table.String())
		}
	}
	value := func(name string) (float64, bool) {
		for _, r := range rep.Rows {
			if r.Name == name {
				return r.Value, true
			}
		}
		return 0, false
	}
	for _, backend := range []string{"single", "cluster"} {
		prefix := "live, " + backend + ", ns=600: "
		for _, zero := range []string{"windows not applied by the end of the run", "dashboard requests failed"} {
			if v, ok := value(prefix + zero); !ok || v != 0 {
				t.Errorf("%s%s = %v (present %v), want 0", prefix, zero, v, ok)
			}
		}
		for _, want := range []string{"freshness: window end to rollup event, p99", "freshness: window end to API answer, p99",
			"query p95, whole run", "query p99, the minute after midnight", "longest redis command (SLOWLOG)",
			"midnight burst: first-of-day samples applied", "CPU per sample, this process", "CPU per sample, redis"} {
			if !strings.Contains(table.String(), prefix+want) {
				t.Errorf("the table lacks %q:\n%s", prefix+want, table.String())
			}
		}
		b, err := os.ReadFile(filepath.Join(dir, "live-"+backend+"-redis.txt"))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"LATENCY LATEST", "LATENCY DOCTOR", "cmdstat_evalsha"} {
			if !bytes.Contains(b, []byte(want)) {
				t.Errorf("live-%s-redis.txt lacks %q", backend, want)
			}
		}
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
		{"live without a window after midnight", func(s *benchrun.Sizes) { s.LiveWindows = s.LiveMidnight }, false},
		{"live with fewer namespaces than clusters", func(s *benchrun.Sizes) { s.LiveNamespaces = s.LiveClusters - 1 }, false},
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
