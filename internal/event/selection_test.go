package event_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/alauda/costmeter/internal/event"
)

// TestSelectionSubjects: every kind, one entity or all of it, with and
// without a project, maps to exactly these subjects (written out here,
// not rebuilt from the package's constants).
func TestSelectionSubjects(t *testing.T) {
	tests := []struct {
		name    string
		sel     event.Selection
		want    []string
		derived bool
	}{
		{name: "every event", sel: event.Selection{}, want: []string{"cost.rollups.>"}},
		{name: "one project's events", sel: event.Selection{Project: "team"},
			want: []string{"cost.rollups.project.team", "cost.rollups.namespace.team.*.*"}},
		{name: "all projects", sel: event.Selection{Kind: "project"}, want: []string{"cost.rollups.project.*"}},
		{name: "one project", sel: event.Selection{Kind: "project", Name: "team"}, want: []string{"cost.rollups.project.team"}},
		{name: "projects, project-scoped", sel: event.Selection{Kind: "project", Project: "team"}, want: []string{"cost.rollups.project.team"}},
		{name: "one project, project-scoped", sel: event.Selection{Kind: "project", Name: "team", Project: "team"}, want: []string{"cost.rollups.project.team"}},
		{name: "all clusters", sel: event.Selection{Kind: "cluster"}, want: []string{"cost.rollups.cluster.*"}},
		{name: "one cluster", sel: event.Selection{Kind: "cluster", Name: "east"}, want: []string{"cost.rollups.cluster.east"}},
		{name: "one dotted cluster", sel: event.Selection{Kind: "cluster", Name: "east.b"}, want: []string{"cost.rollups.cluster.east_b"}},
		{name: "clusters, project-scoped", sel: event.Selection{Kind: "cluster", Project: "team"},
			want: []string{"cost.rollups.namespace.team.*.*"}, derived: true},
		{name: "one dotted cluster, project-scoped", sel: event.Selection{Kind: "cluster", Name: "east.b", Project: "team"},
			want: []string{"cost.rollups.namespace.team.east_b.*"}, derived: true},
		{name: "all namespaces", sel: event.Selection{Kind: "namespace"}, want: []string{"cost.rollups.namespace.*.*.*"}},
		{name: "namespaces by name", sel: event.Selection{Kind: "namespace", Name: "api"}, want: []string{"cost.rollups.namespace.*.*.api"}},
		{name: "namespaces, project-scoped", sel: event.Selection{Kind: "namespace", Project: "team"}, want: []string{"cost.rollups.namespace.team.*.*"}},
		{name: "namespaces by name, project-scoped", sel: event.Selection{Kind: "namespace", Name: "api", Project: "team"}, want: []string{"cost.rollups.namespace.team.*.api"}},
		{name: "item does not change subjects", sel: event.Selection{Kind: "namespace", Item: "Memory"}, want: []string{"cost.rollups.namespace.*.*.*"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.sel.Subjects()
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("subjects %q, want %q", got, tt.want)
			}
			if tt.sel.Derived() != tt.derived {
				t.Fatalf("derived %v, want %v", tt.sel.Derived(), tt.derived)
			}
		})
	}
}

// TestSelectionRefused: a selection that would not be exactly the set it
// names (a wildcard or a dot inside a token, a name without a kind, a
// project outside the project restriction) is an error saying so.
func TestSelectionRefused(t *testing.T) {
	tests := []struct {
		name string
		sel  event.Selection
		want string
	}{
		{name: "unknown kind", sel: event.Selection{Kind: "pod"}, want: `bad event selection: kind "pod" is not project, cluster or namespace`},
		{name: "name without kind", sel: event.Selection{Name: "team"}, want: `bad event selection: name "team" without a kind`},
		{name: "other project", sel: event.Selection{Kind: "project", Name: "ops", Project: "team"}, want: `bad event selection: project "ops" is outside the selection's project "team"`},
		{name: "wildcard name", sel: event.Selection{Kind: "namespace", Name: "*"}, want: `bad event selection: name "*" has '*', which a subject token cannot hold`},
		{name: "tail wildcard project", sel: event.Selection{Kind: "namespace", Project: ">"}, want: `bad event selection: project ">" has '>', which a subject token cannot hold`},
		{name: "dotted project", sel: event.Selection{Kind: "project", Name: "team.x"}, want: `bad event selection: name "team.x" has '.', which a subject token cannot hold`},
		{name: "dotted project restriction", sel: event.Selection{Project: "team.x"}, want: `bad event selection: project "team.x" has '.', which a subject token cannot hold`},
		{name: "dotted namespace", sel: event.Selection{Kind: "namespace", Name: "a.b"}, want: `bad event selection: name "a.b" has '.', which a subject token cannot hold`},
		{name: "space", sel: event.Selection{Kind: "cluster", Name: "east west"}, want: `bad event selection: name "east west" has ' ', which a subject token cannot hold`},
		{name: "cluster with underscore", sel: event.Selection{Kind: "cluster", Name: "east_b"}, want: `bad event selection: name "east_b" has '_', which no cluster name holds`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.sel.Subjects()
			if !errors.Is(err, event.ErrBadSelection) || err.Error() != tt.want {
				t.Fatalf("subjects %q, err %v; want %q", got, err, tt.want)
			}
		})
	}
}

// TestSelectionMatch: the body check agrees with the subjects on every
// kind, and an event whose body leaves the selection (another project,
// another item) does not match.
func TestSelectionMatch(t *testing.T) {
	proj := event.Event{Kind: "project", Project: "team", Item: "Cpu"}
	clu := event.Event{Kind: "cluster", Cluster: "east.b", Item: "Cpu"}
	ns := event.Event{Kind: "namespace", Project: "team", Cluster: "east.b", Namespace: "api", Item: "Cpu"}
	other := event.Event{Kind: "namespace", Project: "ops", Cluster: "east.b", Namespace: "api", Item: "Cpu"}
	tests := []struct {
		name string
		sel  event.Selection
		want []bool // proj, clu, ns, other
	}{
		{name: "every event", sel: event.Selection{}, want: []bool{true, true, true, true}},
		{name: "one project's events", sel: event.Selection{Project: "team"}, want: []bool{true, false, true, false}},
		{name: "projects", sel: event.Selection{Kind: "project"}, want: []bool{true, false, false, false}},
		{name: "other project", sel: event.Selection{Kind: "project", Name: "ops"}, want: []bool{false, false, false, false}},
		{name: "one cluster", sel: event.Selection{Kind: "cluster", Name: "east.b"}, want: []bool{false, true, false, false}},
		{name: "the token is not the name", sel: event.Selection{Kind: "cluster", Name: "east"}, want: []bool{false, false, false, false}},
		{name: "project's share of a cluster", sel: event.Selection{Kind: "cluster", Name: "east.b", Project: "team"}, want: []bool{false, false, true, false}},
		{name: "namespaces by name", sel: event.Selection{Kind: "namespace", Name: "api"}, want: []bool{false, false, true, true}},
		{name: "namespaces, project-scoped", sel: event.Selection{Kind: "namespace", Project: "team"}, want: []bool{false, false, true, false}},
		{name: "another item", sel: event.Selection{Item: "Memory"}, want: []bool{false, false, false, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i, ev := range []event.Event{proj, clu, ns, other} {
				if got := tt.sel.Match(ev); got != tt.want[i] {
					t.Errorf("%+v: match %v, want %v", ev, got, tt.want[i])
				}
			}
		})
	}
}

// TestEventEntity: the entity tokens other streams reuse, and the subject
// built from them.
func TestEventEntity(t *testing.T) {
	for _, c := range []struct {
		ev      event.Event
		subject string
	}{
		{event.Event{Kind: "project", Project: "team"}, "cost.rollups.project.team"},
		{event.Event{Kind: "cluster", Cluster: "east.b"}, "cost.rollups.cluster.east_b"},
		{event.Event{Kind: "namespace", Project: "team", Cluster: "east.b", Namespace: "api"}, "cost.rollups.namespace.team.east_b.api"},
	} {
		if got := c.ev.Subject(); got != c.subject {
			t.Errorf("%+v: subject %q, want %q", c.ev, got, c.subject)
		}
		if got := "cost.rollups." + c.ev.Entity(); got != c.subject {
			t.Errorf("%+v: entity %q", c.ev, c.ev.Entity())
		}
	}
}
