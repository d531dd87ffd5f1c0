// Package event defines the rollup events the aggregator publishes after
// each commit, for downstream subscribers: one per changed (entity, day,
// item), carrying the new absolute day totals of all four methods.
//
// Totals only grow (samples add non-negative usage), so a subscriber that
// sees two events for the same entity, day and item keeps the one with the
// larger Fixed values; replaying events is idempotent by construction.
package event

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/stream"
)

// Kinds of entity an event is about. Each is also the name sample.CheckName
// checks an entity of that kind under (so a cluster's name may hold dots).
const (
	KindProject   = sample.NameProject
	KindNamespace = sample.NameNamespace
	KindCluster   = sample.NameCluster
	// KindGroup is a value of a kept namespace label key, platform-wide
	// (rollup.ScopeGroup): the notifier's group budgets. The watch routes
	// do not select it.
	KindGroup = "group"
)

// Totals are one item's day totals per method, in the item's unit-hours.
type Totals struct {
	Usage        float64 `json:"usage"`
	Request      float64 `json:"request"`
	Effective    float64 `json:"effective"`
	ProjectQuota float64 `json:"projectQuota"`
}

// Fixed are the same totals as exact fixed-point integers (millionths of a
// unit-second, see rollup.Scale).
type Fixed struct {
	Usage        int64 `json:"usage"`
	Request      int64 `json:"request"`
	Effective    int64 `json:"effective"`
	ProjectQuota int64 `json:"projectQuota"`
}

// Event is one changed (entity, day, item).
type Event struct {
	ID        string `json:"id"`
	Kind      string `json:"kind"`
	Project   string `json:"project,omitempty"`
	Cluster   string `json:"cluster,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	// GroupBy and Group are a group event's label key and value.
	GroupBy string `json:"groupBy,omitempty"`
	Group   string `json:"group,omitempty"`
	// Day is the billing day, YYYYMMDD like the API.
	Day    string `json:"day"`
	Item   string `json:"item"`
	Unit   string `json:"unit"`
	Totals Totals `json:"totals"`
	Fixed  Fixed  `json:"fixed"`
}

// KindOf maps a rollup scope to an event kind ("" for scopes without
// events).
func KindOf(sc rollup.Scope) string {
	switch sc {
	case rollup.ScopeProject:
		return KindProject
	case rollup.ScopeNamespace:
		return KindNamespace
	case rollup.ScopeCluster:
		return KindCluster
	case rollup.ScopeGroup:
		return KindGroup
	}
	return ""
}

// ScopeOf maps an event kind to its rollup scope, the inverse of KindOf
// (ScopeNamespace for any other kind).
func ScopeOf(kind string) rollup.Scope {
	switch kind {
	case KindProject:
		return rollup.ScopeProject
	case KindCluster:
		return rollup.ScopeCluster
	case KindGroup:
		return rollup.ScopeGroup
	}
	return rollup.ScopeNamespace
}

// Unit names an item's unit.
func Unit(it rollup.Item) string {
	if it == rollup.Cpu {
		return "core-hours"
	}
	return "GiB-hours"
}

// New builds the event of item it from a change; its ID is a hash of
// everything in it, so republishing the same totals is deduplicated.
func New(c rollup.Change, it rollup.Item) Event {
	e := rollup.ParseMember(c.Scope, c.Member)
	ev := Event{Kind: KindOf(c.Scope), Project: e.Project, Cluster: e.Cluster, Namespace: e.Namespace,
		GroupBy: e.GroupKey, Group: e.Group, Day: c.Day.String(), Item: it.String(), Unit: Unit(it)}
	v := c.Values
	ev.Fixed = Fixed{
		Usage: v[rollup.Field(it, rollup.Usage)], Request: v[rollup.Field(it, rollup.Request)],
		Effective: v[rollup.Field(it, rollup.Effective)], ProjectQuota: v[rollup.Field(it, rollup.ProjectQuota)],
	}
	ev.Totals = Totals{Usage: rollup.Hours(ev.Fixed.Usage), Request: rollup.Hours(ev.Fixed.Request),
		Effective: rollup.Hours(ev.Fixed.Effective), ProjectQuota: rollup.Hours(ev.Fixed.ProjectQuota)}
	sum := sha256.Sum256(fmt.Appendf(nil, "%s|%s|%s|%s|%d|%d|%d|%d", ev.Kind, c.Member, ev.Day, ev.Item,
		ev.Fixed.Usage, ev.Fixed.Request, ev.Fixed.Effective, ev.Fixed.ProjectQuota))
	ev.ID = hex.EncodeToString(sum[:16])
	return ev
}

// Subject is where the event is published: stream.RollupsPrefix and its
// entity's tokens (Entity).
func (e Event) Subject() string { return stream.RollupsPrefix + e.Entity() }

// Entity is the event's entity as subject tokens, the part of its subject
// after stream.RollupsPrefix: project.<project>, cluster.<cluster>,
// namespace.<project>.<cluster>.<namespace> or group.<key>.<value>. Dots
// in cluster names become '_' (never part of a name), so every name stays
// one subject token; in a label key or value, which may hold both, the
// token is not unique and a subscriber checks the body (Selection.Match).
// Other streams keyed by the same entities (the notifier's alerts) put
// their own prefix before it.
func (e Event) Entity() string {
	switch e.Kind {
	case KindProject:
		return KindProject + "." + e.Project
	case KindCluster:
		return KindCluster + "." + Token(e.Cluster)
	case KindGroup:
		return KindGroup + "." + Token(e.GroupBy) + "." + Token(e.Group)
	default:
		return KindNamespace + "." + e.Project + "." + Token(e.Cluster) + "." + e.Namespace
	}
}

// Name is the event's entity as one string, for logs, keys and
// CloudEvents subjects: the project, the cluster, project/cluster/namespace,
// or key=value. No name holds '/', and no label value '=', so it is
// unambiguous.
func (e Event) Name() string {
	switch e.Kind {
	case KindGroup:
		return e.GroupBy + "=" + e.Group
	case KindProject:
		return e.Project
	case KindCluster:
		return e.Cluster
	default:
		return e.Project + "/" + e.Cluster + "/" + e.Namespace
	}
}

// Token makes a name one subject token.
func Token(name string) string { return strings.ReplaceAll(name, ".", "_") }

// Marshal encodes the event as JSON.
func (e Event) Marshal() []byte {
	b, _ := json.Marshal(e)
	return b
}
