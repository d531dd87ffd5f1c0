package notifier_test

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/alauda/costmeter/internal/event"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/testenv"
	"github.com/alauda/costmeter/notifier"
)

// ruleModel is a rule as the test's own model evaluates it.
type ruleModel struct {
	name, kind, entity string
	item               rollup.Item
	method             rollup.Method
	period             string
	thresholds         []float64
	yaml               string
}

// periodStart returns the first and last day of the period holding t
// (a UTC date), computed with the time package, not the notifier's code.
func periodStart(period string, t time.Time) (time.Time, time.Time) {
	switch period {
	case "week":
		// ISO weeks start on Monday.
		back := (int(t.Weekday()) + 6) % 7
		first := t.AddDate(0, 0, -back)
		if y, w := first.ISOWeek(); func() bool { y2, w2 := t.ISOWeek(); return y != y2 || w != w2 }() {
			panic(fmt.Sprintf("model: %s and %s in different ISO weeks", first, t))
		}
		return first, first.AddDate(0, 0, 6)
	case "month":
		first := time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
		return first, first.AddDate(0, 1, -1)
	}
	return t, t
}

func ymd(t time.Time) string { return t.Format("20060102") }

// finalTotal is an entity-day-item's final totals.
type entityDay struct {
	scope rollup.Scope
	ent   rollup.Entity
	day   time.Time
	item  rollup.Item
}

func methodValue(f event.Fixed, m rollup.Method) int64 {
	switch m {
	case rollup.Usage:
		return f.Usage
	case rollup.Request:
		return f.Request
	case rollup.ProjectQuota:
		return f.ProjectQuota
	}
	return f.Effective
}

func kindOf(sc rollup.Scope) string {
	switch sc {
	case rollup.ScopeProject:
		return "project"
	case rollup.ScopeCluster:
		return "cluster"
	}
	return "namespace"
}

func entityName(sc rollup.Scope, e rollup.Entity) string {
	switch sc {
	case rollup.ScopeProject:
		return e.Project
	case rollup.ScopeCluster:
		return e.Cluster
	}
	return e.Project + "/" + e.Cluster + "/" + e.Namespace
}

// expectedCrossings is the model: per rule, entity and period, the sum of
// the final day totals; every threshold at or below it fires once.
func expectedCrossings(rules []ruleModel, finals map[entityDay]event.Fixed) map[crossing]bool {
	type pkey struct {
		rule, entity, first, last string
	}
	sums := map[pkey]int64{}
	for ed, f := range finals {
		for _, r := range rules {
			if kindOf(ed.scope) != r.kind || ed.item != r.item {
				continue
			}
			name := map[string]string{"project": ed.ent.Project, "cluster": ed.ent.Cluster, "namespace": ed.ent.Namespace}[r.kind]
			if r.entity != "" && name != r.entity {
				continue
			}
			first, last := periodStart(r.period, ed.day)
			k := pkey{r.name, r.kind + ":" + entityName(ed.scope, ed.ent), ymd(first), ymd(last)}
			sums[k] += methodValue(f, r.method)
		}
	}
	want := map[crossing]bool{}
	for k, sum := range sums {
		for _, r := range rules {
			if r.name != k.rule {
				continue
			}
			for _, th := range r.thresholds {
				if sum >= int64(math.Round(th*3600*1e6)) {
					want[crossing{k.rule, k.entity, k.first, k.last, th}] = true
				}
			}
		}
	}
	return want
}

var exactRules = []ruleModel{
	{name: "pay-cpu-month", kind: "project", entity: "payments", item: rollup.Cpu, method: rollup.Effective, period: "month", thresholds: []float64{100, 500},
		yaml: "name: pay-cpu-month, kind: project, entity: payments, item: Cpu, method: Effective, period: month, thresholds: [500, 100]"},
	{name: "ns-mem-week", kind: "namespace", item: rollup.Memory, method: rollup.Usage, period: "week", thresholds: []float64{100, 160, 200},
		yaml: "name: ns-mem-week, kind: namespace, item: Memory, method: Usage, period: week, budget: 200, percent: [50, 80, 100]"},
	{name: "cl-cpu-day", kind: "cluster", item: rollup.Cpu, method: rollup.Request, period: "day", thresholds: []float64{24, 48},
		yaml: "name: cl-cpu-day, kind: cluster, item: Cpu, method: Request, period: day, thresholds: [24, 48]"},
	{name: "projects-cpu-day", kind: "project", item: rollup.Cpu, method: rollup.Usage, period: "day", thresholds: []float64{12.5},
		yaml: "name: projects-cpu-day, kind: project, item: Cpu, method: Usage, period: day, thresholds: [12.5]"},
}

// exactEvents makes the final totals of every entity, day and item of the
// test, and the events that reach them: up to three increasing totals per
// entity-day-item, shuffled so that a smaller total often arrives after a
// larger one, as from two aggregators.
func exactEvents() (map[entityDay]event.Fixed, []entityDay, []event.Fixed) {
	rng := rand.New(rand.NewPCG(13, 2025))
	type ent struct {
		sc rollup.Scope
		e  rollup.Entity
	}
	ents := []ent{
		{rollup.ScopeProject, rollup.Entity{Project: "payments"}},
		{rollup.ScopeProject, rollup.Entity{Project: "billing"}},
		{rollup.ScopeNamespace, rollup.Entity{Project: "payments", Cluster: "east.example", Namespace: "api"}},
		{rollup.ScopeNamespace, rollup.Entity{Project: "payments", Cluster: "west", Namespace: "web"}},
		{rollup.ScopeNamespace, rollup.Entity{Project: "billing", Cluster: "east.example", Namespace: "jobs"}},
		{rollup.ScopeCluster, rollup.Entity{Cluster: "east.example"}},
		{rollup.ScopeCluster, rollup.Entity{Cluster: "west"}},
	}
	finals := map[entityDay]event.Fixed{}
	var keys []entityDay
	var vals []event.Fixed
	// 2025-06-25 (Wednesday) to 2025-07-08: two months, three ISO weeks.
	for d := 0; d < 14; d++ {
		day := time.Date(2025, 6, 25+d, 0, 0, 0, 0, time.UTC)
		for _, en := range ents {
			for _, it := range rollup.Items() {
				h := func(lo, hi float64) int64 { return fixed(lo+rng.Float64()*(hi-lo)) + rng.Int64N(1000) }
				f := event.Fixed{Usage: h(0, 26), Request: h(10, 50), Effective: h(0, 40), ProjectQuota: h(0, 100)}
				if en.sc == rollup.ScopeCluster && en.e.Cluster == "east.example" && d == 1 && it == rollup.Cpu {
					f.Request = fixed(24) // exactly at a threshold: fires (at or above)
				}
				ed := entityDay{en.sc, en.e, day, it}
				finals[ed] = f
				steps := 1 + rng.IntN(3)
				for s := 1; s <= steps; s++ {
					part := func(v int64) int64 { return v * int64(s) / int64(steps) }
					keys = append(keys, ed)
					vals = append(vals, event.Fixed{Usage: part(f.Usage), Request: part(f.Request), Effective: part(f.Effective), ProjectQuota: part(f.ProjectQuota)})
				}
			}
		}
	}
	rng.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i]; vals[i], vals[j] = vals[j], vals[i] })
	return finals, keys, vals
}

func (e *env) publishAll(keys []entityDay, vals []event.Fixed, dedupe bool) {
	e.t.Helper()
	for i, ed := range keys {
		y, m, d := ed.day.Date()
		e.publishEvent(ed.scope, ed.ent, rollup.DayFromDate(y, m, d), ed.item, vals[i], dedupe)
	}
}

// alerts counts the notifications published on NATS by id and subject.
type alerts struct {
	mu  sync.Mutex
	ids map[string]string
	bad []string
}

func (e *env) subscribeAlerts() *alerts {
	a := &alerts{ids: map[string]string{}}
	sub, err := e.nc.Subscribe("cost.alerts.>", func(m *nats.Msg) {
		var ce notifier.CloudEvent
		err := json.Unmarshal(m.Data, &ce)
		a.mu.Lock()
		defer a.mu.Unlock()
		if err != nil || m.Header.Get("Nats-Msg-Id") != ce.ID {
			a.bad = append(a.bad, fmt.Sprintf("%s: %v %q", m.Subject, err, m.Header.Get("Nats-Msg-Id")))
			return
		}
		a.ids[ce.ID] = m.Subject
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = sub.Unsubscribe() })
	return a
}

func TestExactlyOnceAcrossReplicasReplayAndRestart(t *testing.T) {
	e := newEnv(t)
	var ys []string
	for _, r := range exactRules {
		ys = append(ys, r.yaml)
	}
	e.writeRules(ys...)
	e.recv.up()
	al := e.subscribeAlerts()
	finals, keys, vals := exactEvents()
	want := expectedCrossings(exactRules, finals)
	if len(want) < 20 {
		t.Fatalf("the model expects only %d crossings: the test proves little", len(want))
	}
	if !want[crossing{"cl-cpu-day", "cluster:east.example", "20250626", "20250626", 24}] {
		t.Fatal("the model misses the crossing exactly at 24 core-hours")
	}

	// Two replicas share the consumer; every event is published once more
	// under its own id (deduplicated by JetStream) and some totals arrive
	// after larger ones.
	_, stop1 := e.start(testConfig(notifier.DefaultConsumer))
	_, stop2 := e.start(testConfig(notifier.DefaultConsumer))
	e.publishAll(keys, vals, true)
	e.publishAll(keys[:len(keys)/3], vals[:len(keys)/3], true)
	delivered := e.waitDelivered(want)
	e.drained(notifier.DefaultConsumer)

	// The event's fields, for one percent crossing.
	for _, ce := range delivered {
		d := ce.Data
		if d.Rule != "ns-mem-week" || d.Threshold != 160 || d.Namespace != "api" || d.PeriodStart != "20250630" {
			continue
		}
		if d.Kind != "namespace" || d.Project != "payments" || d.Cluster != "east.example" || d.Item != "Memory" || d.Method != "Usage" ||
			d.Unit != "GiB-hours" || d.PeriodEnd != "20250706" || d.Budget == nil || *d.Budget != 200 || d.Percent == nil || *d.Percent != 80 {
			t.Errorf("event data: %+v", d)
		}
		if ce.Subject != "namespace/payments/east.example/api" || ce.Source != "/costmeter/notifier/rules/ns-mem-week" {
			t.Errorf("event attributes: %+v", ce)
		}
	}
	for _, ce := range delivered {
		if ce.Data.Rule == "pay-cpu-month" && (ce.Data.Budget != nil || ce.Data.Percent != nil || ce.Data.Cluster != "" || ce.Data.Namespace != "") {
			t.Errorf("absolute project rule: %+v", ce.Data)
		}
	}
	testenv.Eventually(t, 10*time.Second, "every notification published on NATS", func() (bool, string) {
		al.mu.Lock()
		defer al.mu.Unlock()
		return len(al.ids) == len(want), fmt.Sprintf("%d of %d", len(al.ids), len(want))
	})
	al.mu.Lock()
	for id, subj := range al.ids {
		ce, ok := delivered[id]
		wantSubj := map[string]string{"project": "cost.alerts.project." + ce.Data.Project, "cluster": "cost.alerts.cluster." + strings.ReplaceAll(ce.Data.Cluster, ".", "_"),
			"namespace": "cost.alerts.namespace." + ce.Data.Project + "." + strings.ReplaceAll(ce.Data.Cluster, ".", "_") + "." + ce.Data.Namespace}[ce.Data.Kind]
		if !ok || subj != wantSubj {
			t.Errorf("alert %s on %s, want %s (delivered %v)", id, subj, wantSubj, ok)
		}
	}
	if len(al.bad) > 0 {
		t.Errorf("bad alerts: %v", al.bad)
	}
	al.mu.Unlock()
	stop1()
	stop2()

	// Replay: a fresh consumer reads the whole stream again.
	_, stop := e.start(testConfig("replay"))
	e.drained("replay")
	stop()
	e.nothingNew(delivered, "replay into a fresh consumer")

	// Restart, and every event delivered again (without its id, so that
	// JetStream lets it through): nothing fires.
	_, stop = e.start(testConfig(notifier.DefaultConsumer))
	e.publishAll(keys, vals, false)
	e.drained(notifier.DefaultConsumer)
	stop()
	e.nothingNew(delivered, "restart and redelivered events")
}
