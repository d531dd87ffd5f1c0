package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alauda/costmeter/aggregator"
	"github.com/alauda/costmeter/api"
	"github.com/alauda/costmeter/internal/auth"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/pipelinetest"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/testenv"
)

// Tokens of the stack's token file: a platform administrator and a member
// of project beta only.
const (
	adminToken = "admin-secret-token"
	betaToken  = "beta-secret-token"
)

// namespaces of the known data: 14 namespaces (more than the chart's top
// 10) of three projects over two clusters. Every name is distinct, so a
// name of another project in the DOM is a leak.
var namespaces = []struct{ project, cluster, namespace string }{
	{"alpha", "east", "alpha-web"}, {"alpha", "east", "alpha-api"}, {"alpha", "west", "alpha-db"},
	{"alpha", "west", "alpha-cache"}, {"alpha", "east", "alpha-jobs"}, {"alpha", "west", "alpha-ml"},
	{"beta", "east", "beta-web"}, {"beta", "west", "beta-api"}, {"beta", "east", "beta-db"}, {"beta", "west", "beta-etl"},
	{"gamma", "east", "gamma-web"}, {"gamma", "west", "gamma-api"}, {"gamma", "east", "gamma-db"}, {"gamma", "west", "gamma-bi"},
}

// stack is NATS (embedded), Redis (a child), the aggregator and the API
// with --auth token, loaded with known data up to now.
type stack struct {
	base   string
	tokens string // the token file, reloaded within 50 ms of a change
	js     jetstream.JetStream
	today  time.Time // midnight UTC
	// split is where today's first window ends; the live test adds the
	// window after it.
	split time.Time
}

func startStack(t *testing.T) *stack {
	t.Helper()
	s := startServers(t, true)
	s.load(t)
	return s
}

// startServers starts the stack without data; events turns on the
// aggregator's rollup events, which the watch routes (the console's live
// view) follow.
func startServers(t *testing.T, events bool) *stack {
	t.Helper()
	return startServersWith(t, events, stackOptions{})
}

// stackOptions change the stack for one test: the store's kept label
// keys (the API keeps the same), and the API's policy and price list.
type stackOptions struct {
	groupKeys      []string
	allocationFile string
	prices         string
}

func startServersWith(t *testing.T, events bool, so stackOptions) *stack {
	t.Helper()
	n := testenv.StartNATS(t)
	r := testenv.StartRedis(t)
	log := slog.New(slog.DiscardHandler)
	nc, js, err := natsconn.Connect(n.URL(), "console-test", log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	rdb := r.Client()
	store, err := rollup.NewStore(rdb, time.UTC, rollup.DefaultRetention, rollup.WithGroupKeys(so.groupKeys))
	if err != nil {
		t.Fatal(err)
	}
	acfg := aggregator.DefaultConfig()
	acfg.MaxWait = 20 * time.Millisecond
	acfg.Events = events
	agg, err := aggregator.New(acfg, js, store, aggregator.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	pipelinetest.Start(t, agg)

	tokens := filepath.Join(t.TempDir(), "tokens.yaml")
	file := fmt.Sprintf("tokens:\n- name: admin\n  sha256: %q\n  scope: platform\n- name: beta-member\n  sha256: %q\n  projects: [beta]\n",
		auth.HashToken(adminToken), auth.HashToken(betaToken))
	if err := os.WriteFile(tokens, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	authn, err := auth.New(auth.Config{Mode: auth.ModeToken, TokenFile: tokens, TokenFilePoll: 50 * time.Millisecond}, log)
	if err != nil {
		t.Fatal(err)
	}
	cfg := api.DefaultConfig()
	cfg.PricingFile = filepath.Join(t.TempDir(), "prices.yaml")
	prices := "prices:\n- {item: Cpu, method: Effective, from: \"2020-01-01\", price: 0.25}\n- {item: Cpu, method: Effective, from: \"" +
		time.Now().UTC().AddDate(0, 0, -10).Format(time.DateOnly) + "\", price: 0.5}\n"
	if so.prices != "" {
		prices = so.prices
	}
	if err := os.WriteFile(cfg.PricingFile, []byte(prices), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.AllocationLabels = strings.Join(so.groupKeys, ",")
	cfg.AllocationFile = so.allocationFile
	cfg.Listen = "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	srv, err := api.New(cfg, store, time.UTC, api.WithAuthenticate(authn.Handler()), api.WithEvents(js), api.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	pipelinetest.Start(t, runner(authn.Run))
	pipelinetest.Start(t, srv)
	s := &stack{base: "http://" + cfg.Listen, js: js, tokens: tokens}
	testenv.Eventually(t, 20*time.Second, "api ready", func() (bool, string) {
		resp, err := http.Get(s.base + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200, resp.Status
	})
	return s
}

type runner func(context.Context) error

func (r runner) Run(ctx context.Context) error { return r(ctx) }

// cpu is namespace i's CPU in cores on day d: distinct per namespace, so
// that the order by usage is not the order by name.
func cpu(i int, d time.Time) float64 {
	return float64((i*7)%len(namespaces)+1) * (1 + float64(d.YearDay()%5)/10)
}

// load publishes 40 days of whole-day windows per namespace, and today
// from midnight to split, and waits until the aggregator applied them.
func (s *stack) load(t *testing.T) {
	t.Helper()
	now := time.Now().UTC()
	s.today = now.Truncate(24 * time.Hour)
	s.split = s.today.Add(now.Sub(s.today) / 2).Truncate(time.Second)
	if s.split.Equal(s.today) {
		s.split = s.today.Add(time.Second)
	}
	var want int
	for i, ns := range namespaces {
		var batch []sample.Sample
		for d := s.today.AddDate(0, 0, -40); d.Before(s.today); d = d.AddDate(0, 0, 1) {
			batch = append(batch, s.sample(i, d, d.AddDate(0, 0, 1), cpu(i, d)))
		}
		batch = append(batch, s.sample(i, s.today, s.split, cpu(i, s.today)))
		s.publish(t, ns.cluster, batch)
		want++
	}
	testenv.Eventually(t, 60*time.Second, "known data applied", func() (bool, string) {
		return pipelinetest.Drained(s.js)
	})
}

func (s *stack) sample(i int, from, to time.Time, cores float64) sample.Sample {
	ns := namespaces[i]
	gib := float64(1 << 30)
	return sample.Sample{
		Cluster: ns.cluster, Project: ns.project, Namespace: ns.namespace, Start: from, End: to,
		CPU:     sample.Resources{Usage: cores, Request: cores * 1.5, Quota: 64},
		Memory:  sample.Resources{Usage: cores * 2 * gib, Request: 4 * gib, Quota: 256 * gib},
		Storage: sample.Resources{Usage: float64(i+1) * 10 * gib, Request: 100 * gib, Quota: 1000 * gib},
	}
}

func (s *stack) publish(t *testing.T, cluster string, batch []sample.Sample) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.js.Publish(ctx, stream.SamplesPrefix+cluster, sample.EncodeBatch(nil, batch)); err != nil {
		t.Fatalf("publish samples: %v", err)
	}
}

// get asks the API itself, with token, what the console should show.
func (s *stack) get(t *testing.T, token, path string, q url.Values) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.base+path+"?"+q.Encode(), nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// rows reads every row of a usage query, in its order.
func (s *stack) rows(t *testing.T, project string, q url.Values) []api.Row {
	t.Helper()
	var out []api.Row
	for page := 1; ; page++ {
		q.Set("pageSize", "1000")
		q.Set("currentPage", strconv.Itoa(page))
		code, b := s.get(t, adminToken, usagePath(project), q)
		if code != 200 {
			t.Fatalf("%s?%s: %d %s", usagePath(project), q.Encode(), code, b)
		}
		var r api.Response
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r.Items...)
		if len(out) >= r.Total || len(r.Items) == 0 {
			return out
		}
	}
}

func usagePath(project string) string {
	if project == "" {
		return api.PlatformPath
	}
	return strings.Replace(api.ProjectPath, ":project", project, 1)
}
