package benchrun

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/alauda/costmeter/api"
	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/stream"
)

// Targets of issue 10.
const (
	TargetBurstFraction = 0.5                   // new-day burst rate / steady rate under the same load
	TargetMasterShare   = 0.5                   // largest master's share of rollup write commands
	TargetLongestCmd    = 10 * time.Millisecond // longest Redis command
)

// loadDay is the "today" of the under-load phase: July 1..29 are loaded
// first, then every namespace sends its first window of July 30 (the
// minutes after a billing midnight) and then more windows.
var loadDay = rollup.DayFromDate(2025, time.July, 30)

// loadFrom is the first day loaded before the burst: the month's index
// and masks then hold every namespace, as on any day of a month; only two
// days are loaded so the phase stays short.
var loadFrom = rollup.DayFromDate(2025, time.July, 28)

// loadQueries are what a console asks while ingest runs: today per
// namespace, and this month up to today.
var loadQueries = []struct{ name, query string }{
	{"namespace_all step=day today", "kind=namespace_all&step=day&start=2025-07-30&end=2025-07-30"},
	{"namespace_all step=month to today", "kind=namespace_all&step=month&start=2025-07-01&end=2025-07-30"},
	{"project_all step=month to today", "kind=project_all&step=month&start=2025-07-01&end=2025-07-30"},
	{"namespace_all step=week", "kind=namespace_all&step=week&start=2025-07-28&end=2025-07-30"},
}

// runUnderLoad measures, on a single Redis and then on a Redis Cluster of
// 3 masters and 3 replicas: the new-day burst, steady ingest at
// LoadNamespaces namespaces, queries meanwhile, each master's share of the
// rollup writes, and the longest Redis command.
func runUnderLoad(ctx context.Context, srv *servers, cfg Config, rep *Report, log *slog.Logger) error {
	if err := underLoad(ctx, srv, "single", srv.rdb, []*redis.Client{srv.rdb}, cfg, rep, log); err != nil {
		return fmt.Errorf("single redis: %w", err)
	}
	return onCluster(ctx, srv, cfg, "cluster", func(rdb redis.UniversalClient, masters []*redis.Client) error {
		return underLoad(ctx, srv, "cluster", rdb, masters, cfg, rep, log)
	})
}

// onCluster empties the single Redis, starts a Redis Cluster under
// srv.dir/sub, runs f on it (its client and its masters) and stops it.
func onCluster(ctx context.Context, srv *servers, cfg Config, sub string, f func(rdb redis.UniversalClient, masters []*redis.Client) error) error {
	if err := srv.reset(ctx); err != nil {
		return err
	}
	cl, err := startCluster(ctx, filepath.Join(srv.dir, sub), cfg.RedisNice)
	if err != nil {
		return err
	}
	defer cl.close()
	masters, err := cl.masters(ctx)
	if err != nil {
		return err
	}
	defer func() {
		for _, m := range masters {
			m.Close()
		}
	}()
	if err := f(cl.rdb, masters); err != nil {
		return fmt.Errorf("redis cluster: %w", err)
	}
	return nil
}

// loadPhases name the under-load phase's parts for its query latencies;
// the fourth stops the query clients.
var loadPhases = [...]string{"burst", "steady", "quiet", "stop"}

const (
	// quietRequests of each query are measured once ingest is done, or as
	// many as quietFor allows.
	quietRequests = 200
	quietFor      = 15 * time.Second
)

func underLoad(ctx context.Context, srv *servers, name string, rdb redis.UniversalClient, masters []*redis.Client, cfg Config, rep *Report, log *slog.Logger) error {
	sz := cfg.Sizes
	n := sz.LoadNamespaces
	store, err := rollup.NewStore(rdb, time.UTC, queryRetention)
	if err != nil {
		return err
	}
	if err := store.CheckTimezone(ctx); err != nil {
		return err
	}
	if err := store.LoadScripts(ctx); err != nil {
		return err
	}
	t0 := time.Now()
	pieces, err := loadDays(ctx, store, n, loadFrom, loadDay)
	if err != nil {
		return err
	}
	log.Info("loaded", "backend", name, "namespaces", n, "pieces", pieces, "seconds", time.Since(t0).Seconds())
	if err := stream.Ensure(ctx, srv.js, stream.DefaultConfig()); err != nil {
		return err
	}
	pub, err := collector.NewPublisher(srv.js, collector.PublisherConfig{}, log)
	if err != nil {
		return err
	}
	l := ledger{}
	windows := make([][]collector.Message, sz.LoadWindows+1)
	for w := range windows {
		start := loadDay.Start(time.UTC).Add(time.Duration(w) * time.Minute)
		s := make([]sample.Sample, n)
		for i := range s {
			s[i] = sample.Sample{Cluster: "c" + strconv.Itoa(i%queryClusters), Project: "p" + strconv.Itoa(i%queryProjects), Namespace: fmt.Sprintf("ns-%06d", i),
				Start: start, End: start.Add(time.Minute),
				CPU: sample.Resources{Usage: float64(i%97+1) / 10, Request: float64(i%97+1) / 5}, Memory: sample.Resources{Usage: float64(i%13+1) * 1e9}}
		}
		l.add(s)
		windows[w] = pub.Encode(s)
	}
	report := slowest(ctx, masters)
	reader := sdkmetric.NewManualReader()
	stop, err := startAggregator(ctx, srv, store, log, reader, cfg)
	if err != nil {
		return err
	}
	defer stop()
	for {
		if _, _, err := drained(ctx, srv.js); err == nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}

	// Queries all along, split by phase.
	addr, stopAPI, err := serveAPI(rdb)
	if err != nil {
		return err
	}
	defer stopAPI()
	base := "http://" + addr + api.PlatformPath + "?pageSize=20&"
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: sz.QueryClients}}
	defer client.CloseIdleConnections()
	// 0 burst, 1 steady, 2 quiet (ingest done: the same queries on the
	// same data with nothing else running), 3 stop.
	var phase atomic.Int32
	var mu sync.Mutex
	lats := map[string][]float64{}
	var qerr atomic.Value
	var wg sync.WaitGroup
	for c := range sz.QueryClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := c; ; r++ {
				p := phase.Load()
				if p == 3 {
					return
				}
				q := loadQueries[r%len(loadQueries)]
				page := 1 + (r/len(loadQueries))%max(1, n/20)
				if strings.HasPrefix(q.name, "project") {
					page = 1 + (r/len(loadQueries))%(queryProjects/20)
				}
				d, err := get(ctx, client, base+q.query+"&currentPage="+strconv.Itoa(page), nil)
				if err != nil {
					qerr.Store(fmt.Errorf("%s: %w", q.name, err))
					return
				}
				key := loadPhases[p] + " " + q.name
				mu.Lock()
				lats[key] = append(lats[key], float64(d.Microseconds())/1000)
				mu.Unlock()
			}
		}()
	}
	stopQueries := func() {
		phase.Store(3)
		wg.Wait()
	}
	defer stopQueries()

	writes := func() ([]int64, error) {
		out := make([]int64, len(masters))
		for i, m := range masters {
			var err error
			if out[i], err = writeCalls(ctx, m); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	w0, err := writes()
	if err != nil {
		return err
	}
	t0 = time.Now()
	if err := pub.PublishMessages(ctx, windows[0]); err != nil {
		return err
	}
	if err := waitDrained(ctx, srv.js, 8*time.Minute); err != nil {
		return err
	}
	burst := time.Since(t0).Seconds()
	phase.Store(1)
	w1, err := writes()
	if err != nil {
		return err
	}
	t0 = time.Now()
	for _, msgs := range windows[1:] {
		if err := pub.PublishMessages(ctx, msgs); err != nil {
			return err
		}
	}
	if err := waitDrained(ctx, srv.js, 8*time.Minute); err != nil {
		return err
	}
	steady := time.Since(t0).Seconds()
	w2, err := writes()
	if err != nil {
		return err
	}
	slow := report()
	phase.Store(2)
	quietEnough := func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, q := range loadQueries {
			if len(lats["quiet "+q.name]) < quietRequests {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(quietFor); !quietEnough() && time.Now().Before(deadline) && qerr.Load() == nil; {
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	stopQueries()
	if err, ok := qerr.Load().(error); ok && err != nil {
		return err
	}
	if err := stop(); err != nil {
		return err
	}

	prefix := fmt.Sprintf("%s, ns=%d: ", name, n)
	steadyRate := float64(n*sz.LoadWindows) / steady
	burstRate := float64(n) / burst
	rep.add(Row{Section: secLoad, Name: prefix + "steady ingest after midnight", Value: steadyRate, Unit: "samples/s",
		Note: fmt.Sprintf("%d namespaces × %d more windows of the new day, %d query clients meanwhile; July 28-29 loaded first (%d namespace-days)", n, sz.LoadWindows, sz.QueryClients, pieces)})
	r := burstRate / steadyRate
	rep.add(Row{Section: secLoad, Name: prefix + "new-day burst (first window of the day)", Value: burstRate, Unit: "samples/s",
		Note: fmt.Sprintf("every namespace's first sample of the day: %d samples in %.1f s", n, burst)})
	rep.add(Row{Section: secLoad, Name: prefix + "new-day burst / steady", Value: r, Unit: "×",
		Target: fmt.Sprintf(">= %.1f", TargetBurstFraction), Met: met(r >= TargetBurstFraction)})
	for _, ph := range loadPhases[:3] {
		for _, q := range loadQueries {
			d := lats[ph+" "+q.name]
			if len(d) == 0 {
				continue
			}
			p95 := percentile(d, 0.95)
			when := "during " + ph
			if ph == "quiet" {
				when = "quiet, after ingest"
			}
			rep.add(Row{Section: secLoad, Name: fmt.Sprintf("%squery p95 %s: %s", prefix, when, q.name), Value: p95, Unit: "ms",
				Target: fmt.Sprintf("< %d", TargetQueryP95.Milliseconds()), Met: met(p95 < float64(TargetQueryP95.Milliseconds())),
				Note: fmt.Sprintf("%d requests, p50 %.1f ms, p99 %.1f ms", len(d), percentile(d, 0.5), percentile(d, 0.99))})
		}
	}
	if len(masters) > 1 {
		for _, span := range []struct {
			name     string
			from, to []int64
		}{{"burst", w0, w1}, {"steady", w1, w2}} {
			var total, top int64
			var parts []string
			for i := range masters {
				d := span.to[i] - span.from[i]
				total += d
				top = max(top, d)
				parts = append(parts, strconv.FormatInt(d, 10))
			}
			share := float64(top) / float64(max(total, 1))
			row := Row{Section: secLoad, Name: fmt.Sprintf("%slargest master's share of rollup writes, %s", prefix, span.name), Value: 100 * share, Unit: "%",
				Note: "INFO commandstats write calls per master (scripts' inner calls included): " + strings.Join(parts, " / ")}
			if span.name == "steady" {
				row.Target, row.Met = fmt.Sprintf("<= %.0f", 100*TargetMasterShare), met(share <= TargetMasterShare)
			}
			rep.add(row)
		}
	}
	longest := met(slow.worst < TargetLongestCmd)
	if slow.err != nil { // not measured: neither met nor missed
		longest, slow.what = nil, "not measured: "+slow.err.Error()
	}
	rep.add(Row{Section: secLoad, Name: prefix + "longest redis command (SLOWLOG)", Value: float64(slow.worst.Microseconds()) / 1000, Unit: "ms",
		Target: fmt.Sprintf("< %d", TargetLongestCmd.Milliseconds()), Met: longest,
		Note: fmt.Sprintf("%s; LATENCY LATEST worst %d ms; %d commands took 10 ms or more, %d 5 ms or more; evalsha µs %s; over the burst, the steady windows and the queries",
			slow.what, slow.latency.Milliseconds(), slow.over10, slow.over5, slow.scriptPercentiles)})
	return l.verify(ctx, store)
}
