package kube_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/alauda/costmeter/aggregator"
	"github.com/alauda/costmeter/api"
	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/internal/auth"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/pipelinetest"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/testenv"
)

// TestClusterEndToEnd: the Kubernetes source's windows go through the
// collector's publisher, embedded NATS, the aggregator and Redis, and the
// usage API answers, per namespace, item and method, value × seconds /
// 3600 of the expected averages.
func TestClusterEndToEnd(t *testing.T) {
	e := startLive(t, "e2e-", t0.Add(-time.Second))
	const alpha, beta = "e2e-alpha", "e2e-beta"
	e.namespace(alpha, map[string]string{"cpaas.io/project": "alpha"})
	e.namespace(beta, nil)
	e.setQuota(beta, "q", corev1.ResourceList{corev1.ResourceRequestsCPU: resource.MustParse("4"), corev1.ResourceRequestsMemory: resource.MustParse("8Gi")})
	e.runPod(podSpec(alpha, "a", container("app", "1500m", "3Gi")), t0.Add(-time.Hour))
	e.runPod(podSpec(beta, "b", container("app", "500m", "1Gi")), t0.Add(-time.Hour))
	e.setMetrics(alpha, "a", "1", "4Gi")
	e.createClaim(beta, "data", "20Gi")
	e.bindClaim(beta, "data", "20Gi")

	log := slog.New(slog.DiscardHandler)
	n := testenv.StartNATS(t)
	r := testenv.StartRedis(t)
	nc, js, err := natsconn.Connect(n.URL(), "kube-e2e", log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx := context.Background()
	if err := stream.Ensure(ctx, js, stream.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	store, err := rollup.NewStore(r.Client(), time.UTC, 20*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.LoadScripts(ctx); err != nil {
		t.Fatal(err)
	}
	agg, err := aggregator.New(aggregator.DefaultConfig(), js, store, aggregator.WithLogger(log),
		aggregator.WithClock(func() time.Time { return t0.Add(time.Hour) }))
	if err != nil {
		t.Fatal(err)
	}
	pipelinetest.Start(t, agg)
	pub, err := collector.NewPublisher(js, collector.PublisherConfig{MaxBatch: 50}, log)
	if err != nil {
		t.Fatal(err)
	}

	// Two windows; the second with pod a gone from 10:01:30.
	e.scrapeAt(t0)
	var sent []sample.Sample
	for w := range 2 {
		var before map[int]func()
		if w == 1 {
			before = map[int]func(){30: func() { e.c.Metrics.DeletePod(alpha, "a"); e.deletePod(alpha, "a") }}
		}
		ss := e.window(t0.Add(time.Duration(w)*time.Minute), before)
		if err := pub.Publish(ctx, ss); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, ss...)
	}
	if len(sent) != 4 {
		t.Fatalf("sent %d samples of the test's namespaces, want 4", len(sent))
	}
	testenv.Eventually(t, time.Minute, "aggregator drained", func() (bool, string) { return pipelinetest.Drained(js) })
	if dl := pipelinetest.MustDeadLetters(t, js); len(dl) != 0 {
		t.Fatalf("dead letters: %v", dl)
	}

	srv, err := api.New(api.DefaultConfig(), store, time.UTC, api.WithAuthenticate(auth.AllowAll()), api.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()

	// Expected unit-hours, from the cluster as set up: alpha's pod a ran
	// 60 s then 30 s (1.5 cores, 3Gi requested; 1 core, 4Gi used); beta's
	// pod b 120 s (0.5 cores, 1Gi; no metrics), its quota 4 cores, 8Gi,
	// its claim 20Gi.
	const h = 3600.0
	wantRows := map[string]map[string]float64{ // namespace → item/method → unit-hours
		alpha: {
			"Cpu/Usage": 1 * 90 / h, "Cpu/Request": 1.5 * 90 / h, "Cpu/Effective": 1.5 * 90 / h, "Cpu/ProjectQuota": 0,
			"Memory/Usage": 4 * 90 / h, "Memory/Request": 3 * 90 / h, "Memory/Effective": 4 * 90 / h, "Memory/ProjectQuota": 0,
			"Storage/Usage": 0, "Storage/Request": 0, "Storage/Effective": 0, "Storage/ProjectQuota": 0,
		},
		beta: {
			"Cpu/Usage": 0, "Cpu/Request": 0.5 * 120 / h, "Cpu/Effective": 0.5 * 120 / h, "Cpu/ProjectQuota": 4 * 120 / h,
			"Memory/Usage": 0, "Memory/Request": 1 * 120 / h, "Memory/Effective": 1 * 120 / h, "Memory/ProjectQuota": 8 * 120 / h,
			"Storage/Usage": 0, "Storage/Request": 20 * 120 / h, "Storage/Effective": 20 * 120 / h, "Storage/ProjectQuota": 0,
		},
	}
	projects := map[string]string{alpha: "alpha", beta: "unassigned"}
	for _, item := range []string{"Cpu", "Memory", "Storage"} {
		for _, method := range []string{"Usage", "Request", "Effective", "ProjectQuota"} {
			q := url.Values{"start": {"2025-06-01"}, "end": {"2025-06-01"}, "step": {"day"}, "kind": {"namespace_all"},
				"item": {item}, "method": {method}, "pageSize": {"100"}}
			rows := getRows(t, ts.URL+"/platform/cost.alauda.io/v1beta1/costs/usage?"+q.Encode())
			for ns, want := range wantRows {
				w := want[item+"/"+method]
				var found bool
				for _, row := range rows {
					if row.Namespace != ns {
						continue
					}
					found = true
					if row.Project != projects[ns] || row.Cluster != "prod-east" || math.Abs(row.Usage-w) > 1e-9 {
						t.Errorf("%s %s %s: row %+v, want project %s, usage %.12f", ns, item, method, row, projects[ns], w)
					}
				}
				if !found {
					t.Errorf("%s %s %s: no row (want usage %.12f)", ns, item, method, w)
				}
			}
		}
	}
}

func getRows(t *testing.T, u string) []api.Row {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var page api.Response
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", u, resp.StatusCode, err)
	}
	if page.Total > len(page.Items) {
		t.Fatalf("GET %s: %d of %d rows on the page", u, len(page.Items), page.Total)
	}
	return page.Items
}
