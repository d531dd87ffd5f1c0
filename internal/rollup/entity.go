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
	// The allocation scopes (docs/chargeback.md): per value of a kept
	// label key. A group is (key, value); ScopeGroup is its platform-wide
	// sum, ScopeProjectGroup its part in one project (the project route),
	// ScopeGroupNamespace one namespace's part of it (the bill's input: a
	// namespace relabelled mid-day has a part under each value).
	ScopeGroup          Scope = "gr"
	ScopeProjectGroup   Scope = "gp"
	ScopeGroupNamespace Scope = "gn"
	// ScopeCapacity is a cluster's capacity (capacity samples): each
	// item's capacity in unit-seconds is kept in its Effective field.
	ScopeCapacity Scope = "cp"
)

// Unallocated is the group of a namespace that does not carry a kept
// label key (docs/chargeback.md). Label values start with a letter or
// digit, so it clashes with no value.
const Unallocated = "__unallocated__"

// isSum tells the scopes kept as sums of namespaces (each shard keeps its
// part, with a month part and rankings) from those kept whole in one
// shard (a namespace's, a group-namespace's and a cluster's capacity).
func (sc Scope) isSum() bool {
	switch sc {
	case ScopeProject, ScopeCluster, ScopeProjectCluster, ScopeGroup, ScopeProjectGroup:
		return true
	}
	return false
}

// scopeShard is the shard that holds member of a scope kept whole in one
// shard (not isSum): its namespace's, or for a capacity its cluster's
// (shardOf(cluster, "")).
func scopeShard(sc Scope, member string) int {
	e := ParseMember(sc, member)
	return shardOf(e.Cluster, e.Namespace)
}

// Scopes lists every scope.
func Scopes() []Scope {
	return []Scope{ScopeNamespace, ScopeProject, ScopeCluster, ScopeProjectCluster}
}

// Entity names one entity of a scope. Empty fields are not part of it.
type Entity struct {
	Project, Cluster, Namespace string
	// GroupKey and Group are a kept label key and its value (the
	// allocation scopes).
	GroupKey, Group string
}

// groupKeySlash stands for '/' in a label key within a member: members
// appear in keys with their spaces as '/' (keys.go), so a key's own '/'
// must be something else, that no label key or name can hold.
const groupKeySlash = "~"

func encodeGroupKey(k string) string { return strings.ReplaceAll(k, "/", groupKeySlash) }
func decodeGroupKey(k string) string { return strings.ReplaceAll(k, groupKeySlash, "/") }

// GroupPrefix is the member prefix that selects a label key's groups in
// ScopeGroup and ScopeGroupNamespace, and with project (not "") a
// project's groups of the key in ScopeProjectGroup.
func GroupPrefix(key, project string) string {
	if project != "" {
		return encodeGroupKey(key) + Sep + project + Sep
	}
	return encodeGroupKey(key) + Sep
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
	case ScopeCluster, ScopeCapacity:
		return e.Cluster
	case ScopeGroup:
		return encodeGroupKey(e.GroupKey) + Sep + e.Group
	case ScopeProjectGroup:
		return encodeGroupKey(e.GroupKey) + Sep + e.Project + Sep + e.Group
	case ScopeGroupNamespace:
		return encodeGroupKey(e.GroupKey) + Sep + e.Group + Sep + e.Project + Sep + e.Cluster + Sep + e.Namespace
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
	case ScopeCluster, ScopeCapacity:
		return Entity{Cluster: at(0)}
	case ScopeGroup:
		return Entity{GroupKey: decodeGroupKey(at(0)), Group: at(1)}
	case ScopeProjectGroup:
		return Entity{GroupKey: decodeGroupKey(at(0)), Project: at(1), Group: at(2)}
	case ScopeGroupNamespace:
		return Entity{GroupKey: decodeGroupKey(at(0)), Group: at(1), Project: at(2), Cluster: at(3), Namespace: at(4)}
	default:
		return Entity{Project: at(0), Cluster: at(1)}
	}
}
