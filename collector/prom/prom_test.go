package prom_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/alauda/costmeter/aggregator"
	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/collector/prom"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/pipelinetest"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"), goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}

// The history the tests write: 3 days of one-minute scrapes of cluster
// "east", read back in 10-minute windows with a one-minute step.
const (
	cluster = "east"
	days    = 3
	minutes = days * 1440
	iv      = 10 * time.Minute
	mib     = 1 << 20
	gib     = 1 << 30
)

var t0 = time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)

// Values are multiples of 1/16 core and of 1 MiB, so every value × seconds
// is exact in float64 and the test's sums equal the source's whatever the
// order of addition.

// pod is a pod of the history: it exists (kube-state-metrics reports it)
// in [exists0, exists1) and runs in [run0, run1).
type pod struct {
	ns, name         string
	exists0, exists1 int
	run0, run1       int
	reqCPU, reqMem   []float64 // per app container
	initCPU, initMem float64   // one init container
	rate             func(m int) []float64
	mem              func(m int) []float64
}

func (p pod) running(m int) bool { return m >= p.run0 && m < p.run1 }

// namespace spans with their project label ("" = no label).
type nsSpan struct {
	ns, project string
	from, to    int
}

var (
	spans = []nsSpan{
		{"team-a", "alpha", 0, 720},
		{"team-a", "gamma", 720, minutes},
		{"team-b", "", 0, minutes},
		{"late", "beta", 2160, minutes}, // appears mid-day on day 2
	}
	pods = []pod{
		{ns: "team-a", name: "web", exists0: 0, exists1: minutes, run0: 0, run1: minutes,
			reqCPU: []float64{0.25, 0.125}, reqMem: []float64{256 * mib, 128 * mib}, initCPU: 0.5, initMem: 64 * mib,
			rate: func(m int) []float64 { return []float64{float64(m*7%13) / 16, 1.0 / 16} },
			mem:  func(m int) []float64 { return []float64{float64(200+m*5%300) * mib, 64 * mib} }},
		{ns: "team-a", name: "job", exists0: 1500, exists1: 2000, run0: 1540, run1: 1900,
			reqCPU: []float64{1}, reqMem: []float64{gib},
			rate: func(int) []float64 { return []float64{0.75} },
			mem:  func(int) []float64 { return []float64{512 * mib} }},
		{ns: "team-b", name: "db", exists0: 0, exists1: minutes, run0: 0, run1: minutes,
			reqCPU: []float64{0.5}, reqMem: []float64{gib},
			rate: func(m int) []float64 { return []float64{float64(m%5) / 8} },
			mem:  func(m int) []float64 { return []float64{float64(900+m%200) * mib} }},
		{ns: "late", name: "app", exists0: 2160, exists1: minutes, run0: 2160, run1: minutes,
			reqCPU: []float64{0.25}, reqMem: []float64{128 * mib},
			rate: func(int) []float64 { return []float64{3.0 / 16} },
			mem:  func(int) []float64 { return []float64{100 * mib} }},
	}
	// team-a's quotas: the smallest of each resource counts (cpu 3 cores,
	// memory 8 GiB, storage 100 GiB).
	quotaCPU, quotaMem, quotaStorage = 3.0, 8.0 * gib, 100.0 * gib
	// team-b's claim: 20 GiB requested, usage growing.
	claimReq  = 20.0 * gib
	claimUsed = func(m int) float64 { return float64(gib + (m/7)*mib) }
)

// openMetrics writes the history as kube-state-metrics, cAdvisor and the
// kubelet would have exported it, scraped every minute.
func openMetrics(only map[string]bool) []byte {
	var b bytes.Buffer
	ts := func(m int) string { return fmt.Sprintf("%d", t0.Add(time.Duration(m)*time.Minute).Unix()) }
	family := func(name string, series func(emit func(labels string, m int, v float64))) {
		if only != nil && !only[name] {
			return
		}
		fmt.Fprintf(&b, "# TYPE %s gauge\n", name)
		series(func(labels string, m int, v float64) {
			fmt.Fprintf(&b, "%s{%s} %g %s\n", name, labels, v, ts(m))
		})
	}
	family("kube_namespace_labels", func(emit func(string, int, float64)) {
		for _, s := range spans {
			l := fmt.Sprintf(`namespace="%s"`, s.ns)
			if s.project != "" {
				l += fmt.Sprintf(`,label_cpaas_io_project="%s"`, s.project)
			}
			for m := s.from; m < s.to; m++ {
				emit(l, m, 1)
			}
		}
	})
	family("kube_pod_status_phase", func(emit func(string, int, float64)) {
		for _, p := range pods {
			for _, phase := range []string{"Pending", "Running"} {
				for m := p.exists0; m < p.exists1; m++ {
					v := 0.0
					if (phase == "Running") == p.running(m) {
						v = 1
					}
					emit(fmt.Sprintf(`namespace="%s",pod="%s",phase="%s"`, p.ns, p.name, phase), m, v)
				}
			}
		}
	})
	requests := func(init bool) func(emit func(string, int, float64)) {
		return func(emit func(string, int, float64)) {
			for _, p := range pods {
				for _, res := range []string{"cpu", "memory"} {
					vals := p.reqCPU
					unit := "core"
					if res == "memory" {
						vals, unit = p.reqMem, "byte"
					}
					if init {
						vals = []float64{p.initCPU}
						if res == "memory" {
							vals = []float64{p.initMem}
						}
						if vals[0] == 0 {
							continue
						}
					}
					for c, v := range vals {
						for m := p.exists0; m < p.exists1; m++ {
							emit(fmt.Sprintf(`namespace="%s",pod="%s",container="c%d",node="n1",resource="%s",unit="%s"`, p.ns, p.name, c, res, unit), m, v)
						}
					}
				}
			}
		}
	}
	family("kube_pod_container_resource_requests", requests(false))
	family("kube_pod_init_container_resource_requests", requests(true))
	family("container_cpu_usage_seconds_total", func(emit func(string, int, float64)) {
		for _, p := range pods {
			for c := range p.reqCPU {
				l := fmt.Sprintf(`namespace="%s",pod="%s",container="c%d",id="/kubepods/%s/c%d",image="img"`, p.ns, p.name, c, p.name, c)
				total := 0.0
				// The counter from the container's start (0) to its final
				// value, scraped when it stopped.
				for m := p.run0; m <= p.run1; m++ {
					emit(l, m, total)
					if m < p.run1 {
						total += p.rate(m)[c] * 60
					}
				}
			}
			// The pause container and the pod's cgroup are not containers.
			for m := p.run0; m <= p.run1; m++ {
				emit(fmt.Sprintf(`namespace="%s",pod="%s",container="",id="/kubepods/%s"`, p.ns, p.name, p.name), m, float64(m)*100)
				emit(fmt.Sprintf(`namespace="%s",pod="%s",container="POD",id="/kubepods/%s/pause"`, p.ns, p.name, p.name), m, float64(m)*50)
			}
		}
	})
	family("container_memory_working_set_bytes", func(emit func(string, int, float64)) {
		for _, p := range pods {
			for c := range p.reqCPU {
				l := fmt.Sprintf(`namespace="%s",pod="%s",container="c%d",id="/kubepods/%s/c%d",image="img"`, p.ns, p.name, c, p.name, c)
				for m := p.run0; m < p.run1; m++ {
					emit(l, m, p.mem(m)[c])
				}
			}
			for m := p.run0; m < p.run1; m++ {
				emit(fmt.Sprintf(`namespace="%s",pod="%s",container="",id="/kubepods/%s"`, p.ns, p.name, p.name), m, 99*gib)
			}
		}
	})
	family("kube_resourcequota", func(emit func(string, int, float64)) {
		for _, q := range []struct {
			name, resource, typ string
			v                   float64
		}{
			{"q1", "requests.cpu", "hard", 4}, {"q1", "requests.memory", "hard", 8 * gib}, {"q1", "requests.cpu", "used", 1},
			{"q2", "cpu", "hard", 3}, {"q2", "memory", "hard", 16 * gib}, {"q2", "requests.storage", "hard", 100 * gib},
			{"q2", "pods", "hard", 10},
		} {
			for m := range minutes {
				emit(fmt.Sprintf(`namespace="team-a",resourcequota="%s",resource="%s",type="%s"`, q.name, q.resource, q.typ), m, q.v)
			}
		}
	})
	family("kube_persistentvolumeclaim_resource_requests_storage_bytes", func(emit func(string, int, float64)) {
		for m := range minutes {
			emit(`namespace="team-b",persistentvolumeclaim="data"`, m, claimReq)
			emit(`namespace="team-b",persistentvolumeclaim="unbound"`, m, 5*gib)
		}
	})
	family("kube_persistentvolumeclaim_status_phase", func(emit func(string, int, float64)) {
		for m := range minutes {
			emit(`namespace="team-b",persistentvolumeclaim="data",phase="Bound"`, m, 1)
			emit(`namespace="team-b",persistentvolumeclaim="data",phase="Pending"`, m, 0)
			emit(`namespace="team-b",persistentvolumeclaim="unbound",phase="Bound"`, m, 0)
			emit(`namespace="team-b",persistentvolumeclaim="unbound",phase="Pending"`, m, 1)
		}
	})
	family("kubelet_volume_stats_used_bytes", func(emit func(string, int, float64)) {
		for m := range minutes {
			emit(`namespace="team-b",persistentvolumeclaim="data",node="n1"`, m, claimUsed(m))
		}
	})
	b.WriteString("# EOF\n")
	return b.Bytes()
}

// expected computes by hand, from the history above, the samples the
// Kubernetes source would send: per window and namespace, the average
// over the window's minutes of each value, with effective = per pod
// max(usage, request), summed.
func expected() []sample.Sample {
	type acc struct {
		cpuUse, cpuReq, cpuEff, cpuQuota, memUse, memReq, memEff, memQuota, stUse, stReq, stQuota float64
		present                                                                                   bool
		project                                                                                   string
	}
	var out []sample.Sample
	for w := 0; w < minutes/10; w++ {
		byNS := map[string]*acc{}
		get := func(ns string) *acc {
			if byNS[ns] == nil {
				byNS[ns] = &acc{project: "unassigned"}
			}
			return byNS[ns]
		}
		for m := w * 10; m < w*10+10; m++ {
			for _, s := range spans {
				if m >= s.from && m < s.to {
					a := get(s.ns)
					a.present = true
					if s.project != "" {
						a.project = s.project // the last minute's label wins
					} else {
						a.project = "unassigned"
					}
					if s.ns == "team-a" {
						a.cpuQuota += quotaCPU * 60
						a.memQuota += quotaMem * 60
						a.stQuota += quotaStorage * 60
					}
				}
			}
			for _, p := range pods {
				if !p.running(m) {
					continue
				}
				a := get(p.ns)
				var rc, rm, uc, um float64
				for c := range p.reqCPU {
					rc += p.reqCPU[c]
					rm += p.reqMem[c]
					uc += p.rate(m)[c]
					um += p.mem(m)[c]
				}
				rc, rm = max(rc, p.initCPU), max(rm, p.initMem)
				a.cpuReq += rc * 60
				a.cpuUse += uc * 60
				a.cpuEff += max(uc, rc) * 60
				a.memReq += rm * 60
				a.memUse += um * 60
				a.memEff += max(um, rm) * 60
			}
			b := get("team-b")
			b.stReq += claimReq * 60
			b.stUse += claimUsed(m) * 60
		}
		names := make([]string, 0, len(byNS))
		for ns := range byNS {
			names = append(names, ns)
		}
		sort.Strings(names)
		start := t0.Add(time.Duration(w) * iv)
		for _, ns := range names {
			a := byNS[ns]
			if !a.present {
				continue
			}
			ce, me := a.cpuEff/600, a.memEff/600
			out = append(out, sample.Sample{Cluster: cluster, Project: a.project, Namespace: ns, Start: start, End: start.Add(iv),
				CPU:     sample.Resources{Usage: a.cpuUse / 600, Request: a.cpuReq / 600, Quota: a.cpuQuota / 600, Effective: &ce},
				Memory:  sample.Resources{Usage: a.memUse / 600, Request: a.memReq / 600, Quota: a.memQuota / 600, Effective: &me},
				Storage: sample.Resources{Usage: a.stUse / 600, Request: a.stReq / 600, Quota: a.stQuota / 600}})
		}
	}
	return out
}

func config(url string) prom.Config {
	return prom.Config{URL: url, From: "2025-06-01", To: "2025-06-03", Delay: time.Minute, Timeout: 30 * time.Second,
		Cluster: cluster, ProjectLabel: "cpaas.io/project", DefaultProject: "unassigned", Interval: iv, Step: time.Minute}
}

func newSource(t *testing.T, cfg prom.Config, opts ...prom.Option) *prom.Source {
	t.Helper()
	api, err := prom.NewAPI(cfg)
	if err != nil {
		t.Fatal(err)
	}
	src, err := prom.New(cfg, api, append([]prom.Option{prom.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func describe(s sample.Sample) string {
	return fmt.Sprintf("%s/%s/%s %s cpu{%g %g %g %g} mem{%g %g %g %g} st{%g %g %g}", s.Cluster, s.Project, s.Namespace, s.Start.Format("01-02T15:04"),
		s.CPU.Usage, s.CPU.Request, s.CPU.EffectiveValue(), s.CPU.Quota, s.Memory.Usage, s.Memory.Request, s.Memory.EffectiveValue(), s.Memory.Quota,
		s.Storage.Usage, s.Storage.Request, s.Storage.Quota)
}

// TestPrometheusSource runs the source against one real Prometheus loaded
// with the history above.
func TestPrometheusSource(t *testing.T) {
	p := testenv.StartPrometheus(t, openMetrics(nil))
	t.Run("backfill", func(t *testing.T) { testBackfill(t, p) })
	t.Run("live", func(t *testing.T) { testLive(t, p) })
	t.Run("check", func(t *testing.T) { testCheck(t, p) })
	t.Run("fill gaps", func(t *testing.T) { testFillGaps(t, p) })
	t.Run("bearer token", func(t *testing.T) { testBearerToken(t, p) })
}

// pipeline is embedded NATS, a redis-server child and a real aggregator.
type pipeline struct {
	js    jetstream.JetStream
	rdb   *redis.Client
	store *rollup.Store
	pub   *collector.Publisher
}

func newPipeline(t *testing.T) *pipeline {
	t.Helper()
	ctx := context.Background()
	n := testenv.StartNATS(t)
	rd := testenv.StartRedis(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	nc, js, err := natsconn.Connect(n.URL(), "test", log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if err := stream.Ensure(ctx, js, stream.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	pl := &pipeline{js: js, rdb: rd.Client()}
	pl.store, err = rollup.NewStore(pl.rdb, time.UTC, 20*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := pl.store.LoadScripts(ctx); err != nil {
		t.Fatal(err)
	}
	agg, err := aggregator.New(aggregator.DefaultConfig(), js, pl.store, aggregator.WithLogger(log),
		aggregator.WithClock(func() time.Time { return t0.AddDate(0, 0, days+1) }))
	if err != nil {
		t.Fatal(err)
	}
	pipelinetest.Start(t, agg)
	pl.pub, err = collector.NewPublisher(js, collector.PublisherConfig{MaxBatch: collector.DefaultMaxBatch}, log)
	if err != nil {
		t.Fatal(err)
	}
	return pl
}

// testFillGaps: the Kubernetes source's samples (the same windows) are
// counted except for a 3-hour hole on day 2 and the first two hours of
// day 1; --fill-gaps sends exactly the missing windows, so every day is
// complete, the rollups equal the whole history's, nothing is an overlap;
// a second run sends nothing.
func testFillGaps(t *testing.T, p *testenv.Prometheus) {
	pl := newPipeline(t)
	ctx := context.Background()
	all := expected()
	hole := func(s sample.Sample) bool {
		h1 := t0.Add(2 * time.Hour)
		h2a, h2b := t0.Add(24*time.Hour+9*time.Hour), t0.Add(24*time.Hour+12*time.Hour)
		return s.Start.Before(h1) || (!s.Start.Before(h2a) && s.Start.Before(h2b))
	}
	var kube []sample.Sample
	missing := 0
	for _, s := range all {
		if hole(s) {
			missing++
			continue
		}
		kube = append(kube, s)
	}
	if err := pl.pub.Publish(ctx, kube); err != nil {
		t.Fatal(err)
	}
	partial := pipelinetest.NewLedger()
	partial.Add(kube...)
	pipelinetest.WaitExact(t, pl.js, pl.store, partial, time.Minute)
	reader := rollup.NewReader(pl.rdb)
	covered := func() []int64 {
		days, err := reader.ClusterCoverage(ctx, rollup.DayOf(t0, time.UTC), rollup.DayOf(t0, time.UTC)+days-1, cluster)
		if err != nil {
			t.Fatal(err)
		}
		var out []int64
		for _, d := range days {
			out = append(out, d.Covered())
		}
		return out
	}
	if got := fmt.Sprint(covered()); got != "[79200 75600 86400]" {
		t.Fatalf("coverage before filling: %s, want [79200 75600 86400] (the test proves nothing)", got)
	}

	cfg := config(p.URL())
	cfg.FillGaps = true
	src := newSource(t, cfg, prom.WithGaps(prom.NewStoreGaps(reader, time.UTC)))
	var progress bytes.Buffer
	sum, err := src.Backfill(ctx, pl.pub.Publish, &progress)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Samples != missing || sum.Skipped != len(kube) {
		t.Fatalf("sent %d, skipped %d; want %d and %d", sum.Samples, sum.Skipped, missing, len(kube))
	}
	full := pipelinetest.NewLedger()
	full.Add(all...)
	pipelinetest.WaitExact(t, pl.js, pl.store, full, time.Minute)
	if got := fmt.Sprint(covered()); got != "[86400 86400 86400]" {
		t.Fatalf("coverage after filling: %s", got)
	}
	if dl := pipelinetest.MustDeadLetters(t, pl.js); len(dl) != 0 {
		t.Fatalf("dead letters %v, want none", dl)
	}
	sum, err = src.Backfill(ctx, pl.pub.Publish, &progress)
	if err != nil || sum.Samples != 0 {
		t.Fatalf("second run: %+v, %v; want nothing sent", sum, err)
	}
}

// testLive: following live, the source reads the last window closed
// --prometheus-delay ago and emits it.
func testLive(t *testing.T, p *testenv.Prometheus) {
	cfg := config(p.URL())
	cfg.From, cfg.To = "", ""
	now := t0.Add(days*24*time.Hour + cfg.Delay + 30*time.Second)
	src := newSource(t, cfg, prom.WithClock(func() time.Time { return now }))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan []sample.Sample, 1)
	done := make(chan error, 1)
	go func() {
		done <- src.Run(ctx, func(_ context.Context, s []sample.Sample) error {
			got <- s
			cancel()
			return nil
		})
	}()
	var samples []sample.Sample
	select {
	case samples = <-got:
	case <-time.After(time.Minute):
		t.Fatal("no window emitted within a minute")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := expected()
	want = want[len(want)-3:] // the last window's three namespaces
	if len(samples) != len(want) {
		t.Fatalf("%d samples, want %d", len(samples), len(want))
	}
	for i := range want {
		if g, w := describe(samples[i]), describe(want[i]); g != w {
			t.Fatalf("sample %d:\n got %s\nwant %s", i, g, w)
		}
	}
}

// testCheck: what Prometheus lacks is a clear error before anything is
// sent.
func testCheck(t *testing.T, p *testenv.Prometheus) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		cfg  func(*prom.Config)
		want string
	}{
		{"unreachable", func(c *prom.Config) { c.URL = fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t)) }, "does not answer"},
		{"before the oldest data", func(c *prom.Config) { c.From = "2025-05-20" }, "--from 2025-05-20: prometheus has no data on that day (its retention is 100y)"},
		{"other cluster's series", func(c *prom.Config) { c.Selector = `cluster="west"` }, `prometheus has no kube_namespace_labels{cluster="west"}`},
		{"nothing closed yet", func(c *prom.Config) { c.From, c.To = "2999-01-01", "2999-01-02" }, "nothing to backfill"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config(p.URL())
			tc.cfg(&cfg)
			err := newSource(t, cfg).Check(ctx)
			if err == nil || !errors.Is(err, prom.ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrConfig containing %q", err, tc.want)
			}
		})
	}
}

// TestCheckMissingMetrics: a Prometheus without cAdvisor's series is
// refused, naming each missing series and its exporter.
func TestCheckMissingMetrics(t *testing.T) {
	p := testenv.StartPrometheus(t, openMetrics(map[string]bool{"kube_namespace_labels": true, "kube_pod_status_phase": true, "kube_pod_container_resource_requests": true}))
	err := newSource(t, config(p.URL())).Check(context.Background())
	for _, want := range []string{"no container_cpu_usage_seconds_total{}", "no container_memory_working_set_bytes{}", "exported by cAdvisor"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want it to contain %q", err, want)
		}
	}
}

// testBackfill: a backfill from a real Prometheus, through JetStream, a
// real aggregator and Redis, leaves rollups equal to totals computed by
// hand from the series written, for every item and method; running it
// again changes nothing.
func testBackfill(t *testing.T, p *testenv.Prometheus) {
	want := expected()
	src := newSource(t, config(p.URL()))
	ctx := context.Background()
	if err := src.Check(ctx); err != nil {
		t.Fatalf("check: %v\n%s", err, p.Log())
	}

	// The samples themselves, field by field.
	got, err := src.Collect(ctx, t0, t0.Add(days*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d samples, want %d", len(got), len(want))
	}
	for i := range want {
		if g, w := describe(got[i]), describe(want[i]); g != w {
			t.Fatalf("sample %d:\n got %s\nwant %s", i, g, w)
		}
	}

	// Through the pipeline.
	pl := newPipeline(t)
	js, pub := pl.js, pl.pub
	ledger := pipelinetest.NewLedger()
	ledger.Add(want...)
	for round := 1; round <= 2; round++ {
		var progress bytes.Buffer
		sum, err := src.Backfill(ctx, pub.Publish, &progress)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if sum.Days != days || sum.Samples != len(want) {
			t.Fatalf("round %d: %+v, want %d days and %d samples", round, sum, days, len(want))
		}
		lines := strings.Split(strings.TrimSpace(progress.String()), "\n")
		if len(lines) != days || !strings.HasPrefix(lines[2], "2025-06-03: 3 of 3 days done, 1080 samples sent") || !strings.Contains(lines[2], "samples/s") {
			t.Fatalf("round %d: progress:\n%s", round, progress.String())
		}
		pipelinetest.WaitExact(t, js, pl.store, ledger, time.Minute)
		if dl := pipelinetest.MustDeadLetters(t, js); len(dl) != 0 {
			t.Fatalf("round %d: dead letters %v", round, dl)
		}
	}
}
