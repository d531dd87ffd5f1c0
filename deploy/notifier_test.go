package deploy_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alauda/costmeter/internal/event"
	"github.com/alauda/costmeter/internal/pipelinetest"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/testenv"
	"github.com/alauda/costmeter/notifier"
)

// TestNATSNotifier runs the real notifier as the sample config's user
// notifier: it consumes the rollup events the aggregator user publishes,
// delivers and publishes its alert, and may neither publish rollup events
// nor samples.
func TestNATSNotifier(t *testing.T) {
	srv := startConfiguredNATS(t)
	agg := connectAs(t, srv, "aggregator", natsPasswords["AGGREGATOR_PASSWORD"], "_INBOX_aggregator")
	ctx := context.Background()
	if err := stream.EnsureRollups(ctx, agg.js, stream.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	admin := connectAs(t, srv, "admin", natsPasswords["ADMIN_PASSWORD"], "")
	alerts := make(chan *nats.Msg, 4)
	sub, err := admin.nc.ChanSubscribe("cost.alerts.>", alerts)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	_ = admin.nc.Flush()

	r := testenv.StartRedis(t)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	defer hook.Close()
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	rulesFile := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(secret, []byte("whsec_"+base64.StdEncoding.EncodeToString(make([]byte, 32))), 0o600); err != nil {
		t.Fatal(err)
	}
	rules := fmt.Sprintf("rules:\n- {name: pay, kind: project, item: Cpu, method: Usage, period: month, thresholds: [1], webhook: %q, secretFile: %q}\n", hook.URL, secret)
	if err := os.WriteFile(rulesFile, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	loaded, err := notifier.LoadRules(rulesFile, time.Second, log)
	if err != nil {
		t.Fatal(err)
	}
	nt := connectAs(t, srv, "notifier", natsPasswords["NOTIFIER_PASSWORD"], "_INBOX_notifier")
	cfg := notifier.DefaultConfig()
	cfg.Retention = 20 * 365 * 24 * time.Hour
	n, err := notifier.New(cfg, nt.js, nt.nc, r.Client(), loaded, notifier.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	pipelinetest.Start(t, n)

	var v rollup.Values
	v[rollup.Field(rollup.Cpu, rollup.Usage)] = 2 * rollup.Scale * rollup.UnitSecondsPerHour
	ev := event.New(rollup.Change{Scope: rollup.ScopeProject, Day: rollup.DayFromDate(2025, 6, 1), Member: "payments", Values: v}, rollup.Cpu)
	msg := nats.NewMsg(ev.Subject())
	msg.Data = ev.Marshal()
	msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
	if _, err := agg.js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "the notification delivered", func() (bool, string) {
		items, total, err := notifier.NewLog(r.Client()).List(ctx, "", 0, 10)
		if err != nil {
			return false, err.Error()
		}
		return total == 1 && items[0].Delivery.State == notifier.StateDelivered, fmt.Sprintf("%d notifications", total)
	})
	select {
	case m := <-alerts:
		if m.Subject != "cost.alerts.project.payments" {
			t.Errorf("alert on %s", m.Subject)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no alert on cost.alerts.>")
	}
	nt.denied(t, "notifier publishing a rollup event", func() error { return nt.nc.Publish(ev.Subject(), msg.Data) })
	nt.denied(t, "notifier publishing a sample", func() error { return nt.nc.Publish("cost.samples.sim-east", []byte("{}")) })
	// It only creates COST_ROLLUPS when missing, never changes it.
	nt.denied(t, "notifier updating COST_ROLLUPS", func() error {
		return nt.nc.PublishRequest("$JS.API.STREAM.UPDATE.COST_ROLLUPS", "_INBOX_notifier.update", []byte("{}"))
	})
}

// TestNotifierManifestRules: the rules file shipped in the manifests'
// Secret is valid, with the secret file it names mounted from the same
// Secret.
func TestNotifierManifestRules(t *testing.T) {
	m := loadManifests(t)
	s, ok := m.secrets["cost-notifier"]
	if !ok {
		t.Fatal("no Secret cost-notifier")
	}
	const dir = "/etc/costmeter/notifier/"
	set, err := notifier.ParseRules([]byte(s.StringData["rules.yaml"]), func(p string) ([]byte, error) {
		v, ok := s.StringData[strings.TrimPrefix(p, dir)]
		if !ok || !strings.HasPrefix(p, dir) {
			return nil, os.ErrNotExist
		}
		return []byte(v), nil
	})
	if err != nil {
		t.Fatalf("shipped rules: %v", err)
	}
	if len(set.Rules) == 0 || len(set.Warnings) != 0 {
		t.Errorf("shipped rules: %d rules, warnings %v", len(set.Rules), set.Warnings)
	}
}
