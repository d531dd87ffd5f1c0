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
func BenchmarkApplySteady(b *testing.B) {
	for _, batch := range []int{2000, 10000} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) { benchmarkApplySteady(b, batch) })
	}
}

func benchmarkApplySteady(b *testing.B, batch int) {
	const (
		namespaces = 10000
		projects   = 100
	)
	r := testenv.StartRedis(b)
	rdb := r.Client()
	ctx := context.Background()
	store, err := rollup.NewStore(rdb, time.UTC, 400*24*time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	day := rollup.DayOf(time.Now().UTC(), time.UTC)
	piece := func(ns, window int) rollup.Contribution {
		var v rollup.Values
		for f := range v {
			v[f] = int64(1000*(f+1) + ns%97)
		}
		return rollup.Contribution{
			Entity: rollup.Entity{Project: "p" + strconv.Itoa(ns%projects), Cluster: "c1", Namespace: "ns-" + strconv.Itoa(ns)},
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
	for from := 0; from < namespaces; from += batch {
		apply(0, from)
	}
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
	stats := commandStats(b, ctx, r)
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
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/pieces/1e3, "wall-µs/piece")
	b.Logf("redis µs per piece by command: %s", strings.Join(parts, " "))
}

// commandStats returns each command's total µs from INFO commandstats.
func commandStats(b *testing.B, ctx context.Context, r *testenv.Redis) map[string]float64 {
	b.Helper()
	info, err := r.Info(ctx, "commandstats")
	if err != nil {
		b.Fatal(err)
	}
	out := map[string]float64{}
	for name, stats := range info {
		for _, kv := range strings.Split(stats, ",") {
			if v, ok := strings.CutPrefix(kv, "usec="); ok {
				f, _ := strconv.ParseFloat(v, 64)
				out[strings.TrimPrefix(name, "cmdstat_")] = f
			}
		}
	}
	return out
}
