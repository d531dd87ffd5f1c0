package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alauda/costmeter/aggregator"
	"github.com/alauda/costmeter/cmd/internal/wire"
	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/exporter"
	"github.com/alauda/costmeter/internal/auth"
	"github.com/alauda/costmeter/internal/config"
	"github.com/alauda/costmeter/internal/httpguard"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/testenv"

	"github.com/alauda/costmeter/api"
	"github.com/alauda/costmeter/notifier"
)

// TestCostdEndToEnd runs what `make run` runs, smaller: embedded NATS, a
// redis-server child, a simulated cluster backfilling two days, the
// aggregator and the API; the API must answer with the simulated projects,
// and cancelling stops everything.
func TestCostdEndToEnd(t *testing.T) {
	dir := t.TempDir()
	apiPort := testenv.FreePort(t)
	o := options{
		common:     config.Common{Timezone: "UTC"},
		dataDir:    dir,
		natsListen: "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)),
		redisPort:  testenv.FreePort(t),
		retention:  rollup.DefaultRetention,
		aggregator: aggregator.DefaultConfig(),
		api: wire.APIConfig{
			API:   api.Config{Listen: "127.0.0.1:" + strconv.Itoa(apiPort), Currency: "CNY"},
			Auth:  auth.Config{Mode: auth.ModeNone},
			Guard: httpguard.DefaultConfig(),
		},
	}
	o.collector.MaxBatch = collector.DefaultMaxBatch
	// The notifier, with one rule every simulated project crosses daily.
	var hooks atomic.Int64
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Content-Type") == notifier.ContentType && r.Header.Get("webhook-signature") != "" {
			hooks.Add(1)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer hook.Close()
	secret := filepath.Join(dir, "secret")
	rulesFile := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(secret, []byte("whsec_"+base64.StdEncoding.EncodeToString(make([]byte, 32))), 0o600); err != nil {
		t.Fatal(err)
	}
	rules := fmt.Sprintf("rules:\n- {name: daily, kind: project, item: Cpu, method: Usage, period: day, thresholds: [0.001], webhook: %q, secretFile: %q}\n", hook.URL, secret)
	if err := os.WriteFile(rulesFile, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	o.notifier = notifier.DefaultConfig()
	o.notifier.RulesFile = rulesFile
	loaded, err := notifier.LoadRules(rulesFile, time.Second, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	o.rules = loaded
	// The FOCUS exporter, into a directory.
	o.exporter = exporter.DefaultConfig()
	o.exporter.URL = "file://" + filepath.Join(dir, "export")
	o.exporter.Delay, o.exporter.Poll, o.exporter.Lookback = 0, time.Second, 2
	o.collector.Sim = collector.SimConfig{Clusters: []string{"sim-a", "sim-b"}, Projects: 3, Namespaces: 6,
		Interval: time.Minute, Backfill: 48 * time.Hour, BackfillInterval: time.Hour, Live: true}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() { done <- serve(ctx, o, log, io.Discard) }()

	today := time.Now().UTC()
	url := fmt.Sprintf("http://127.0.0.1:%d/platform/cost.alauda.io/v1beta1/costs/usage?start=%s&end=%s&kind=project_all&step=day",
		apiPort, today.AddDate(0, 0, -1).Format("2006-01-02"), today.Format("2006-01-02"))
	testenv.Eventually(t, 60*time.Second, "the API reports every simulated project for yesterday and today", func() (bool, string) {
		resp, err := http.Get(url)
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		var body struct {
			Total int `json:"total"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return false, err.Error()
		}
		return resp.StatusCode == 200 && body.Total == 6, fmt.Sprintf("status %d, total %d", resp.StatusCode, body.Total)
	})
	// The notifier fires and delivers; the API lists what it fired.
	testenv.Eventually(t, 60*time.Second, "notifications delivered and listed", func() (bool, string) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/platform/cost.alauda.io/v1beta1/notifications", apiPort))
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		var body struct {
			Total int `json:"total"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return false, err.Error()
		}
		return resp.StatusCode == 200 && body.Total > 0 && hooks.Load() > 0, fmt.Sprintf("status %d, total %d, webhooks %d", resp.StatusCode, body.Total, hooks.Load())
	})
	// The exporter writes yesterday (ended) with its manifest.
	yesterday := today.AddDate(0, 0, -1)
	manifest := filepath.Join(dir, "export", exporter.ManifestPath(rollup.DayFromDate(yesterday.Date())))
	testenv.Eventually(t, 60*time.Second, "yesterday exported", func() (bool, string) {
		raw, err := os.ReadFile(manifest)
		if err != nil {
			return false, err.Error()
		}
		var m exporter.Manifest
		if err := json.Unmarshal(raw, &m); err != nil {
			return false, err.Error()
		}
		for _, d := range m.Days {
			if d.ChargeDate == yesterday.Format(time.DateOnly) {
				return true, ""
			}
		}
		return false, string(raw)
	})
	// The watch route streams from the in-process JetStream: today's
	// project totals first; an open stream does not hold up the stop.
	wresp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/platform/cost.alauda.io/v1beta1/costs/usage/watch", apiPort))
	if err != nil {
		t.Fatal(err)
	}
	defer wresp.Body.Close()
	if wresp.StatusCode != 200 {
		t.Fatalf("watch: %s", wresp.Status)
	}
	frames := make(chan string, 64)
	go func() {
		defer close(frames)
		br := bufio.NewReader(wresp.Body)
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return
			}
			frames <- strings.TrimSpace(l)
		}
	}()
	readUntil := func(prefix string) []string {
		t.Helper()
		var seen []string
		deadline := time.After(15 * time.Second)
		for {
			select {
			case l, ok := <-frames:
				if !ok {
					t.Fatalf("watch ended before %q: %q", prefix, seen)
				}
				seen = append(seen, l)
				if strings.HasPrefix(l, prefix) {
					return seen
				}
			case <-deadline:
				t.Fatalf("no %q on the watch within 15 s: %q", prefix, seen)
			}
		}
	}
	if seen := readUntil("event: synced"); !slices.Contains(seen, "event: rollup") {
		t.Fatalf("no totals before synced: %q", seen)
	}
	cancel()
	readUntil(": server shutting down")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("costd did not stop within 30s of cancel")
	}
}

func TestInvalidConfiguration(t *testing.T) {
	rules := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(rules, []byte("rules:\n- {name: x, kind: pod}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var broken strings.Builder
	if code := run([]string{"--rules-file", rules}, &broken); code != 2 || !strings.Contains(broken.String(), `rule 1 ("x"): kind: "pod"`) {
		t.Errorf("broken rules file: exit %d, want 2 naming the rule:\n%s", code, broken.String())
	}
	var stderr strings.Builder
	if code := run([]string{"--timezone", "Nowhere/Land", "--sim-namespaces", "0", "--allocation-labels", "a,a", "--allocation-file", "/does/not/exist.yaml"}, &stderr); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	for _, want := range []string{"--timezone", "--sim-namespaces", "--allocation-labels", "--allocation-file"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
}
