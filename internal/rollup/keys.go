package rollup

import (
	"strconv"
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

// Key layout. Every key of one month carries the hash tag {YYYYMM} (the
// month of the billing time zone), so one atomic script can update a day's
// rollups, its coverage and its indexes, and Redis Cluster keeps a month on
// one node while spreading months over nodes. DD is the day of the month,
// two digits; <m> an index member (see Member) with spaces as '/'.
//
//	c:{YYYYMM}:r:DD:<scope>:<m>   string, 12 big-endian int64 (BITFIELD i64 #Field): the day rollup
//	c:{YYYYMM}:cov:DD            hash cluster/namespace -> "project;from-to,from-to" seconds of the day counted
//	c:{YYYYMM}:cc:DD             hash cluster -> "from-to,from-to": union of the cluster's counted seconds of the day
//	c:{YYYYMM}:ix:DD:<scope>     zset (score 0, lexicographic) of members with a sample that day
//	c:{YYYYMM}:ix:<scope>        zset of members with a sample that month
//	c:{YYYYMM}:pm:<scope>        hash member -> bit mask of the month's days it has samples on (bit DD-1)
//	c:{YYYYMM}:ver:<scope>       counter, bumped whenever a mask changes
//	c:{YYYYMM}:nn                zset of "namespace project cluster", to find a namespace by name
//	c:{YYYYMM}:bx:<scope>:<mask> zset cache: members whose mask meets <mask> (a clipped bucket), 1 h
//	c:{YYYYMM}:bxv:<scope>:<mask> the version the cache was built at
//	c:{wm}:applied:<stream>      zset of applied stream sequence ranges "first-last", score first
//	c:{cfg}                      hash: timezone
//
// Day keys expire retention after their day ends; month keys retention
// after the month ends.
const keyPrefix = "c:"

// monthPrefix is the common prefix of every key of a month.
func monthPrefix(month string) string { return keyPrefix + "{" + month + "}:" }

func dd(d Day) string {
	n := d.DayOfMonth()
	if n < 10 {
		return "0" + strconv.Itoa(n)
	}
	return strconv.Itoa(n)
}

// valueKeyMember turns an index member into the key form (spaces to '/').
func valueKeyMember(m string) string { return strings.ReplaceAll(m, Sep, "/") }

// ValueKey is the day rollup key of member m in scope sc.
func ValueKey(d Day, sc Scope, m string) string {
	return monthPrefix(d.Month()) + "r:" + dd(d) + ":" + string(sc) + ":" + valueKeyMember(m)
}

// DayIndexKey is the key of the day index of scope sc.
func DayIndexKey(d Day, sc Scope) string {
	return monthPrefix(d.Month()) + "ix:" + dd(d) + ":" + string(sc)
}

// MonthIndexKey is the key of the month index of scope sc.
func MonthIndexKey(month string, sc Scope) string {
	return monthPrefix(month) + "ix:" + string(sc)
}

// MaskKey is the key of the month's presence masks of scope sc.
func MaskKey(month string, sc Scope) string { return monthPrefix(month) + "pm:" + string(sc) }

// NameIndexKey is the key of the month's namespace-name index.
func NameIndexKey(month string) string { return monthPrefix(month) + "nn" }

// CoverageKey is the key of a day's coverage hash.
func CoverageKey(d Day) string { return monthPrefix(d.Month()) + "cov:" + dd(d) }

// clusterCoverageKey is the key of a day's cluster coverage hash: per
// cluster, the union of the seconds counted for any of its namespaces,
// written by applyScript in the same commit as the namespaces' coverage.
func clusterCoverageKey(d Day) string { return monthPrefix(d.Month()) + "cc:" + dd(d) }

// AppliedKey is the key of the applied-sequence ranges of a stream.
func AppliedKey(stream string) string { return keyPrefix + "{wm}:applied:" + stream }

// ConfigKey is the key of the recorded configuration.
const ConfigKey = keyPrefix + "{cfg}"
