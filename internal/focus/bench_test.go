package focus_test

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/alauda/costmeter/internal/focus"
	"github.com/alauda/costmeter/internal/rollup"
)

// BenchmarkWriteMonth builds and writes the origin rows of a month of
// 30 days at 100,000 namespaces (3,000,000 rows per item, 9,000,000 in
// all) as Parquet, one file a day as the exporter does, and reports
// rows/s and the process's peak RSS (VmHWM). Run it alone:
//
//	go test -run '^$' -bench WriteMonth -benchtime 1x ./internal/focus/
func BenchmarkWriteMonth(b *testing.B) {
	namespaces, days := 100_000, 30
	if s := os.Getenv("FOCUS_BENCH_NAMESPACES"); s != "" {
		namespaces, _ = strconv.Atoi(s)
	}
	if s := os.Getenv("FOCUS_BENCH_DAYS"); s != "" {
		days, _ = strconv.Atoi(s)
	}
	p, _ := focus.PriceOf(0.35)
	loc := time.UTC
	is := focus.Issuer{AccountID: "acme", AccountName: "Acme", Name: "platform", Currency: "EUR"}
	b.ResetTimer()
	start := time.Now()
	var rows int64
	for range b.N {
		for d := range days {
			day := focus.NewDay(is, rollup.DayFromDate(2026, time.March, 1+d), loc)
			h := sha256.New()
			w := focus.NewParquetWriter(io.MultiWriter(io.Discard, h))
			batch := make([]focus.Row, 0, 1024)
			var v rollup.Values
			for n := range namespaces {
				e := rollup.Entity{Project: "project-" + strconv.Itoa(n/50), Cluster: "cluster-" + strconv.Itoa(n%7), Namespace: "ns-" + strconv.Itoa(n)}
				for i := range v {
					v[i] = int64(n*131+d*7+i) * 1_000_003
				}
				for _, it := range rollup.Items() {
					r, err := day.Origin(focus.Charge{Entity: e, Item: it, Values: &v, Price: &p, CoverageUnits: 999_000_000})
					if err != nil {
						b.Fatal(err)
					}
					batch = append(batch, r)
				}
				if len(batch) >= 1000 {
					if err := w.Write(batch); err != nil {
						b.Fatal(err)
					}
					batch = batch[:0]
				}
			}
			if err := w.Write(batch); err != nil {
				b.Fatal(err)
			}
			if err := w.Close(); err != nil {
				b.Fatal(err)
			}
			rows += w.Rows()
		}
	}
	el := time.Since(start)
	b.ReportMetric(float64(rows)/el.Seconds(), "rows/s")
	b.ReportMetric(float64(rows)/cpuSeconds(), "rows/cpu-s")
	b.ReportMetric(float64(peakRSS())/(1<<20), "peak-RSS-MiB")
}

// cpuSeconds is the process's user and system CPU time so far: on a
// shared machine rows per CPU-second is what the code costs.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 1
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// peakRSS reads VmHWM from /proc/self/status (0 where there is none).
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(v), " kB"), &kb)
			return kb << 10
		}
	}
	return 0
}
