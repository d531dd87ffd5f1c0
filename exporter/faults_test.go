package exporter_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/alauda/costmeter/exporter"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
)

// TestLateSampleRewritesOnlyItsDay exports, applies a late sample on a
// delivered day, exports again: only that day's files and the manifest
// change, the delivered rows stay and correction rows carry the new
// namespace; a re-run after losing the manifest is byte-identical.
func TestLateSampleRewritesOnlyItsDay(t *testing.T) {
	e := newEnv(t)
	x := e.exporter(t, e.config("file://"+e.dir))
	ctx := context.Background()
	if err := x.Backfill(ctx, firstDay, lastDay); err != nil {
		t.Fatal(err)
	}
	before := files(t, e.dir)
	late := rollup.DayFromDate(2026, time.November, 3)
	e.load(t, []sample.Sample{{Cluster: "east", Project: "team", Namespace: "late",
		Start: time.Date(2026, time.November, 3, 1, 0, 0, 0, time.UTC), End: time.Date(2026, time.November, 3, 2, 0, 0, 0, time.UTC),
		CPU: sample.Resources{Usage: 2, Request: 3, Quota: 4}}})
	if err := x.Backfill(ctx, firstDay, lastDay); err != nil {
		t.Fatal(err)
	}
	after := files(t, e.dir)
	changed := map[string]bool{}
	for p, b := range after {
		if !bytes.Equal(before[p], b) {
			changed[p] = true
		}
	}
	want := map[string]bool{exporter.ParquetPath(late): true, exporter.CSVPath(late): true, exporter.ManifestPath(late): true}
	if len(changed) != len(want) {
		t.Fatalf("changed %v, want %v", changed, want)
	}
	for p := range want {
		if !changed[p] {
			t.Fatalf("changed %v, want %v", changed, want)
		}
	}
	res := duckdb(t, `SELECT ResourceName, x_Item, CAST(ConsumedQuantity AS VARCHAR) AS q FROM read_parquet(`+
		sqlString(filepath.Join(e.dir, exporter.ParquetPath(late)))+`) WHERE ChargeClass = 'Correction' ORDER BY x_Item`)
	if len(res[0]) != 3 {
		t.Fatalf("%d correction rows, want 3 (the late namespace's items): %v", len(res[0]), res[0])
	}
	if r := res[0][0]; val(r["ResourceName"]) != "late" || val(r["x_Item"]) != "Cpu" || val(r["q"]) != "3.000000000" {
		t.Fatalf("Cpu correction %v, want late 3 core-hours (Effective = max(usage, request))", r)
	}
	checkManifest(t, e.dir, late, 7)

	// A re-run over unchanged data after losing the manifest.
	if err := os.Remove(filepath.Join(e.dir, exporter.ManifestPath(late))); err != nil {
		t.Fatal(err)
	}
	if err := x.Backfill(ctx, firstDay, lastDay); err != nil {
		t.Fatal(err)
	}
	again := files(t, e.dir)
	if len(again) != len(after) {
		t.Fatalf("%d files after the re-run, %d before", len(again), len(after))
	}
	for p, b := range after {
		if !bytes.Equal(again[p], b) {
			t.Errorf("%s differs after a re-run over unchanged data", p)
		}
	}
}

// TestLeaseExcludes: while one exporter holds a billing period's lease,
// another cannot take it; released, it can.
func TestLeaseExcludes(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a, err := exporter.NewLeases(ctx, e.js, "file:///x", "a", 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	b, err := exporter.NewLeases(ctx, e.js, "file:///x", "b", 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	la, err := a.Acquire(ctx, "2026-11")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Acquire(ctx, "2026-11"); !errors.Is(err, exporter.ErrLeaseHeld) {
		t.Fatalf("second holder: %v, want ErrLeaseHeld", err)
	}
	if err := la.Release(ctx, a, "2026-11"); err != nil {
		t.Fatal(err)
	}
	lb, err := b.Acquire(ctx, "2026-11")
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	_ = lb.Release(ctx, b, "2026-11")
}
