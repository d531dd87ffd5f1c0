package notifier

import (
	"context"
	"encoding/base64"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alauda/costmeter/internal/event"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/testenv"
)

// TestCrashBetweenDecisionAndRecord: the script marked a threshold fired,
// then the process died before the notification was recorded (the event
// is redelivered). The next evaluation records it, once, without counting
// a second firing; later evaluations leave it alone.
func TestCrashBetweenDecisionAndRecord(t *testing.T) {
	r := testenv.StartRedis(t)
	ns := testenv.StartNATS(t)
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	secret := "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 32))
	set, err := ParseRules([]byte(`rules:
- {name: pay, kind: project, item: Cpu, method: Usage, period: day, thresholds: [1], webhook: "http://127.0.0.1:9/x", secretFile: /s}
`), func(string) ([]byte, error) { return []byte(secret), nil })
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Retention = 20 * 365 * 24 * time.Hour
	n, err := New(cfg, js, nc, r.Client(), StaticRules(set), WithDayReader(nil))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var v rollup.Values
	v[rollup.Field(rollup.Cpu, rollup.Usage)] = 2 * rollup.Scale * rollup.UnitSecondsPerHour
	day := rollup.DayFromDate(2026, 4, 2)
	ev := event.New(rollup.Change{Scope: rollup.ScopeProject, Day: day, Member: "payments", Values: v}, rollup.Cpu)
	rule := set.Rules[0]
	p := periodOf(rule.Period, day)
	id := periodID(rule, &ev, p.first)

	// The decision, then the crash.
	_, crossings, err := n.store.evaluate(ctx, id, ev.Day, ev.Fixed.Usage, p.end().Add(cfg.Retention), time.Now(), rule.Thresholds, seedNever, nil)
	if err != nil || len(crossings) != 1 || !crossings[0].New {
		t.Fatalf("decision: %+v %v", crossings, err)
	}
	log := NewLog(r.Client())
	if _, total, _ := log.List(ctx, "", 0, 10); total != 0 {
		t.Fatalf("the test proves nothing: %d notifications before the redelivery", total)
	}

	// The redelivery.
	for range 2 {
		if err := n.Evaluate(ctx, &ev, day); err != nil {
			t.Fatal(err)
		}
	}
	items, total, err := log.List(ctx, "payments", 0, 10)
	if err != nil || total != 1 || items[0].Delivery.State != StatePending {
		t.Fatalf("after the redelivery: %d notifications %+v, err %v", total, items, err)
	}
	if q, err := r.Client().ZCard(ctx, pendingKey).Result(); err != nil || q != 1 {
		t.Errorf("delivery queue holds %d, err %v", q, err)
	}
	if _, again, _ := n.store.evaluate(ctx, id, ev.Day, ev.Fixed.Usage, p.end().Add(cfg.Retention), time.Now(), rule.Thresholds, seedNever, nil); len(again) != 0 {
		t.Errorf("a recorded crossing is returned again: %+v", again)
	}
}
