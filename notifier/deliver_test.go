package notifier_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/alauda/costmeter/internal/event"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/telemetry"
	"github.com/alauda/costmeter/internal/testenv"
	"github.com/alauda/costmeter/notifier"
)

// only waits until exactly one notification is listed and cond holds for
// it.
func (e *env) only(what string, cond func(notifier.Listed) bool) notifier.Listed {
	e.t.Helper()
	var got notifier.Listed
	testenv.Eventually(e.t, 30*time.Second, what, func() (bool, string) {
		l := e.list()
		if len(l) != 1 {
			return false, fmt.Sprintf("%d notifications", len(l))
		}
		got = l[0]
		return cond(got), fmt.Sprintf("%+v", got.Delivery)
	})
	return got
}

func TestDeliveryRetriesUntilTheReceiverIsBack(t *testing.T) {
	e := newEnv(t)
	tel, err := telemetry.Setup(context.Background(), telemetry.Config{}, "notifier-test")
	if err != nil {
		t.Fatal(err)
	}
	meter := notifier.WithMeter(tel.Meter("notifier"))
	e.writeRules("name: pay, kind: project, entity: payments, item: Cpu, method: Usage, period: day, thresholds: [1]")

	// The receiver is down: connection refused.
	_, stop := e.start(testConfig(notifier.DefaultConsumer), meter)
	e.publishEvent(rollup.ScopeProject, rollup.Entity{Project: "payments"}, rollup.DayFromDate(2026, 3, 4), rollup.Cpu, event.Fixed{Usage: fixed(1.5)}, true)
	refused := e.only("attempts refused", func(l notifier.Listed) bool {
		return l.Delivery.State == notifier.StatePending && l.Delivery.Attempts >= 2 && l.Delivery.StatusCode == 0 &&
			strings.Contains(l.Delivery.LastError, "connection refused")
	})
	id := listedEvent(t, refused).ID

	// The notifier restarts while the delivery is pending; the receiver
	// comes up answering 500.
	stop()
	r := e.list()[0].Delivery.Attempts
	e.recv.answer(http.StatusInternalServerError)
	e.recv.up()
	_, stop = e.start(testConfig(notifier.DefaultConsumer), meter)
	e.only("attempts answered 500", func(l notifier.Listed) bool {
		return l.Delivery.State == notifier.StatePending && l.Delivery.StatusCode == 500 &&
			l.Delivery.LastError == "receiver answered 500" && e.recv.attemptsOf(id) >= 2
	})

	// Back: delivered once, under the same id.
	e.recv.answer(http.StatusAccepted)
	done := e.only("delivered", func(l notifier.Listed) bool { return l.Delivery.State == notifier.StateDelivered })
	stop()
	delivered, events, problems := e.recv.snapshot()
	if len(problems) > 0 {
		t.Fatalf("receiver: %v", problems)
	}
	if len(events) != 1 || delivered[id] != 1 {
		t.Fatalf("delivered %v, want %s once", delivered, id)
	}
	if done.Delivery.StatusCode != http.StatusAccepted || done.Delivery.LastError != "" {
		t.Errorf("delivery state: %+v", done.Delivery)
	}
	if want := r + e.recv.attemptsOf(id); done.Delivery.Attempts != want {
		t.Errorf("attempts recorded %d, want %d refused + %d received", done.Delivery.Attempts, r, e.recv.attemptsOf(id))
	}
	if ce := events[id]; ce.Data.Usage != 1.5 || ce.Data.Threshold != 1 || ce.Data.PeriodStart != "20260304" || ce.Data.PeriodEnd != "20260304" {
		t.Errorf("event data: %+v", ce.Data)
	}

	m := testenv.Scrape(t, tel.Handler())
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"cost_notifier_events_evaluated_total", nil, 1},
		{"cost_notifier_thresholds_fired_total", []string{"rule", "pay"}, 1},
		{"cost_notifier_deliveries_total", []string{"outcome", "delivered"}, 1},
		{"cost_notifier_deliveries_total", []string{"outcome", "retry"}, float64(done.Delivery.Attempts - 1)},
		{"cost_notifier_delivery_latency_seconds", nil, 1},
	} {
		if got, _ := m.Value(c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v (series %v)", c.name, c.labels, got, c.want, m.Series(c.name))
		}
	}
}

func TestDeliveryGivesUpAfterMaxAge(t *testing.T) {
	e := newEnv(t)
	e.writeRules("name: pay, kind: cluster, item: Storage, method: Request, period: month, thresholds: [1]")
	e.recv.answer(http.StatusServiceUnavailable)
	e.recv.up()
	cfg := testConfig(notifier.DefaultConsumer)
	cfg.Delivery.MaxAge = 300 * time.Millisecond
	_, stop := e.start(cfg)
	e.publishEvent(rollup.ScopeCluster, rollup.Entity{Cluster: "east"}, rollup.DayFromDate(2026, 3, 4), rollup.Storage, event.Fixed{Request: fixed(3)}, true)
	failed := e.only("failed", func(l notifier.Listed) bool { return l.Delivery.State == notifier.StateFailed })
	stop()
	id := listedEvent(t, failed).ID
	if failed.Delivery.StatusCode != 503 || failed.Delivery.LastError != "receiver answered 503" || failed.Delivery.Attempts < 2 ||
		failed.Delivery.Attempts != e.recv.attemptsOf(id) {
		t.Errorf("failed delivery: %+v, receiver saw %d attempts", failed.Delivery, e.recv.attemptsOf(id))
	}
}

// TestBadMessagesDoNotBlock: what is not a rollup event is dropped (and
// never redelivered); the events after it are evaluated.
func TestBadMessagesDoNotBlock(t *testing.T) {
	e := newEnv(t)
	e.writeRules("name: pay, kind: project, item: Cpu, method: Usage, period: week, thresholds: [1]")
	e.recv.up()
	_, stop := e.start(testConfig(notifier.DefaultConsumer))
	defer stop()
	ctx := context.Background()
	for _, body := range []string{"not json", `{"kind":"project","project":"payments","day":"2026-03-04","item":"Cpu"}`} {
		if _, err := e.js.Publish(ctx, "cost.rollups.project.payments", []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	e.publishEvent(rollup.ScopeProject, rollup.Entity{Project: "payments"}, rollup.DayFromDate(2026, 3, 4), rollup.Cpu, event.Fixed{Usage: fixed(1)}, true)
	e.waitDelivered(map[crossing]bool{{"pay", "project:payments", "20260302", "20260308", 1}: true})
	e.drained(notifier.DefaultConsumer)
}

// TestRedisCluster: every script touches one key and every key has its own
// hash tag, so the notifier runs on Redis Cluster as on one Redis.
func TestRedisCluster(t *testing.T) {
	c := testenv.StartRedisCluster(t)
	e := newEnvWith(t, c.Client())
	e.writeRules("name: ns, kind: namespace, item: Memory, method: Request, period: day, thresholds: [10, 20]")
	e.recv.up()
	e.start(testConfig(notifier.DefaultConsumer))
	want := map[crossing]bool{}
	for i, ns := range []string{"a", "b", "c", "d"} {
		for d := 1; d <= 3; d++ {
			e.publishEvent(rollup.ScopeNamespace, rollup.Entity{Project: "p" + ns, Cluster: "east", Namespace: ns}, rollup.DayFromDate(2026, 5, d), rollup.Memory,
				event.Fixed{Request: fixed(float64(5 + 5*i))}, true)
			for _, th := range []float64{10, 20} {
				if float64(5+5*i) >= th {
					want[crossing{"ns", "namespace:p" + ns + "/east/" + ns, fmt.Sprintf("202605%02d", d), fmt.Sprintf("202605%02d", d), th}] = true
				}
			}
		}
	}
	e.waitDelivered(want)
	e.drained(notifier.DefaultConsumer)
	page, total, err := notifier.NewLog(e.rdb).List(context.Background(), "pd", 0, 2)
	if err != nil || total != 6 || len(page) != 2 {
		t.Errorf("project pd: %d of %d listed, err %v", len(page), total, err)
	}
}
