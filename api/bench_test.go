package api_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/alauda/costmeter/api"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/testenv"
)

// BenchmarkQuery measures pages of 20 rows at 10,000 namespaces (200
// projects, 3 clusters, 31 days of July 2025 each), and at 100,000 when
// BENCH_LARGE=1 (loading takes minutes). Each query runs serially (ns/op is
// one client's latency) and with 10 concurrent clients, which reports the
// latency percentiles p50-ms, p95-ms and p99-ms.
//
//	go test -run '^$' -bench BenchmarkQuery -benchtime 2000x ./api/
func BenchmarkQuery(b *testing.B) {
	b.Run("ns=10000", func(b *testing.B) { benchQueries(b, 10_000) })
	b.Run("ns=100000", func(b *testing.B) {
		if os.Getenv("BENCH_LARGE") != "1" {
			b.Skip("set BENCH_LARGE=1 to load 100,000 namespaces")
		}
		benchQueries(b, 100_000)
	})
}

func benchQueries(b *testing.B, namespaces int) {
	r := testenv.StartRedis(b)
	rdb := r.Client()
	loadBench(b, rdb, namespaces)
	srv, err := api.New(api.DefaultConfig(), rollup.NewReader(rdb), time.UTC)
	if err != nil {
		b.Fatal(err)
	}
	h := srv.Handler()
	base := "/platform/cost.alauda.io/v1beta1/costs/usage?start=2025-07-01&end=2025-07-31&kind=namespace_all&pageSize=20"
	deep := strconv.Itoa(namespaces * 31 / 20 / 2) // a page in the middle of step=day
	for _, q := range []struct{ name, query string }{
		{"step=day/page=20", "&step=day&currentPage=20"},
		{"step=day/page=middle", "&step=day&currentPage=" + deep},
		{"step=week/page=20", "&step=week&currentPage=20"},
		{"step=month/page=20", "&step=month&currentPage=20"},
		{"project=p7/namespace_all/step=day", "&step=day&currentPage=3"},
	} {
		path := base + q.query
		if q.name == "project=p7/namespace_all/step=day" {
			path = "/platform/cost.alauda.io/v1beta1/projects/p7/costs/usage?start=2025-07-01&end=2025-07-31&kind=namespace_all&pageSize=20" + q.query
		}
		if rec := serve(h, path); rec.Code != http.StatusOK {
			b.Fatalf("%s: %d %s", q.name, rec.Code, rec.Body)
		}
		b.Run(q.name+"/serial", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if rec := serve(h, path); rec.Code != http.StatusOK {
					b.Fatalf("%d %s", rec.Code, rec.Body)
				}
			}
		})
		b.Run(q.name+"/clients=10", func(b *testing.B) {
			var (
				mu  sync.Mutex
				all []time.Duration
			)
			b.SetParallelism(max(1, 10/runtime.GOMAXPROCS(0)))
			b.RunParallel(func(pb *testing.PB) {
				var mine []time.Duration
				for pb.Next() {
					t0 := time.Now()
					rec := serve(h, path)
					mine = append(mine, time.Since(t0))
					if rec.Code != http.StatusOK {
						b.Errorf("%d %s", rec.Code, rec.Body)
						return
					}
				}
				mu.Lock()
				all = append(all, mine...)
				mu.Unlock()
			})
			slices.Sort(all)
			if len(all) > 0 {
				pct := func(p float64) float64 {
					return float64(all[min(len(all)-1, int(float64(len(all))*p))].Microseconds()) / 1000
				}
				b.ReportMetric(pct(0.50), "p50-ms")
				b.ReportMetric(pct(0.95), "p95-ms")
				b.ReportMetric(pct(0.99), "p99-ms")
			}
		})
	}
}

func serve(h http.Handler, path string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec
}

// loadBench writes namespaces × 31 days through Store.Apply, a few
// thousand contributions per batch.
func loadBench(b *testing.B, rdb redis.UniversalClient, namespaces int) {
	b.Helper()
	store, err := rollup.NewStore(rdb, time.UTC, retention)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	t0 := time.Now()
	const batch = 4000
	cs := make([]rollup.Contribution, 0, batch)
	flush := func() {
		if len(cs) == 0 {
			return
		}
		if _, err := store.Apply(ctx, cs, "bench", nil, false); err != nil {
			b.Fatal(err)
		}
		cs = cs[:0]
	}
	first := rollup.DayFromDate(2025, time.July, 1)
	for d := first; d < first+31; d++ {
		for i := range namespaces {
			var v rollup.Values
			cpu := int64(i%97+1) * 86400 * rollup.Scale / 10
			v[rollup.Field(rollup.Cpu, rollup.Usage)] = cpu
			v[rollup.Field(rollup.Cpu, rollup.Request)] = cpu * 2
			v[rollup.Field(rollup.Cpu, rollup.Effective)] = cpu * 2
			v[rollup.Field(rollup.Memory, rollup.Usage)] = int64(i%13+1) * 86400 * rollup.Scale
			cs = append(cs, rollup.Contribution{
				Entity: rollup.Entity{Project: "p" + strconv.Itoa(i%200), Cluster: "c" + strconv.Itoa(i%3), Namespace: fmt.Sprintf("ns-%06d", i)},
				Piece:  rollup.Piece{Day: d, From: 0, To: 86400, Values: v},
			})
			if len(cs) == batch {
				flush()
			}
		}
	}
	flush()
	b.Logf("loaded %d namespaces × 31 days in %s", namespaces, time.Since(t0).Round(time.Millisecond))
}
