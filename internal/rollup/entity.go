package rollup

import (
	"strings"
)

// Scope is a kind of entity that rollups are kept for.
type Scope string

// The scopes. A namespace entity is (project, cluster, namespace); the
// project-cluster scope is a project's share of one cluster, which the
// project-scoped API route reports as its clusters.
const (
	ScopeNamespace      Scope = "ns"
	ScopeProject        Scope = "pr"
	ScopeCluster        Scope = "cl"
	ScopeProjectCluster Scope = "pc"
)

// Scopes lists every scope.
func Scopes() []Scope {
	return []Scope{ScopeNamespace, ScopeProject, ScopeCluster, ScopeProjectCluster}
}

// Entity names one entity of a scope. Empty fields are not part of it.
type Entity struct {
	Project, Cluster, Namespace string
}

// Sep separates the parts of an index member. A space sorts before every
// character a name may hold ('-', '.', digits, letters), so the
// lexicographic order of members is the API's order: project, then cluster,
// then namespace.
const Sep = " "

// Member is the entity's index member in scope sc.
func (e Entity) Member(sc Scope) string {
	switch sc {
	case ScopeNamespace:
		return e.Project + Sep + e.Cluster + Sep + e.Namespace
	case ScopeProject:
		return e.Project
	case ScopeCluster:
		return e.Cluster
	default:
		return e.Project + Sep + e.Cluster
	}
}

// ParseMember is the inverse of Member.
func ParseMember(sc Scope, m string) Entity {
	parts := strings.Split(m, Sep)
	at := func(i int) string {
		if i < len(parts) {
			return parts[i]
		}
		return ""
	}
	switch sc {
	case ScopeNamespace:
		return Entity{Project: at(0), Cluster: at(1), Namespace: at(2)}
	case ScopeProject:
		return Entity{Project: at(0)}
	case ScopeCluster:
		return Entity{Cluster: at(0)}
	default:
		return Entity{Project: at(0), Cluster: at(1)}
	}
}
