package rollup_test

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/testenv"
)

// BenchmarkApplySteady applies what steady ingest sends at 10,000
// namespaces: every namespace's next one-minute window, in batches of
// 2,000 pieces (one round trip) or 10,000 (five),
// through Store.Apply with events asked for, on a Redis of its own.
// Beside the wall time it reports Redis's own time per piece (INFO
// commandstats: the scripts, and the commands they call by name), the
// figure that bounds ingest on a busy Redis.
//
// keys=2 keeps two allocation label keys (rollup.WithGroupKeys: team, of
// 1,000 values, and example.com/env, of two, absent on a tenth of the
// namespaces), keys=0 none: compare their wall-µs/piece in one run.
// bytes/ns-day is Redis's used_memory grown by the first day of every
// namespace (their rollups, sums, coverage, rankings and indexes),
// divided by the namespaces.
func BenchmarkApplySteady(b *testing.B) {
	for _, keys := range []int{0, 2} {
		for _, batch := range []int{2000, 10000} {
			b.Run(fmt.Sprintf("keys=%d/batch=%d", keys, batch), func(b *testing.B) { benchmarkApplySteady(b, batch, keys) })
		}
	}
}

func benchmarkApplySteady(b *testing.B, batch, nkeys int) {
	const (
		namespaces = 10000
		projects   = 100
	)
	r := testenv.StartRedis(b)
	rdb := r.Client()
	ctx := context.Background()
	keys := []string{"team", "example.com/env"}[:nkeys]
	store, err := rollup.NewStore(rdb, time.UTC, 400*24*time.Hour, rollup.WithGroupKeys(keys))
	if err != nil {
		b.Fatal(err)
	}
	day := rollup.DayOf(time.Now().UTC(), time.UTC)
	piece := func(ns, window int) rollup.Contribution {
		var v rollup.Values
		for f := range v {
			v[f] = int64(1000*(f+1) + ns%97)
		}
		labels := map[string]string{"team": "t" + strconv.Itoa(ns%1000)}
		if ns%10 != 0 {
			labels["example.com/env"] = []string{"prod", "dev"}[ns%2]
		}
		return rollup.Contribution{
			Entity: rollup.Entity{Project: "p" + strconv.Itoa(ns%projects), Cluster: "c1", Namespace: "ns-" + strconv.Itoa(ns)},
			Labels: labels,
			Piece:  rollup.Piece{Day: day, From: int32(60 * window), To: int32(60 * (window + 1)), Values: v},
		}
	}
	apply := func(window, from int) {
		cs := make([]rollup.Contribution, 0, batch)
		for ns := from; ns < from+batch; ns++ {
			cs = append(cs, piece(ns, window))
		}
		res, err := store.Apply(ctx, cs, "bench", nil, true)
		if err != nil {
			b.Fatal(err)
		}
		for i, v := range res.Verdicts {
			if v != rollup.Applied {
				b.Fatalf("piece %d: verdict %c", i, v)
			}
		}
	}
	// Every namespace has its first window: what follows is steady state.
	before := usedMemory(b, ctx, r)
	for from := 0; from < namespaces; from += batch {
		apply(0, from)
	}
	perNsDay := float64(usedMemory(b, ctx, r)-before) / namespaces
	if err := rdb.ConfigResetStat(ctx).Err(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := i * batch
		apply(1+k/namespaces, k%namespaces)
	}
	b.StopTimer()
	pieces := float64(b.N * batch)
	stats := commandStat(b, ctx, r, "usec")
	var total float64
	var parts []string
	for name, usec := range stats {
		if strings.HasPrefix(name, "eval") {
			total += usec
		}
		parts = append(parts, fmt.Sprintf("%s=%.1f", name, usec/pieces))
	}
	sort.Strings(parts)
	b.ReportMetric(total/pieces, "redis-µs/piece")
	b.ReportMetric(perNsDay, "bytes/ns-day")
	// Commands the scripts called per piece: unlike the times, free of
	// the machine's load.
	var calls float64
	for name, n := range commandStat(b, ctx, r, "calls") {
		if !strings.HasPrefix(name, "eval") && name != "config|resetstat" {
			calls += n
		}
	}
	b.ReportMetric(calls/pieces, "redis-calls/piece")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/pieces/1e3, "wall-µs/piece")
	b.Logf("redis µs per piece by command: %s", strings.Join(parts, " "))
}

// usedMemory returns INFO memory's used_memory.
func usedMemory(b *testing.B, ctx context.Context, r *testenv.Redis) int64 {
	b.Helper()
	info, err := r.Info(ctx, "memory")
	if err != nil {
		b.Fatal(err)
	}
	n, err := strconv.ParseInt(info["used_memory"], 10, 64)
	if err != nil {
		b.Fatalf("used_memory %q: %v", info["used_memory"], err)
	}
	return n
}

// commandStat returns one field (usec, calls) of each command's INFO
// commandstats line.
func commandStat(b *testing.B, ctx context.Context, r *testenv.Redis, field string) map[string]float64 {
	b.Helper()
	info, err := r.Info(ctx, "commandstats")
	if err != nil {
		b.Fatal(err)
	}
	out := map[string]float64{}
	for name, stats := range info {
		for _, kv := range strings.Split(stats, ",") {
			if v, ok := strings.CutPrefix(kv, field+"="); ok {
				f, _ := strconv.ParseFloat(v, 64)
				out[strings.TrimPrefix(name, "cmdstat_")] = f
			}
		}
	}
	return out
}
