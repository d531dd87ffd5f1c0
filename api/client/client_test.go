package client_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"github.com/alauda/costmeter/aggregator"
	"github.com/alauda/costmeter/api"
	"github.com/alauda/costmeter/api/client"
	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/internal/auth"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/pipelinetest"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/testenv"
	"github.com/alauda/costmeter/notifier"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.ReleaseMode)
	os.Exit(m.Run())
}

// servedDescription starts an API (over a Redis it never dials) on a real
// HTTP server and returns what it serves at /openapi.yaml.
func servedDescription(t *testing.T) []byte {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { rdb.Close() })
	srv, err := api.New(api.DefaultConfig(), rollup.NewReader(rdb), time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	resp, err := ts.Client().Get(ts.URL + "/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /openapi.yaml: %s %v", resp.Status, err)
	}
	return body
}

// TestClientIsGenerated regenerates the client from the served document
// with the pinned oapi-codegen (the tool directive in go.mod) and the
// committed settings, and fails when client.gen.go differs.
func TestClientIsGenerated(t *testing.T) {
	dir := t.TempDir()
	spec := filepath.Join(dir, "openapi.yaml")
	if err := os.WriteFile(spec, servedDescription(t), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "client.gen.go")
	cmd := exec.Command("go", "tool", "oapi-codegen", "-config", "oapi-codegen.yaml", "-o", out, spec)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go tool oapi-codegen: %v: %s", err, msg)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	committed, err := os.ReadFile("client.gen.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, committed) {
		t.Fatalf("api/client/client.gen.go is stale: the served openapi.yaml generates %d bytes, the committed file has %d (first difference at line %d); run: go generate ./api/client",
			len(got), len(committed), firstDifferentLine(got, committed))
	}
}

func firstDifferentLine(a, b []byte) int {
	la, lb := bytes.Split(a, []byte("\n")), bytes.Split(b, []byte("\n"))
	for i := range min(len(la), len(lb)) {
		if !bytes.Equal(la[i], lb[i]) {
			return i + 1
		}
	}
	return min(len(la), len(lb)) + 1
}

// The live stack's tokens: one of platform scope, one that sees project
// team only.
const (
	platformToken = "plt-2f4e6a8c0b1d3f5e7a9c1b3d5f7e9a0c"
	teamToken     = "tea-9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b"
)

// day is the billing day (UTC) of the live stack's samples; the
// aggregator's clock is its noon.
var day = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)

// startStack starts the whole path a client sees: embedded NATS, a
// redis-server child, the aggregator, the notifier (one project rule, a
// webhook answering 204), and the API with --auth token on a real HTTP
// server; it publishes samples, waits until the aggregator applied them,
// and returns the API's URL.
func startStack(t *testing.T, samples []sample.Sample) string {
	t.Helper()
	n := testenv.StartNATS(t)
	r := testenv.StartRedis(t)
	rdb := r.Client()
	log := slog.New(slog.DiscardHandler)
	nc, js, err := natsconn.Connect(n.URL(), "client-test", log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx := context.Background()
	store, err := rollup.NewStore(rdb, time.UTC, 10*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.LoadScripts(ctx); err != nil {
		t.Fatal(err)
	}
	if err := stream.Ensure(ctx, js, stream.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	if err := stream.EnsureRollups(ctx, js, stream.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	aggCfg := aggregator.DefaultConfig()
	aggCfg.MaxWait = 20 * time.Millisecond
	noon := day.Add(12 * time.Hour)
	agg, err := aggregator.New(aggCfg, js, store, aggregator.WithLogger(log), aggregator.WithClock(func() time.Time { return noon }))
	if err != nil {
		t.Fatal(err)
	}
	pipelinetest.Start(t, agg)

	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	t.Cleanup(hook.Close)
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("whsec_"+base64.StdEncoding.EncodeToString(make([]byte, 32))), 0o600); err != nil {
		t.Fatal(err)
	}
	rules := filepath.Join(dir, "rules.yaml")
	rule := fmt.Sprintf("rules:\n- {name: project-cpu, kind: project, item: Cpu, method: Usage, period: month, thresholds: [1], webhook: %q, secretFile: %q}\n", hook.URL, secret)
	if err := os.WriteFile(rules, []byte(rule), 0o600); err != nil {
		t.Fatal(err)
	}
	loaded, err := notifier.LoadRules(rules, time.Second, log)
	if err != nil {
		t.Fatal(err)
	}
	ntCfg := notifier.DefaultConfig()
	ntCfg.Retention = 10 * 365 * 24 * time.Hour
	nt, err := notifier.New(ntCfg, js, nc, rdb, loaded, notifier.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	pipelinetest.Start(t, nt)

	tokens := filepath.Join(dir, "tokens.yaml")
	file := "tokens:\n- name: admin\n  sha256: " + auth.HashToken(platformToken) + "\n  scope: platform\n" +
		"- name: team-reader\n  sha256: " + auth.HashToken(teamToken) + "\n  projects: [team]\n"
	if err := os.WriteFile(tokens, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	tf, err := auth.NewTokenFile(tokens, time.Hour, log)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(api.DefaultConfig(), store, time.UTC, api.WithAuthenticate(auth.Middleware(tf, log)),
		api.WithEvents(js), api.WithNotifications(notifier.NewLog(rdb)))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)

	pub, err := collector.NewPublisher(js, collector.PublisherConfig{MaxBatch: 50}, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, samples); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "the aggregator applied every sample", func() (bool, string) {
		return pipelinetest.Drained(js)
	})
	return ts.URL
}

func bearer(token string) client.RequestEditorFn {
	return func(_ context.Context, req *http.Request) error {
		req.Header.Set("Authorization", "Bearer "+token)
		return nil
	}
}

func ptr[T any](v T) *T { return &v }

// TestClientAgainstLiveStack calls the usage, coverage and notification
// routes through the generated client with bearer tokens and checks the
// decoded answers against figures worked out here from the samples; a
// project token asking for another project gets the 403 as a typed
// Status.
func TestClientAgainstLiveStack(t *testing.T) {
	at := func(hh, mm int) time.Time {
		return day.Add(time.Duration(hh)*time.Hour + time.Duration(mm)*time.Minute)
	}
	samples := []sample.Sample{
		// team: 2 cores for an hour, then 1 core for half an hour: 2.5 core-hours.
		{Cluster: "east", Project: "team", Namespace: "api", Start: at(1, 0), End: at(2, 0), CPU: sample.Resources{Usage: 2, Request: 1, Quota: 4}},
		{Cluster: "east", Project: "team", Namespace: "web", Start: at(3, 0), End: at(3, 30), CPU: sample.Resources{Usage: 1, Request: 1, Quota: 4}},
		// ops: a quarter core for two hours: 0.5 core-hours, under the rule's 1.
		{Cluster: "west", Project: "ops", Namespace: "default", Start: at(4, 0), End: at(6, 0), CPU: sample.Resources{Usage: 0.25, Request: 0.5, Quota: 1}},
	}
	for i := range samples {
		if err := samples[i].Validate(); err != nil {
			t.Fatal(err)
		}
	}
	url := startStack(t, samples)
	c, err := client.NewClientWithResponses(url)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	date := func(tm time.Time) client.Start { return client.Start{Time: tm} }

	t.Run("usage", func(t *testing.T) {
		resp, err := c.GetPlatformUsageWithResponse(ctx, &client.GetPlatformUsageParams{
			Start: date(day), End: date(day), Kind: ptr(client.GetPlatformUsageParamsKindProjectAll),
			Method: ptr(client.GetPlatformUsageParamsMethodUsage),
		}, bearer(platformToken))
		if err != nil {
			t.Fatal(err)
		}
		if resp.JSON200 == nil {
			t.Fatalf("%s: %s", resp.Status(), resp.Body)
		}
		got := map[string]float64{}
		for _, it := range resp.JSON200.Items {
			if it.Start != "20260302" || it.End != "20260302" || it.Item != client.CostUsageItemItemCpu || it.Currency != client.CNY {
				t.Errorf("row %+v", it)
			}
			got[it.Project] = it.Usage
		}
		want := map[string]float64{"team": 2.5, "ops": 0.5}
		if resp.JSON200.Total != 2 || len(got) != 2 || got["team"] != want["team"] || got["ops"] != want["ops"] {
			t.Fatalf("total %d, usage by project %v; want %v", resp.JSON200.Total, got, want)
		}

		own, err := c.GetProjectUsageWithResponse(ctx, "team", &client.GetProjectUsageParams{
			Start: date(day), End: date(day), Kind: ptr(client.GetProjectUsageParamsKindNamespaceAll),
			Method: ptr(client.GetProjectUsageParamsMethodUsage),
		}, bearer(teamToken))
		if err != nil {
			t.Fatal(err)
		}
		if own.JSON200 == nil {
			t.Fatalf("%s: %s", own.Status(), own.Body)
		}
		var ns []string
		for _, it := range own.JSON200.Items {
			ns = append(ns, fmt.Sprintf("%s/%s/%s %g", it.Project, it.Cluster, it.Namespace, it.Usage))
		}
		sort.Strings(ns)
		if fmt.Sprint(ns) != "[team/east/api 2 team/east/web 0.5]" {
			t.Fatalf("team's namespaces: %v", ns)
		}
	})

	t.Run("another project is a typed 403", func(t *testing.T) {
		resp, err := c.GetProjectUsageWithResponse(ctx, "ops", &client.GetProjectUsageParams{Start: date(day), End: date(day)}, bearer(teamToken))
		if err != nil {
			t.Fatal(err)
		}
		st := resp.JSON403
		if resp.StatusCode() != http.StatusForbidden || st == nil {
			t.Fatalf("%s: %s", resp.Status(), resp.Body)
		}
		if st.Kind != client.StatusKindStatus || st.Code != 403 || st.Reason != client.Forbidden || st.Status != client.Failure || resp.JSON200 != nil {
			t.Fatalf("403 decoded as %+v", *st)
		}
		noToken, err := c.GetPlatformUsageWithResponse(ctx, &client.GetPlatformUsageParams{Start: date(day), End: date(day)})
		if err != nil {
			t.Fatal(err)
		}
		if noToken.JSON401 == nil || noToken.JSON401.Reason != client.Unauthorized {
			t.Fatalf("without a token: %s %s", noToken.Status(), noToken.Body)
		}
	})

	t.Run("coverage", func(t *testing.T) {
		resp, err := c.GetPlatformCoverageWithResponse(ctx, &client.GetPlatformCoverageParams{Start: date(day), End: date(day)}, bearer(platformToken))
		if err != nil {
			t.Fatal(err)
		}
		if resp.JSON200 == nil {
			t.Fatalf("%s: %s", resp.Status(), resp.Body)
		}
		var got []string
		for _, it := range resp.JSON200.Items {
			got = append(got, fmt.Sprintf("%s %s %d/%d %g %s", it.Cluster, it.Day, it.CoveredSeconds, it.DaySeconds, it.Ratio, it.LastSampleEnd.UTC().Format(time.RFC3339)))
		}
		// east: 01:00-02:00 and 03:00-03:30, 5400 s; west: 04:00-06:00, 7200 s.
		want := []string{"east 20260302 5400/86400 0.0625 2026-03-02T03:30:00Z", "west 20260302 7200/86400 0.083333 2026-03-02T06:00:00Z"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("coverage\n got %v\nwant %v", got, want)
		}
		if forbidden, err := c.GetPlatformCoverageWithResponse(ctx, &client.GetPlatformCoverageParams{Start: date(day), End: date(day)}, bearer(teamToken)); err != nil || forbidden.JSON403 == nil {
			t.Fatalf("coverage with a project token: %v %s", err, forbidden.Body)
		}
	})

	t.Run("notifications", func(t *testing.T) {
		// team's month reached the 1 core-hour threshold; ops's 0.5 did not.
		var list *client.NotificationList
		testenv.Eventually(t, 20*time.Second, "team's notification delivered", func() (bool, string) {
			resp, err := c.ListNotificationsWithResponse(ctx, &client.ListNotificationsParams{}, bearer(platformToken))
			if err != nil {
				return false, err.Error()
			}
			if resp.JSON200 == nil {
				return false, resp.Status() + " " + string(resp.Body)
			}
			list = resp.JSON200
			return list.Total == 1 && list.Items[0].Delivery.State == client.Delivered, fmt.Sprintf("%+v", list.Items)
		})
		ev := list.Items[0].Event
		if ev.Subject != "project/team" || ev.Data.Project != "team" || ev.Data.Threshold != 1 || ev.Data.Rule != "project-cpu" {
			t.Fatalf("notification %+v", ev)
		}
		own, err := c.ListProjectNotificationsWithResponse(ctx, "team", &client.ListProjectNotificationsParams{}, bearer(teamToken))
		if err != nil || own.JSON200 == nil || own.JSON200.Total != 1 {
			t.Fatalf("team's notifications: %v %s", err, own.Body)
		}
		other, err := c.ListProjectNotificationsWithResponse(ctx, "ops", &client.ListProjectNotificationsParams{}, bearer(teamToken))
		if err != nil || other.JSON403 == nil || other.JSON403.Reason != client.Forbidden {
			t.Fatalf("ops's notifications with team's token: %v %s", err, other.Body)
		}
	})
}
