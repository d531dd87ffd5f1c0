package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alauda/costmeter/exporter"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/testenv"
)

func TestBadConfigurationExits2(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--currency", "XYZ"}, `--currency: "XYZ" is not one of [CNY USD`},
		{[]string{"--from", "2026-13-01", "--to", "2026-12-01"}, `--from: "2026-13-01" is not a date YYYY-MM-DD`},
		{[]string{"--from", "2026-12-02", "--to", "2026-12-01"}, `--to: 2026-12-01 is before --from 2026-12-02`},
		{[]string{"--pricing", "/does/not/exist.yaml"}, `--pricing:`},
	} {
		var stderr bytes.Buffer
		if code := run(tc.args, &stderr); code != 2 {
			t.Errorf("%v: exit %d, want 2", tc.args, code)
		}
		if !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: message lacks %q: %s", tc.args, tc.want, stderr.String())
		}
	}
}

// TestBackfillExitsWhenDone: with --from and --to the binary exports those
// days (one namespace's 2 core-hours, priced from the list) and exits 0.
func TestBackfillExitsWhenDone(t *testing.T) {
	r := testenv.StartRedis(t)
	n := testenv.StartNATS(t)
	store, err := rollup.NewStore(r.Client(), time.UTC, rollup.DefaultRetention)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := store.CheckTimezone(ctx); err != nil {
		t.Fatal(err)
	}
	if err := store.LoadScripts(ctx); err != nil {
		t.Fatal(err)
	}
	s := sample.Sample{Cluster: "east", Project: "pay", Namespace: "api",
		Start: time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC), End: time.Date(2026, 11, 3, 12, 0, 0, 0, time.UTC),
		CPU: sample.Resources{Usage: 1, Request: 1}}
	var cs []rollup.Contribution
	for _, p := range rollup.Split(&s, time.UTC) {
		cs = append(cs, rollup.Contribution{Entity: rollup.Entity{Project: s.Project, Cluster: s.Cluster, Namespace: s.Namespace}, Piece: p})
	}
	if _, err := store.Apply(ctx, cs, "test", nil, false); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	prices := filepath.Join(dir, "prices.yaml")
	testenv.ReplaceFile(t, prices, "prices:\n  - {item: Cpu, method: Effective, from: \"2020-01-01\", price: 0.5}\n")
	out := filepath.Join(dir, "out")
	var stderr testenv.LockedBuffer
	code := run([]string{"--redis-url", r.URL(), "--nats-url", n.URL(), "--timezone", "UTC", "--currency", "USD",
		"--pricing", prices, "--export-url", "file://" + out, "--from", "2026-11-03", "--to", "2026-11-03"}, &stderr)
	if code != 0 || !strings.Contains(stderr.String(), "backfill done") {
		t.Fatalf("exit %d, want 0 after \"backfill done\":\n%s", code, stderr.String())
	}
	raw, err := os.ReadFile(filepath.Join(out, exporter.ManifestPath(rollup.DayFromDate(2026, 11, 3))))
	if err != nil {
		t.Fatal(err)
	}
	var m exporter.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if m.Currency != "USD" || len(m.Days) != 1 || m.Days[0].ChargeDate != "2026-11-03" {
		t.Fatalf("manifest %s", raw)
	}
}
