package benchrun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/alauda/costmeter/api"
	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/internal/event"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/stream"
)

// The live phase: traffic as collectors really send it (issue 24). Every
// collector publishes its namespaces' one-minute windows at each minute
// boundary, the run crosses a billing midnight, and dashboard users query
// meanwhile, each about once a second.
//
// The windows' timestamps are virtual: window k covers the minute k -
// LiveMidnight minutes from the midnight starting liveDay, so the windows
// from LiveMidnight on are every namespace's first of the day. The pacing
// is real: window k is published at boundary k = T0 + k × LiveMinute (a
// minute in full mode, a few seconds in quick mode), and its end is that
// boundary: freshness is measured from it.

// Targets of issue 24.
const (
	TargetLiveFreshnessP99 = 5 * time.Second        // window end to rollup event and to API answer
	TargetLiveQueryP95     = 25 * time.Millisecond  // dashboard queries, whole run and the minute after midnight
	TargetLiveQueryP99     = 100 * time.Millisecond // same
	TargetMidnightBurst    = 20_000                 // first-of-day samples/s, boundary to the last applied
)

// liveDay is the new day of the live phase; July 28 and the part of July
// 29 before the first window are loaded first, so the month's index and
// masks hold every namespace, as on any day of a month.
var liveDay = rollup.DayFromDate(2025, time.July, 30)

const (
	// liveProjects are the projects the namespaces belong to (i % 200).
	liveProjects = queryProjects
	// liveEventSample is about how many namespaces' rollup events are
	// followed (those of the first projects): every window of each.
	liveEventSample = 500
	// liveAPIPoll is how often a probe asks the API whether its window
	// shows: the API freshness figures are accurate to it.
	liveAPIPoll = 100 * time.Millisecond
	// liveWait bounds the wait for a window to be applied and for a
	// probe's answer; one later counts as liveWait (a lower bound).
	liveWait = 2 * time.Minute
	// liveApplyPoll is how often the consumer's ack floor is read to
	// find when a window was applied.
	liveApplyPoll = 20 * time.Millisecond
)

// runLive runs the live traffic on a single Redis and on a Redis Cluster
// of 3 masters and 3 replicas (cfg.LiveBackends chooses).
func runLive(ctx context.Context, srv *servers, cfg Config, rep *Report, log *slog.Logger) error {
	if cfg.wantsBackend("single") {
		if err := live(ctx, srv, "single", srv.rdb, []*redis.Client{srv.rdb}, cfg, rep, log); err != nil {
			return fmt.Errorf("single redis: %w", err)
		}
	}
	if !cfg.wantsBackend("cluster") {
		return nil
	}
	return onCluster(ctx, srv, cfg, "live-cluster", func(rdb redis.UniversalClient, masters []*redis.Client) error {
		return live(ctx, srv, "cluster", rdb, masters, cfg, rep, log)
	})
}

// liveNamespace is namespace i of the live phase.
func liveNamespace(i, nClusters int) (project, cluster, namespace string) {
	return "p" + strconv.Itoa(i%liveProjects), "c" + strconv.Itoa(i%nClusters), fmt.Sprintf("ns-%06d", i)
}

// liveSample is namespace i's window starting at at.
func liveSample(i, nClusters int, at time.Time) sample.Sample {
	p, c, ns := liveNamespace(i, nClusters)
	cpu := float64(i%97+1) / 10 // the rate preloadCPU loads
	return sample.Sample{Cluster: c, Project: p, Namespace: ns, Start: at, End: at.Add(time.Minute),
		CPU: sample.Resources{Usage: cpu, Request: 2 * cpu}, Memory: sample.Resources{Usage: float64(i%13+1) * 1e9}}
}

// liveClock maps windows to virtual and real time.
type liveClock struct {
	t0       time.Time     // boundary 0
	minute   time.Duration // real time between boundaries
	midnight int           // first window of the new day
}

func (c liveClock) boundary(k int) time.Time { return c.t0.Add(time.Duration(k) * c.minute) }

// windowStart is window k's virtual start.
func (c liveClock) windowStart(k int) time.Time {
	return liveDay.Start(time.UTC).Add(time.Duration(k-c.midnight) * time.Minute)
}

// followed is a namespace whose rollup events are followed: for each
// window, its day, the namespace-day's CPU usage once the window is
// applied, and when the first event showing it arrived.
type followed struct {
	day  []string
	cum  []int64
	seen []time.Time
}

// liveRequest is one dashboard request.
type liveRequest struct {
	route string
	start time.Time
	ms    float64
	err   error
}

// liveRoutes are the console's queries over this month (July 2025): the
// platform's projects by day, one project by day, one namespace's days,
// and the first page of namespaces by usage.
func liveRoutes(rng *rand.Rand, n, nClusters int) (name, path string) {
	const month = "start=2025-07-01&end=2025-07-31&step=day&pageSize=20"
	switch r := rng.IntN(4); r {
	case 0:
		return "project_all by day", api.PlatformPath + "?" + month + "&kind=project_all"
	case 1:
		p := "p" + strconv.Itoa(rng.IntN(liveProjects))
		return "project by day", strings.Replace(api.ProjectPath, ":project", p, 1) + "?" + month + "&kind=project&name=" + p
	case 2:
		_, _, ns := liveNamespace(rng.IntN(n), nClusters)
		return "namespace by day", api.PlatformPath + "?" + month + "&kind=namespace&name=" + ns
	default:
		return "namespace_all orderBy=usage", api.PlatformPath + "?" + month + "&kind=namespace_all&orderBy=usage&currentPage=1"
	}
}

func live(ctx context.Context, srv *servers, name string, rdb redis.UniversalClient, masters []*redis.Client, cfg Config, rep *Report, log *slog.Logger) error {
	sz := cfg.Sizes
	n, nc, windows := sz.LiveNamespaces, sz.LiveClusters, sz.LiveWindows
	clock := liveClock{minute: sz.LiveMinute, midnight: sz.LiveMidnight}
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
	// July 28 and July 29 up to the first window.
	cut := int32(86400 - 60*clock.midnight)
	t0 := time.Now()
	pieces, err := loadSpan(ctx, store, n, nc, liveDay-2, liveDay, cut)
	if err != nil {
		return err
	}
	log.Info("live: loaded", "backend", name, "namespaces", n, "pieces", pieces, "seconds", time.Since(t0).Seconds())
	for _, m := range masters {
		if err := waitPersistenceIdle(ctx, m, 5*time.Minute); err != nil {
			return err
		}
	}
	if err := stream.Ensure(ctx, srv.js, stream.DefaultConfig()); err != nil {
		return err
	}
	reader := sdkmetric.NewManualReader()
	aggErrors := &errorCount{}
	stopAgg, err := startAggregator(ctx, srv, store, slog.New(countingHandler{Handler: log.Handler(), count: aggErrors}), reader, cfg)
	if err != nil {
		return err
	}
	defer stopAgg()
	for { // until the aggregator created its consumer
		if _, _, err := drained(ctx, srv.js); err == nil {
			break
		}
		if err := sleepCtx(ctx, 5*time.Millisecond); err != nil {
			return err
		}
	}
	st, err := srv.js.Stream(ctx, stream.Samples)
	if err != nil {
		return fmt.Errorf("read stream %s: %w", stream.Samples, err)
	}
	cons, err := st.Consumer(ctx, stream.Consumer)
	if err != nil {
		return fmt.Errorf("read consumer %s: %w", stream.Consumer, err)
	}

	// The API, as the console reaches it.
	addr, stopAPI, err := serveAPI(rdb)
	if err != nil {
		return err
	}
	defer stopAPI()
	base := "http://" + addr
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4*sz.LiveUsers + 4*sz.LiveProbes}}
	defer client.CloseIdleConnections()

	// The followed namespaces: those of the first projects, about
	// liveEventSample of them, each window's expected CPU usage of its
	// namespace-day.
	sampledProjects := min(liveProjects, (liveEventSample*liveProjects+n-1)/n)
	follow := map[string]*followed{}
	var fmu sync.Mutex
	for i := range n {
		if i%liveProjects >= sampledProjects {
			continue
		}
		f := &followed{day: make([]string, windows), cum: make([]int64, windows), seen: make([]time.Time, windows)}
		prev := map[string]int64{(liveDay - 1).String(): preloadCPU(i, cut)}
		for k := range windows {
			s := liveSample(i, nc, clock.windowStart(k))
			p := rollup.Split(&s, time.UTC)[0]
			f.day[k] = p.Day.String()
			prev[f.day[k]] += p.Values[rollup.Field(rollup.Cpu, rollup.Usage)]
			f.cum[k] = prev[f.day[k]]
		}
		_, _, ns := liveNamespace(i, nc)
		follow[ns] = f
	}
	var subs []*nats.Subscription
	defer func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}()
	for p := range sampledProjects {
		subject := stream.RollupsPrefix + event.KindNamespace + ".p" + strconv.Itoa(p) + ".>"
		sub, err := srv.nc.Subscribe(subject, func(m *nats.Msg) {
			now := time.Now()
			var ev event.Event
			if json.Unmarshal(m.Data, &ev) != nil || ev.Item != rollup.Cpu.String() {
				return
			}
			fmu.Lock()
			defer fmu.Unlock()
			f := follow[ev.Namespace]
			if f == nil {
				return
			}
			for k := range f.cum {
				if f.day[k] == ev.Day && f.cum[k] <= ev.Fixed.Usage && f.seen[k].IsZero() {
					f.seen[k] = now
				}
			}
		})
		if err != nil {
			return fmt.Errorf("subscribe to %s: %w", subject, err)
		}
		_ = sub.SetPendingLimits(-1, -1)
		subs = append(subs, sub)
	}
	if err := srv.nc.Flush(); err != nil {
		return fmt.Errorf("subscribe to rollup events: %w", err)
	}

	// One collector per cluster, each on a connection of its own.
	type collectorConn struct {
		pub *collector.Publisher
		nc  *nats.Conn
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	var colls []collectorConn
	defer func() {
		for _, c := range colls {
			c.nc.Close()
		}
	}()
	for c := range nc {
		conn, js, err := natsconn.Connect(srv.nats.URL(), "bench-collector-c"+strconv.Itoa(c), quiet)
		if err != nil {
			return err
		}
		colls = append(colls, collectorConn{nc: conn})
		pub, err := collector.NewPublisher(js, collector.PublisherConfig{}, log)
		if err != nil {
			return err
		}
		colls[c].pub = pub
	}
	l := ledger{}
	encode := func(c, k int) []collector.Message {
		var s []sample.Sample
		for i := c; i < n; i += nc {
			s = append(s, liveSample(i, nc, clock.windowStart(k)))
		}
		if k >= clock.midnight {
			fmu.Lock() // the ledger is shared by the collectors
			l.add(s)
			fmu.Unlock()
		}
		return colls[c].pub.Encode(s)
	}

	report := slowest(ctx, masters)
	rcpu0 := 0.0
	for _, m := range masters {
		rcpu0 += redisCPU(ctx, m)
	}
	cpu0 := processCPU()
	clock.t0 = time.Now().Add(time.Second).Truncate(100 * time.Millisecond)
	log.Info("live: traffic", "backend", name, "namespaces", n, "clusters", nc, "windows", windows, "minute", clock.minute, "midnight", clock.midnight)
	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()

	// Collectors: window k at boundary k.
	published := make([]sync.WaitGroup, windows)
	for k := range published {
		published[k].Add(nc)
	}
	var (
		emu     sync.Mutex
		liveErr error
	)
	fail := func(err error) {
		emu.Lock()
		liveErr = errors.Join(liveErr, err)
		emu.Unlock()
		cancelRun()
	}
	var cwg sync.WaitGroup
	for c := range nc {
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			msgs := encode(c, 0)
			for k := range windows {
				if err := sleepUntil(runCtx, clock.boundary(k)); err != nil {
					for j := k; j < windows; j++ {
						published[j].Done()
					}
					return
				}
				err := colls[c].pub.PublishMessages(runCtx, msgs)
				published[k].Done()
				if err != nil {
					fail(fmt.Errorf("collector c%d, window %d: %w", c, k, err))
					for j := k + 1; j < windows; j++ {
						published[j].Done()
					}
					return
				}
				if k+1 < windows {
					msgs = encode(c, k+1)
				}
			}
		}()
	}

	// When each window was published by every collector, and applied:
	// the consumer's ack floor reached the stream's last message.
	publishedAt := make([]time.Time, windows)
	appliedAt := make([]time.Time, windows)
	var awg sync.WaitGroup
	for k := range windows {
		awg.Add(1)
		go func() {
			defer awg.Done()
			published[k].Wait()
			if runCtx.Err() != nil {
				return
			}
			publishedAt[k] = time.Now()
			// A window not applied by then stays unapplied in the report:
			// the run reports a backlog, it does not stop for it. A
			// JetStream API request that times out on a starved machine
			// is asked again.
			deadline := clock.boundary(windows).Add(liveWait)
			var last uint64
			for {
				si, err := st.Info(runCtx)
				if err == nil {
					last = si.State.LastSeq
					break
				}
				if time.Now().After(deadline) {
					fail(fmt.Errorf("window %d: read stream: %w", k, err))
					return
				}
				if sleepCtx(runCtx, liveApplyPoll) != nil {
					return
				}
			}
			for {
				ci, err := cons.Info(runCtx)
				if err == nil && ci.AckFloor.Stream >= last {
					appliedAt[k] = time.Now()
					return
				}
				if time.Now().After(deadline) {
					return
				}
				if sleepCtx(runCtx, liveApplyPoll) != nil {
					return
				}
			}
		}()
	}

	// API probes: at each boundary, LiveProbes namespaces spread over the
	// publish order; each polls its namespace's day until the window shows.
	type probeResult struct {
		window int
		ms     float64
		late   bool
	}
	var (
		pmu       sync.Mutex
		probes    []probeResult
		probeErrs int
		pwg       sync.WaitGroup
	)
	for k := range windows {
		for j := range sz.LiveProbes {
			i := (k*7919 + j*(n/sz.LiveProbes) + 13) % n
			s := liveSample(i, nc, clock.windowStart(k))
			p := rollup.Split(&s, time.UTC)[0]
			u := p.Values[rollup.Field(rollup.Cpu, rollup.Usage)]
			// The namespace-day's usage once window k is in: the windows
			// of its day so far (and July 29's preload before midnight).
			want := int64(0)
			first := clock.midnight
			if k < clock.midnight {
				want, first = preloadCPU(i, cut), 0
			}
			want += int64(k-first+1) * u
			threshold := rollup.Hours(want - u/2)
			_, _, ns := liveNamespace(i, nc)
			q := url.Values{"kind": {"namespace"}, "name": {ns}, "step": {"day"}, "item": {"Cpu"}, "method": {"Usage"},
				"start": {p.Day.Start(time.UTC).Format(time.DateOnly)}, "end": {p.Day.Start(time.UTC).Format(time.DateOnly)}}
			target := base + api.PlatformPath + "?" + q.Encode()
			pwg.Add(1)
			go func() {
				defer pwg.Done()
				if sleepUntil(runCtx, clock.boundary(k)) != nil {
					return
				}
				from := clock.boundary(k)
				for {
					var resp api.Response
					_, err := get(runCtx, client, target, &resp)
					if runCtx.Err() != nil {
						return
					}
					if err != nil {
						pmu.Lock()
						probeErrs++
						pmu.Unlock()
					}
					now := time.Now()
					if err == nil && len(resp.Items) > 0 && resp.Items[0].Usage >= threshold {
						pmu.Lock()
						probes = append(probes, probeResult{window: k, ms: msSince(from, now)})
						pmu.Unlock()
						return
					}
					if now.Sub(from) > liveWait {
						pmu.Lock()
						probes = append(probes, probeResult{window: k, ms: msSince(from, now), late: true})
						pmu.Unlock()
						return
					}
					if sleepCtx(runCtx, liveAPIPoll) != nil {
						return
					}
				}
			}()
		}
	}

	// Dashboard users: open loop, each starting a request about every
	// second (0.5-1.5 s apart, uniform) whether or not the last answered.
	var (
		umu      sync.Mutex
		requests []liveRequest
		uwg, rwg sync.WaitGroup
	)
	usersCtx, stopUsers := context.WithCancel(runCtx)
	defer stopUsers()
	for u := range sz.LiveUsers {
		uwg.Add(1)
		go func() {
			defer uwg.Done()
			rng := rand.New(rand.NewPCG(uint64(u), 24))
			next := clock.t0.Add(time.Duration(rng.Int64N(int64(time.Second))))
			for {
				if sleepUntil(usersCtx, next) != nil {
					return
				}
				route, path := liveRoutes(rng, n, nc)
				rwg.Add(1)
				go func() {
					defer rwg.Done()
					start := time.Now()
					d, err := get(runCtx, client, base+path, nil)
					if runCtx.Err() != nil {
						return
					}
					umu.Lock()
					requests = append(requests, liveRequest{route: route, start: start, ms: float64(d.Microseconds()) / 1000, err: err})
					umu.Unlock()
				}()
				next = next.Add(time.Second/2 + time.Duration(rng.Int64N(int64(time.Second))))
			}
		}()
	}

	// The run: until the boundary after the last window, and until every
	// window was applied and every probe answered.
	runErr := func() error {
		cwg.Wait()
		awg.Wait()
		pwg.Wait()
		// The followed namespaces' last events, a moment after the commit.
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			fmu.Lock()
			missing := 0
			for _, f := range follow {
				for _, t := range f.seen {
					if t.IsZero() {
						missing++
					}
				}
			}
			fmu.Unlock()
			if missing == 0 {
				break
			}
			if err := sleepCtx(runCtx, 10*time.Millisecond); err != nil {
				break
			}
		}
		if err := sleepUntil(runCtx, clock.boundary(windows)); err != nil {
			return err
		}
		return nil
	}()
	end := time.Now()
	cpu := (processCPU() - cpu0).Seconds()
	rcpu := -rcpu0
	for _, m := range masters {
		rcpu += redisCPU(ctx, m)
	}
	stopUsers()
	uwg.Wait()
	rwg.Wait()
	emu.Lock()
	err = liveErr
	emu.Unlock()
	if err != nil {
		return err
	}
	if runErr != nil {
		return runErr
	}
	// Redis's reports once nothing else talks to it: a backlog's scripts
	// would make a long SLOWLOG GET time out.
	if err := stopAgg(); err != nil {
		return err
	}
	slow := report()
	dump, dumpErr := redisLatencyDump(ctx, masters)
	prefix := fmt.Sprintf("live, %s, ns=%d: ", name, n)
	unapplied := 0
	for k := range windows {
		if appliedAt[k].IsZero() {
			unapplied++
		}
	}
	check := "the new day's cluster rollups hold the exact sums of the published samples"
	if unapplied == 0 {
		if err := l.verify(ctx, store); err != nil {
			return err
		}
	} else {
		check = "sums not checked: not every window was applied"
	}
	errs, firstAggErr := aggErrors.errors()
	rep.add(Row{Section: secLive, Name: prefix + "windows not applied by the end of the run", Value: float64(unapplied), Unit: "windows",
		Target: "0", Met: met(unapplied == 0),
		Note: fmt.Sprintf("of %d, waited for until %s after the last boundary; %s; the aggregator logged %d errors%s", windows, liveWait, check, errs, firstAggErr)})
	wall := end.Sub(clock.t0).Seconds()
	total := n * windows
	mode := fmt.Sprintf("%d namespaces in %d clusters (a collector each, on a NATS connection of its own) publish a one-minute window each at every boundary, %d boundaries %s apart (%.0f s), the new day from window %d on; %d dashboard users",
		n, nc, windows, clock.minute, wall, clock.midnight, sz.LiveUsers)

	// Freshness to the rollup event.
	var toEvent, midEvent []float64
	late := 0
	for _, f := range follow {
		for k, t := range f.seen {
			if t.IsZero() {
				late++
				t = end
			}
			ms := msSince(clock.boundary(k), t)
			toEvent = append(toEvent, ms)
			if k == clock.midnight {
				midEvent = append(midEvent, ms)
			}
		}
	}
	target := fmt.Sprintf("< %d", TargetLiveFreshnessP99.Milliseconds())
	p99 := percentile(toEvent, 0.99)
	rep.add(Row{Section: secLive, Name: prefix + "freshness: window end to rollup event, p50", Value: percentile(toEvent, 0.5), Unit: "ms", Note: mode})
	rep.add(Row{Section: secLive, Name: prefix + "freshness: window end to rollup event, p99", Value: p99, Unit: "ms",
		Target: target, Met: met(p99 < float64(TargetLiveFreshnessP99.Milliseconds())),
		Note: fmt.Sprintf("every window of the %d namespaces of %d projects (core NATS subscriptions to their namespace events, item Cpu), %d (namespace, window) pairs; from the window's real boundary; the midnight window alone: p50 %.0f ms, p99 %.0f ms; %d never seen (counted until the run's end)",
			len(follow), sampledProjects, len(toEvent), percentile(midEvent, 0.5), percentile(midEvent, 0.99), late)})
	var toAPI, midAPI []float64
	lateAPI := 0
	for _, p := range probes {
		toAPI = append(toAPI, p.ms)
		if p.window == clock.midnight {
			midAPI = append(midAPI, p.ms)
		}
		if p.late {
			lateAPI++
		}
	}
	p99 = percentile(toAPI, 0.99)
	rep.add(Row{Section: secLive, Name: prefix + "freshness: window end to API answer, p50", Value: percentile(toAPI, 0.5), Unit: "ms"})
	rep.add(Row{Section: secLive, Name: prefix + "freshness: window end to API answer, p99", Value: p99, Unit: "ms",
		Target: target, Met: met(p99 < float64(TargetLiveFreshnessP99.Milliseconds())),
		Note: fmt.Sprintf("%d probes (%d a window, spread over the publish order), each polling its namespace's day every %s from the boundary: accurate to that; the midnight window: p50 %.0f ms, p99 %.0f ms; %d not shown within %s",
			len(probes), sz.LiveProbes, liveAPIPoll, percentile(midAPI, 0.5), percentile(midAPI, 0.99), lateAPI, liveWait)})

	// Queries.
	var all, midnight []float64
	byRoute := map[string][]float64{}
	failed := 0
	var firstErr error
	midFrom, midTo := clock.boundary(clock.midnight), clock.boundary(clock.midnight+1)
	for _, r := range requests {
		if r.err != nil {
			failed++
			if firstErr == nil {
				firstErr = r.err
			}
			continue
		}
		all = append(all, r.ms)
		byRoute[r.route] = append(byRoute[r.route], r.ms)
		if !r.start.Before(midFrom) && r.start.Before(midTo) {
			midnight = append(midnight, r.ms)
		}
	}
	failNote := ""
	if firstErr != nil {
		failNote = ", the first: " + firstErr.Error()
	}
	rep.add(Row{Section: secLive, Name: prefix + "dashboard requests failed", Value: float64(failed), Unit: "requests",
		Target: "0", Met: met(failed == 0), Note: fmt.Sprintf("of %d; probe requests failed: %d%s", len(requests), probeErrs, failNote)})
	var routes []string
	for r := range byRoute {
		routes = append(routes, r)
	}
	slices.Sort(routes)
	var each []string
	for _, r := range routes {
		d := byRoute[r]
		each = append(each, fmt.Sprintf("%s p95 %.1f ms p99 %.1f ms (%d)", r, percentile(d, 0.95), percentile(d, 0.99), len(d)))
	}
	for _, span := range []struct {
		what string
		d    []float64
		note string
	}{
		{"whole run", all, fmt.Sprintf("%d requests of %d users, open loop (each starts one every 0.5-1.5 s whether or not the last answered), this month (July 2025) by day: %s", len(all), sz.LiveUsers, strings.Join(each, "; "))},
		{"the minute after midnight", midnight, fmt.Sprintf("%d requests started from the midnight window's boundary to the next", len(midnight))},
	} {
		p50, p95, p99 := percentile(span.d, 0.5), percentile(span.d, 0.95), percentile(span.d, 0.99)
		rep.add(Row{Section: secLive, Name: prefix + "query p50, " + span.what, Value: p50, Unit: "ms", Note: span.note})
		rep.add(Row{Section: secLive, Name: prefix + "query p95, " + span.what, Value: p95, Unit: "ms",
			Target: fmt.Sprintf("< %d", TargetLiveQueryP95.Milliseconds()), Met: met(p95 < float64(TargetLiveQueryP95.Milliseconds()))})
		rep.add(Row{Section: secLive, Name: prefix + "query p99, " + span.what, Value: p99, Unit: "ms",
			Target: fmt.Sprintf("< %d", TargetLiveQueryP99.Milliseconds()), Met: met(p99 < float64(TargetLiveQueryP99.Milliseconds()))})
	}

	// The longest command, and what Redis says about its latency.
	where := "not written (no results directory)"
	if cfg.ResultsDir != "" && dumpErr == nil {
		where = filepath.Join(cfg.ResultsDir, "live-"+name+"-redis.txt")
		if err := os.MkdirAll(cfg.ResultsDir, 0o755); err != nil {
			return fmt.Errorf("create results dir: %w", err)
		}
		if err := os.WriteFile(where, []byte(dump), 0o644); err != nil {
			return fmt.Errorf("write redis latency report: %w", err)
		}
	}
	if dumpErr != nil {
		where = "not captured: " + dumpErr.Error()
	}
	longest := Row{Section: secLive, Name: prefix + "longest redis command (SLOWLOG)", Value: float64(slow.worst.Microseconds()) / 1000, Unit: "ms",
		Target: fmt.Sprintf("< %d", TargetLongestCmd.Milliseconds()), Met: met(slow.worst < TargetLongestCmd)}
	if slow.err != nil { // not measured: neither met nor missed
		longest.Met = nil
		slow.what = "not measured: " + slow.err.Error()
	}
	longest.Note = fmt.Sprintf("%s; latency monitor on (threshold 1 ms): LATENCY LATEST worst %d ms; %d commands took 10 ms or more, %d 5 ms or more; evalsha µs %s; LATENCY LATEST/DOCTOR, INFO commandstats and the slowest commands: %s",
		slow.what, slow.latency.Milliseconds(), slow.over10, slow.over5, slow.scriptPercentiles, where)
	rep.add(longest)

	// The midnight burst, and the other windows for comparison.
	m := clock.midnight
	applied := func(k int) (time.Time, string) {
		if appliedAt[k].IsZero() {
			return end, " (not applied by the end: a lower bound)"
		}
		return appliedAt[k], ""
	}
	at, lower := applied(m)
	burst := at.Sub(clock.boundary(m)).Seconds()
	var spans []string
	for k := range windows {
		t, l := applied(k)
		mark := ""
		if l != "" {
			mark = "+"
		}
		spans = append(spans, fmt.Sprintf("%.0f%s", t.Sub(clock.boundary(k)).Seconds()*1000, mark))
	}
	pubSecs := 0.0
	if !publishedAt[m].IsZero() {
		pubSecs = publishedAt[m].Sub(clock.boundary(m)).Seconds()
	}
	rate := float64(n) / burst
	rep.add(Row{Section: secLive, Name: prefix + "midnight burst: first-of-day samples applied", Value: rate, Unit: "samples/s",
		Target: ">= " + commas(TargetMidnightBurst), Met: met(rate >= TargetMidnightBurst && lower == ""),
		Note: fmt.Sprintf("%d first-of-day samples from the boundary to the last applied (the consumer's ack floor, polled every %s): %.2f s%s, of which publishing %.2f s; each window, boundary to applied, ms ('+': not applied, until the end): %s",
			n, liveApplyPoll, burst, lower, pubSecs, strings.Join(spans, " "))})

	// CPU per sample.
	rep.add(Row{Section: secLive, Name: prefix + "CPU per sample, this process", Value: 1e6 * cpu / float64(total), Unit: "µs",
		Note: fmt.Sprintf("%.1f CPU s over %d samples in %.0f s (%.2f cores): the aggregator, and in the same process the embedded NATS server, the API, the collectors, the dashboard users and the probes", cpu, total, wall, cpu/wall)})
	what := "redis-server"
	if len(masters) > 1 {
		what = fmt.Sprintf("the %d masters (replicas not counted)", len(masters))
	}
	rep.add(Row{Section: secLive, Name: prefix + "CPU per sample, redis", Value: 1e6 * rcpu / float64(total), Unit: "µs",
		Note: fmt.Sprintf("INFO cpu used_cpu_user+sys of %s: %.1f CPU s (%.2f cores), the dashboard queries' share included", what, rcpu, rcpu/wall)})
	before := len(rep.Rows)
	aggregatorRows(ctx, rep, strings.TrimSuffix(prefix, ": "), reader, total, wall)
	if len(rep.Rows) > before {
		rep.Rows[before].Section = secLive
	}
	return nil
}

// redisLatencyDump is what Redis says about its latency on each node:
// LATENCY LATEST, LATENCY DOCTOR, the ten slowest commands of SLOWLOG and
// INFO commandstats.
func redisLatencyDump(ctx context.Context, nodes []*redis.Client) (string, error) {
	var b strings.Builder
	for _, n := range nodes {
		fmt.Fprintf(&b, "### %s\n\n", n.Options().Addr)
		latest, err := n.Do(ctx, "LATENCY", "LATEST").Slice()
		if err != nil {
			return "", fmt.Errorf("redis latency latest: %w", err)
		}
		b.WriteString("LATENCY LATEST (event, time, latest ms, max ms)\n")
		for _, ev := range latest {
			fmt.Fprintf(&b, "  %v\n", ev)
		}
		doctor, err := n.Do(ctx, "LATENCY", "DOCTOR").Text()
		if err != nil {
			return "", fmt.Errorf("redis latency doctor: %w", err)
		}
		b.WriteString("\nLATENCY DOCTOR\n" + doctor + "\n")
		logs, err := n.SlowLogGet(ctx, 100000).Result()
		if err != nil {
			return "", fmt.Errorf("redis slowlog: %w", err)
		}
		slices.SortFunc(logs, func(a, b redis.SlowLog) int { return int(b.Duration - a.Duration) })
		b.WriteString("\nSLOWLOG, the ten slowest\n")
		for _, l := range logs[:min(10, len(logs))] {
			fmt.Fprintf(&b, "  %s %8.3f ms  %s\n", l.Time.UTC().Format(time.TimeOnly), float64(l.Duration.Microseconds())/1000, strings.Join(trimArgs(l.Args), " "))
		}
		stats, err := n.Info(ctx, "commandstats").Result()
		if err != nil {
			return "", fmt.Errorf("redis info commandstats: %w", err)
		}
		b.WriteString("\n" + stats + "\n")
	}
	return b.String(), nil
}

func msSince(from, to time.Time) float64 { return float64(to.Sub(from).Microseconds()) / 1000 }

// sleepUntil waits until t or until ctx ends.
func sleepUntil(ctx context.Context, t time.Time) error {
	return sleepCtx(ctx, time.Until(t))
}

// errorCount counts the error records logged through a countingHandler
// and keeps the first one's message and error.
type errorCount struct {
	mu    sync.Mutex
	n     int
	first string
}

// errors is how many errors were logged and ", the first: ..." (or "").
func (c *errorCount) errors() (int, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == 0 {
		return 0, ""
	}
	return c.n, ", the first: " + c.first
}

// countingHandler passes records on to its Handler, counting errors.
type countingHandler struct {
	slog.Handler
	count *errorCount
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		c := h.count
		c.mu.Lock()
		c.n++
		if c.n == 1 {
			c.first = r.Message
			r.Attrs(func(a slog.Attr) bool {
				if a.Key == "err" {
					c.first += ": " + a.Value.String()
				}
				return true
			})
		}
		c.mu.Unlock()
	}
	return h.Handler.Handle(ctx, r)
}

func (h countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return countingHandler{Handler: h.Handler.WithAttrs(as), count: h.count}
}

func (h countingHandler) WithGroup(name string) slog.Handler {
	return countingHandler{Handler: h.Handler.WithGroup(name), count: h.count}
}
