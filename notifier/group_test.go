package notifier_test

import (
	"testing"

	"github.com/alauda/costmeter/internal/event"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/notifier"
)

// TestGroupBudgets: a team's budget rule (kind: group, groupBy: team)
// fires on the team's own group events only, as the aggregator publishes
// them for a kept label key: not on another team's, not on the same value
// of another key, not on a project that shares the name.
func TestGroupBudgets(t *testing.T) {
	e := newEnv(t)
	e.writeRules(
		"name: payments-budget, kind: group, groupBy: team, entity: payments, item: Cpu, method: Effective, period: month, budget: 100, percent: [50, 100]",
		"name: every-team, kind: group, groupBy: example.com/team, item: Cpu, method: Effective, period: day, thresholds: [30]",
	)
	e.recv.up()
	e.start(testConfig(notifier.DefaultConsumer))
	team := func(key, value string) rollup.Entity { return rollup.Entity{GroupKey: key, Group: value} }
	d1, d2 := rollup.DayFromDate(2026, 3, 10), rollup.DayFromDate(2026, 3, 11)
	// payments: 40 core-hours on the 10th, then 70 on the 11th: 110 in March.
	e.publishEvent(rollup.ScopeGroup, team("team", "payments"), d1, rollup.Cpu, event.Fixed{Effective: fixed(40)}, true)
	e.publishEvent(rollup.ScopeGroup, team("team", "payments"), d2, rollup.Cpu, event.Fixed{Effective: fixed(70)}, true)
	// Not payments of team: another team, the same value of another key,
	// a project named payments, another item.
	e.publishEvent(rollup.ScopeGroup, team("team", "search"), d1, rollup.Cpu, event.Fixed{Effective: fixed(500)}, true)
	e.publishEvent(rollup.ScopeGroup, team("example.com/team", "payments"), d1, rollup.Cpu, event.Fixed{Effective: fixed(20)}, true)
	e.publishEvent(rollup.ScopeGroup, team("example.com/team", "__unallocated__"), d2, rollup.Cpu, event.Fixed{Effective: fixed(31)}, true)
	e.publishEvent(rollup.ScopeProject, rollup.Entity{Project: "payments"}, d1, rollup.Cpu, event.Fixed{Effective: fixed(500)}, true)
	e.publishEvent(rollup.ScopeGroup, team("team", "payments"), d1, rollup.Memory, event.Fixed{Effective: fixed(500)}, true)
	delivered := e.waitDelivered(map[crossing]bool{
		{"payments-budget", "group:team=payments", "20260301", "20260331", 50}:               true,
		{"payments-budget", "group:team=payments", "20260301", "20260331", 100}:              true,
		{"every-team", "group:example.com/team=__unallocated__", "20260311", "20260311", 30}: true,
	})
	e.drained(notifier.DefaultConsumer)
	for _, ce := range delivered {
		d := ce.Data
		if d.Rule == "payments-budget" && d.Threshold == 100 {
			if d.Kind != "group" || d.GroupBy != "team" || d.Group != "payments" || d.Project != "" || d.Usage != 110 || *d.Budget != 100 {
				t.Errorf("event data: %+v", d)
			}
			if ce.Subject != "group/team=payments" {
				t.Errorf("subject %q", ce.Subject)
			}
		}
	}
}
