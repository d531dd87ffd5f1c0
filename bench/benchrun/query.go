package benchrun

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/alauda/costmeter/api"
	"github.com/alauda/costmeter/internal/rollup"
)

// queryRetention keeps the fixed July 2025 data alive whatever today is.
const queryRetention = 20 * 365 * 24 * time.Hour

// benchQuery is one query of the API's set, over July 2025, asking for
// the page of 20 rows in the middle of rows.
type benchQuery struct {
	name  string
	query string
	rows  func(namespaces int) int
	// top asks for the first page (orderBy=usage, the console's chart)
	// instead of the middle one; its p95 target is TargetOrderByP95 and it
	// has no scaling target.
	top bool
}

// projects and clusters of the query data.
const (
	queryProjects = 200
	queryClusters = 3
)

var querySet = []benchQuery{
	{"namespace_all step=day", "kind=namespace_all&step=day", func(n int) int { return n * 31 }, false},
	{"namespace_all step=month", "kind=namespace_all&step=month", func(n int) int { return n }, false},
	{"project_all step=day", "kind=project_all&step=day", func(int) int { return queryProjects * 31 }, false},
	{"project_all step=month", "kind=project_all&step=month", func(int) int { return queryProjects }, false},
	{"namespace_all step=day orderBy=usage", "kind=namespace_all&step=day&orderBy=usage", func(n int) int { return n * 31 }, true},
}

// url is the query's path and parameters at n namespaces.
func (q benchQuery) url(n int) string {
	page := max(1, q.rows(n)/20/2)
	if q.top {
		page = 1
	}
	return api.PlatformPath + "?start=2025-07-01&end=2025-07-31&pageSize=20&currentPage=" + strconv.Itoa(page) + "&" + q.query
}

func runQueries(ctx context.Context, srv *servers, cfg Config, rep *Report, log *slog.Logger) error {
	sz := cfg.Sizes
	p95 := map[string][]float64{}
	for i, n := range sz.QueryNamespaces {
		if i > 0 {
			if err := srv.reset(ctx); err != nil {
				return err
			}
		}
		store, err := newStore(ctx, srv, queryRetention)
		if err != nil {
			return err
		}
		before, err := redisUsedMemory(ctx, srv.rdb)
		if err != nil {
			return err
		}
		t0 := time.Now()
		rcpu := redisCPU(ctx, srv.rdb)
		pieces, err := load(ctx, store, n)
		if err != nil {
			return err
		}
		el := time.Since(t0).Seconds()
		busy := 100 * (redisCPU(ctx, srv.rdb) - rcpu) / el
		log.Info("loaded", "namespaces", n, "seconds", el)
		rep.add(Row{Section: secQuery, Name: fmt.Sprintf("ns=%d: load through rollup.Store.Apply (Lua)", n), Value: float64(pieces) / el, Unit: "pieces/s",
			Note: fmt.Sprintf("%d namespace-days in %.1f s, batches of 4000, 4 goroutines: the aggregator's write path without NATS; redis-server busy %.0f%%", pieces, el, busy)})
		after, err := redisUsedMemory(ctx, srv.rdb)
		if err != nil {
			return err
		}
		// Loading grows the AOF past its rewrite threshold: Redis forks a
		// child that rewrites it, which on two cores competes with the
		// queries. Queries are measured on a settled server.
		if err := waitPersistenceIdle(ctx, srv.rdb, 5*time.Minute); err != nil {
			return err
		}
		rep.add(Row{Section: secMemory, Name: fmt.Sprintf("ns=%d: redis used_memory per namespace-day", n), Value: (after - before) / float64(pieces), Unit: "bytes",
			Note: fmt.Sprintf("INFO used_memory grew %.0f MiB for %d namespace-days (all scopes, indexes, coverage)", (after-before)/mib, pieces)})

		lats, rss, heap, note, err := serveQueries(ctx, srv, sz, n)
		if err != nil {
			return err
		}
		for _, q := range querySet {
			d := lats[q.name]
			pct := func(p float64) float64 { return percentile(d, p) }
			p95[q.name] = append(p95[q.name], pct(0.95))
			rep.add(Row{Section: secQuery, Name: fmt.Sprintf("ns=%d: %s, page of 20, p50", n, q.name), Value: pct(0.50), Unit: "ms"})
			target := TargetQueryP95
			if q.top {
				target = TargetOrderByP95
			}
			rep.add(Row{Section: secQuery, Name: fmt.Sprintf("ns=%d: %s, page of 20, p95", n, q.name), Value: pct(0.95), Unit: "ms",
				Target: fmt.Sprintf("< %d", target.Milliseconds()), Met: met(pct(0.95) < float64(target.Milliseconds()))})
			rep.add(Row{Section: secQuery, Name: fmt.Sprintf("ns=%d: %s, page of 20, p99", n, q.name), Value: pct(0.99), Unit: "ms",
				Note: fmt.Sprintf("%d requests, %d concurrent clients over HTTP on 127.0.0.1", len(d), sz.QueryClients)})
		}
		rep.add(Row{Section: secMemory, Name: fmt.Sprintf("ns=%d: peak RSS, API process under query load", n), Value: float64(rss) / mib, Unit: "MiB", Note: note})
		rep.add(Row{Section: secMemory, Name: fmt.Sprintf("ns=%d: peak Go heap (objects), API process", n), Value: float64(heap) / mib, Unit: "MiB"})
	}
	small, large := sz.QueryNamespaces[0], sz.QueryNamespaces[1]
	for _, q := range querySet {
		if q.top {
			continue
		}
		v := p95[q.name]
		r := v[1] / v[0]
		rep.add(Row{Section: secQuery, Name: fmt.Sprintf("p95 ratio ns=%d / ns=%d: %s", large, small, q.name), Value: r, Unit: "×",
			Target: fmt.Sprintf("<= %.0f", TargetQueryScaling), Met: met(r <= TargetQueryScaling)})
	}
	return nil
}

// load writes n namespaces × 31 days of July 2025 (200 projects, 3
// clusters) through Store.Apply and returns how many pieces it wrote.
func load(ctx context.Context, store *rollup.Store, n int) (int, error) {
	first := rollup.DayFromDate(2025, time.July, 1)
	return loadDays(ctx, store, n, first, first+31)
}

// loadDays writes n namespaces × the days from first until before end.
func loadDays(ctx context.Context, store *rollup.Store, n int, first, end rollup.Day) (int, error) {
	return loadSpan(ctx, store, n, queryClusters, first, end, 86400)
}

// preloadCPU is namespace i's CPU usage over secs seconds as loadSpan
// writes it ((i%97+1)/10 cores), in fixed-point units.
func preloadCPU(i int, secs int32) int64 {
	return int64(i%97+1) * int64(secs) * rollup.Scale / 10
}

// loadSpan writes n namespaces (in nClusters clusters) × the days from
// first until before end, each a piece of the whole day but the last,
// which covers [0, lastTo) seconds of its day.
func loadSpan(ctx context.Context, store *rollup.Store, n, nClusters int, first, end rollup.Day, lastTo int32) (int, error) {
	const batch, workers = 4000, 4
	total := n * int(end-first)
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cs := make([]rollup.Contribution, 0, batch)
			for j := w * batch; j < total; j += workers * batch {
				cs = cs[:0]
				for k := j; k < min(j+batch, total); k++ {
					d, i := first+rollup.Day(k/n), k%n
					to := int32(86400)
					if d == end-1 {
						to = lastTo
					}
					var v rollup.Values
					cpu := preloadCPU(i, to)
					v[rollup.Field(rollup.Cpu, rollup.Usage)] = cpu
					v[rollup.Field(rollup.Cpu, rollup.Request)] = cpu * 2
					v[rollup.Field(rollup.Cpu, rollup.Effective)] = cpu * 2
					v[rollup.Field(rollup.Memory, rollup.Usage)] = int64(i%13+1) * int64(to) * rollup.Scale
					cs = append(cs, rollup.Contribution{
						Entity: rollup.Entity{Project: "p" + strconv.Itoa(i%queryProjects), Cluster: "c" + strconv.Itoa(i%nClusters), Namespace: fmt.Sprintf("ns-%06d", i)},
						Piece:  rollup.Piece{Day: d, From: 0, To: to, Values: v},
					})
				}
				if _, err := store.Apply(ctx, cs, "bench", nil, false); err != nil {
					errc <- fmt.Errorf("load rollups: %w", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	return total, <-errc
}

// serveQueries serves the API on 127.0.0.1 and has QueryClients clients
// send every query QueryRequests times each, in an order rotated per
// client. It returns each query's latencies in milliseconds and the
// process's peak RSS and heap meanwhile.
func serveQueries(ctx context.Context, srv *servers, sz Sizes, n int) (map[string][]float64, uint64, uint64, string, error) {
	addr, stopAPI, err := serveAPI(srv.rdb)
	if err != nil {
		return nil, 0, 0, "", err
	}
	defer stopAPI()
	base := "http://" + addr
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: sz.QueryClients}}
	defer client.CloseIdleConnections()

	// One request each first: it checks the answer, and builds the month
	// range index, a cache that lives an hour, as a real console would.
	for _, q := range querySet {
		var resp api.Response
		if _, err := get(ctx, client, base+q.url(n), &resp); err != nil {
			return nil, 0, 0, "", fmt.Errorf("%s: %w", q.name, err)
		}
		if len(resp.Items) != 20 || resp.Total != q.rows(n) {
			return nil, 0, 0, "", fmt.Errorf("%s: %d rows of %d, want 20 of %d", q.name, len(resp.Items), resp.Total, q.rows(n))
		}
	}
	w := watchMemory()
	var mu sync.Mutex
	lats := map[string][]float64{}
	var wg sync.WaitGroup
	errc := make(chan error, sz.QueryClients)
	for c := range sz.QueryClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := map[string][]float64{}
			for r := range sz.QueryRequests * len(querySet) {
				q := querySet[(r+c)%len(querySet)]
				d, err := get(ctx, client, base+q.url(n), nil)
				if err != nil {
					errc <- fmt.Errorf("%s: %w", q.name, err)
					return
				}
				mine[q.name] = append(mine[q.name], float64(d.Microseconds())/1000)
			}
			mu.Lock()
			for k, v := range mine {
				lats[k] = append(lats[k], v...)
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errc)
	rss, heap, _ := w.done()
	if err := <-errc; err != nil {
		return nil, 0, 0, "", err
	}
	return lats, rss, heap, w.note(), nil
}

// get fetches url, fails unless it answers 200, decodes the body into out
// when out is not nil, and returns the time to the last byte.
func get(ctx context.Context, c *http.Client, url string, out any) (time.Duration, error) {
	t0 := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	d := time.Since(t0)
	if err != nil {
		return 0, fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %d: %.300s", resp.StatusCode, body)
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return 0, fmt.Errorf("decode answer: %w", err)
		}
	}
	return d, nil
}

// percentile is the nearest-rank percentile of ms (sorted in place).
func percentile(ms []float64, p float64) float64 {
	if len(ms) == 0 {
		return 0
	}
	slices.Sort(ms)
	i := int(float64(len(ms))*p+0.999999) - 1
	return ms[min(max(i, 0), len(ms)-1)]
}

// waitPersistenceIdle waits until Redis runs no AOF rewrite or snapshot.
func waitPersistenceIdle(ctx context.Context, rdb redis.UniversalClient, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		info, err := rdb.Info(ctx, "persistence").Result()
		if err != nil {
			return fmt.Errorf("read redis persistence info: %w", err)
		}
		busy := false
		for _, f := range []string{"aof_rewrite_in_progress:1", "aof_rewrite_scheduled:1", "rdb_bgsave_in_progress:1"} {
			if strings.Contains(info, f) {
				busy = true
			}
		}
		if !busy {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis still rewriting its AOF after %s", within)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// serveAPI serves the usage API on rdb on a loopback port, as the console
// reaches it, and returns its address and how to stop it.
func serveAPI(rdb redis.UniversalClient) (addr string, stop func(), err error) {
	a, err := api.New(api.Config{Listen: "127.0.0.1:0", Currency: "CNY"}, rollup.NewReader(rdb), time.UTC)
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("listen: %w", err)
	}
	hs := &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	return ln.Addr().String(), func() { _ = hs.Close() }, nil
}
