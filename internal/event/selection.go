package event

import (
	"errors"
	"fmt"
	"strings"

	"github.com/alauda/costmeter/internal/stream"
)

// ErrBadSelection is wrapped by the errors of a Selection that names no
// set of events (an unknown kind, a name that is not one subject token).
var ErrBadSelection = errors.New("bad event selection")

// Selection is a set of rollup events, chosen the way the API's queries
// choose entities: a kind, optionally one entity of it by name, optionally
// confined to one project. Subjects maps it to subject filters, Match
// checks an event's body against it; both are the one place the subject
// layout is read back.
type Selection struct {
	// Kind is KindProject, KindCluster or KindNamespace; empty: every
	// kind (with Project: the project's own and its namespaces' events).
	Kind string
	// Name picks one entity of Kind: a project, a cluster (dots allowed),
	// or a namespace name (in every project and cluster unless Project is
	// set). Empty: all of Kind. Not allowed without a Kind.
	Name string
	// Project confines the selection to one project's events. A cluster
	// selection with a project is the project's share of clusters: those
	// have no events of their own, so it selects the project's namespace
	// events in the clusters instead (see Derived).
	Project string
	// Item, when set, selects only that item's events ("Cpu", …); the
	// subject does not carry the item, Match checks it.
	Item string
}

// Derived reports whether the selection's entities have no events of their
// own: a project's share of a cluster changes when one of the project's
// namespaces in that cluster changes, so its subjects carry those
// namespace events and a subscriber re-reads the cluster's totals.
func (s Selection) Derived() bool { return s.Kind == KindCluster && s.Project != "" }

// Validate reports what makes s name no set of events.
func (s Selection) Validate() error {
	switch s.Kind {
	case "", KindProject, KindCluster, KindNamespace:
	default:
		return fmt.Errorf("%w: kind %q is not %s, %s or %s", ErrBadSelection, s.Kind, KindProject, KindCluster, KindNamespace)
	}
	if s.Kind == "" && s.Name != "" {
		return fmt.Errorf("%w: name %q without a kind", ErrBadSelection, s.Name)
	}
	if s.Kind == KindProject && s.Project != "" && s.Name != "" && s.Name != s.Project {
		return fmt.Errorf("%w: project %q is outside the selection's project %q", ErrBadSelection, s.Name, s.Project)
	}
	if err := checkToken("project", s.Project, false); err != nil {
		return err
	}
	return checkToken("name", s.Name, s.Kind == KindCluster)
}

// checkToken refuses a name that would not be exactly one literal subject
// token: a wildcard or a dot would widen or shift a filter. Cluster names
// may hold dots (Token replaces them).
func checkToken(what, name string, dots bool) error {
	if name == "" {
		return nil
	}
	bad := "*> \t\r\n"
	if !dots {
		bad += "."
	}
	if i := strings.IndexAny(name, bad); i >= 0 {
		return fmt.Errorf("%w: %s %q has %q, which a subject token cannot hold", ErrBadSelection, what, name, name[i])
	}
	if strings.Contains(name, "_") && dots {
		// '_' stands for '.' in a cluster's token: "east_b" would match
		// the events of "east.b".
		return fmt.Errorf("%w: %s %q has '_', which no cluster name holds", ErrBadSelection, what, name)
	}
	return nil
}

// Subjects returns the subject filters of the selection's events on the
// COST_ROLLUPS stream, the layout of Event.Subject:
//
//	kind       Name  Project  subjects
//	project    -     -        cost.rollups.project.*
//	project    n     -        cost.rollups.project.n
//	project    any   p        cost.rollups.project.p
//	cluster    -     -        cost.rollups.cluster.*
//	cluster    c     -        cost.rollups.cluster.<Token(c)>
//	cluster    -     p        cost.rollups.namespace.p.*.*            (Derived)
//	cluster    c     p        cost.rollups.namespace.p.<Token(c)>.*   (Derived)
//	namespace  -     -        cost.rollups.namespace.*.*.*
//	namespace  n     -        cost.rollups.namespace.*.*.n
//	namespace  -     p        cost.rollups.namespace.p.*.*
//	namespace  n     p        cost.rollups.namespace.p.*.n
//	-          -     -        cost.rollups.>
//	-          -     p        cost.rollups.project.p, cost.rollups.namespace.p.*.*
func (s Selection) Subjects() ([]string, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	one := func(tokens ...string) []string {
		return []string{stream.RollupsPrefix + strings.Join(tokens, ".")}
	}
	or := func(name, all string) string {
		if name == "" {
			return all
		}
		return name
	}
	cluster := or(Token(s.Name), "*")
	switch {
	case s.Kind == "" && s.Project == "":
		return []string{stream.RollupsSubjects}, nil
	case s.Kind == "":
		return append(one(KindProject, s.Project), one(KindNamespace, s.Project, "*", "*")...), nil
	case s.Kind == KindProject:
		return one(KindProject, or(s.Project, or(s.Name, "*"))), nil
	case s.Kind == KindCluster && s.Project == "":
		return one(KindCluster, cluster), nil
	case s.Kind == KindCluster:
		return one(KindNamespace, s.Project, cluster, "*"), nil
	default:
		return one(KindNamespace, or(s.Project, "*"), "*", or(s.Name, "*")), nil
	}
}

// Match reports whether ev, by its body, belongs to the selection: what
// Subjects selects by subject, checked again on the content, so that a
// mislabelled event cannot cross projects; and the item.
func (s Selection) Match(ev Event) bool {
	if s.Item != "" && ev.Item != s.Item {
		return false
	}
	if s.Project != "" && ev.Project != s.Project {
		return false
	}
	switch {
	case s.Kind == "":
		switch ev.Kind {
		case KindProject, KindNamespace:
			return true
		case KindCluster:
			return s.Project == ""
		}
		return false
	case s.Derived():
		return ev.Kind == KindNamespace && (s.Name == "" || ev.Cluster == s.Name)
	case ev.Kind != s.Kind:
		return false
	case s.Name == "":
		return true
	case s.Kind == KindProject:
		return ev.Project == s.Name
	case s.Kind == KindCluster:
		return ev.Cluster == s.Name
	default:
		return ev.Namespace == s.Name
	}
}
