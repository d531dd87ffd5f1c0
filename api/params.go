package api

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/alauda/costmeter/internal/allocation"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
)

// Limits of the query parameters.
const (
	// MaxSpanDays is how far apart start and end may be, in days.
	MaxSpanDays = 366
	// DefaultPageSize and MaxPageSize bound pageSize.
	DefaultPageSize = 20
	MaxPageSize     = 1000
	// MaxPage bounds currentPage so that the row offset always fits.
	MaxPage = 1<<31 - 1
)

// Kind is what a query reports.
type Kind string

// The kinds. The _all kinds report every entity; the others the one named.
const (
	KindProject      Kind = "project"
	KindNamespace    Kind = "namespace"
	KindCluster      Kind = "cluster"
	KindProjectAll   Kind = "project_all"
	KindNamespaceAll Kind = "namespace_all"
	KindClusterAll   Kind = "cluster_all"
	// KindGroup and KindGroupAll are beyond the contract: the values of a
	// kept namespace label key (groupBy), one (name) or all of them.
	KindGroup    Kind = "group"
	KindGroupAll Kind = "group_all"
)

var kinds = []Kind{KindProject, KindNamespace, KindCluster, KindProjectAll, KindNamespaceAll, KindClusterAll, KindGroup, KindGroupAll}

// UnallocatedGroup is the group of the namespaces without the groupBy
// label: a name kind=group accepts though it is no label value.
const UnallocatedGroup = allocation.UnallocatedGroup

var steps = map[string]rollup.Step{"day": rollup.StepDay, "week": rollup.StepWeek, "month": rollup.StepMonth}

// Query is a parsed, valid usage query.
type Query struct {
	Start, End rollup.Day
	Step       rollup.Step
	StepName   string
	Kind       Kind
	Name       string
	// GroupBy is the label key of the group kinds ("" for the others).
	GroupBy  string
	Item     rollup.Item
	Method   rollup.Method
	Page     int
	PageSize int
	// CSV asks for text/csv; Paged is false when a CSV export asked for
	// every row (neither currentPage nor pageSize given).
	CSV   bool
	Paged bool
	// OrderBy is "" (the contract's order) or OrderByUsage (orderby.go).
	OrderBy string
	// capacity is set by the server for the rows that carry their
	// cluster's capacity (capacity.go).
	capacity bool
}

func badParam(param, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrBadParameter, param, fmt.Sprintf(format, args...))
}

// ParseQuery checks every parameter rule of the usage routes and returns
// the first broken one (in the order start, end, step, kind, name, groupBy,
// item, method, currentPage, pageSize, format, orderBy) as an error wrapping
// ErrBadParameter whose message starts with the parameter's name.
func ParseQuery(v url.Values) (Query, error) {
	q := Query{Step: rollup.StepMonth, StepName: "month", Kind: KindProjectAll, Item: rollup.Cpu, Method: rollup.Effective, Page: 1, PageSize: DefaultPageSize, Paged: true}
	var err error
	if q.Start, q.End, err = parseRange(v); err != nil {
		return Query{}, err
	}
	if s, ok := one(v, "step"); ok {
		st, known := steps[s]
		if !known {
			return Query{}, badParam("step", "%q is not day, week or month", s)
		}
		q.Step, q.StepName = st, s
	}
	if q.Kind, q.Name, err = parseKind(v, true); err != nil {
		return Query{}, err
	}
	if q.GroupBy, err = parseGroupBy(v, q.Kind); err != nil {
		return Query{}, err
	}
	if q.Item, err = parseItem(v); err != nil {
		return Query{}, err
	}
	if s, ok := one(v, "method"); ok {
		m, known := rollup.ParseMethod(s)
		if !known {
			return Query{}, badParam("method", "%q is not Effective, Request, Usage or ProjectQuota", s)
		}
		q.Method = m
	}
	_, hasPage := one(v, "currentPage")
	_, hasSize := one(v, "pageSize")
	if q.Page, err = parseInt(v, "currentPage", 1, 1, MaxPage); err != nil {
		return Query{}, err
	}
	if q.PageSize, err = parseInt(v, "pageSize", DefaultPageSize, 1, MaxPageSize); err != nil {
		return Query{}, err
	}
	if s, ok := one(v, "format"); ok {
		switch s {
		case "json":
		case "csv":
			q.CSV = true
			q.Paged = hasPage || hasSize
		default:
			return Query{}, badParam("format", "%q is not json or csv", s)
		}
	}
	if s, ok := one(v, "orderBy"); ok {
		if s != OrderByUsage {
			return Query{}, badParam("orderBy", "%q is not usage (leave it out for the default order)", s)
		}
		q.OrderBy = s
	}
	return q, nil
}

// parseKind parses kind (default project_all) and, for the kinds that
// name one entity, name; the group kinds only with groups (the usage
// route, not the watch route).
func parseKind(v url.Values, groups bool) (Kind, string, error) {
	kind := KindProjectAll
	if s, ok := one(v, "kind"); ok {
		kind = ""
		for _, k := range kinds {
			if string(k) == s && (groups || (k != KindGroup && k != KindGroupAll)) {
				kind = k
			}
		}
		switch {
		case kind == "" && groups:
			return "", "", badParam("kind", "%q is not project, namespace, cluster, project_all, namespace_all, cluster_all, group or group_all", s)
		case kind == "":
			return "", "", badParam("kind", "%q is not project, namespace, cluster, project_all, namespace_all or cluster_all", s)
		}
	}
	switch kind {
	case KindGroup:
		name, _ := one(v, "name")
		if name == "" {
			return "", "", badParam("name", "required for kind=group (a value of the groupBy label, or %s)", UnallocatedGroup)
		}
		if err := checkGroupName("name", name); err != nil {
			return "", "", err
		}
		return kind, name, nil
	case KindProject, KindNamespace, KindCluster:
		name, _ := one(v, "name")
		if name == "" {
			return "", "", badParam("name", "required for kind=%s", kind)
		}
		what := sample.NameNamespace
		switch kind {
		case KindCluster:
			what = sample.NameCluster
		case KindProject:
			what = sample.NameProject
		}
		if err := checkName("name", what, name); err != nil {
			return "", "", err
		}
		return kind, name, nil
	}
	return kind, "", nil
}

// checkGroupName checks a group name (a label value, or
// UnallocatedGroup) given as param.
func checkGroupName(param, name string) error {
	if name == UnallocatedGroup {
		return nil
	}
	if err := sample.CheckLabelValue("", name); err != nil {
		_, msg, _ := strings.Cut(err.Error(), ": ")
		return badParam(param, "%s", msg)
	}
	return nil
}

// parseGroupBy parses groupBy: a label key, required with the group kinds
// and refused with the others. Whether the key is kept is the server's
// to check (Config.AllocationLabels).
func parseGroupBy(v url.Values, kind Kind) (string, error) {
	key, ok := one(v, "groupBy")
	group := kind == KindGroup || kind == KindGroupAll
	switch {
	case !group && ok:
		return "", badParam("groupBy", "only with kind=group or group_all, not kind=%s", kind)
	case !group:
		return "", nil
	case !ok:
		return "", badParam("groupBy", "required for kind=%s (a kept namespace label key, such as team)", kind)
	}
	if err := sample.CheckLabelKey(key); err != nil {
		return "", badParam("groupBy", "%s", err)
	}
	return key, nil
}

// parseItem parses item (default Cpu).
func parseItem(v url.Values) (rollup.Item, error) {
	s, ok := one(v, "item")
	if !ok {
		return rollup.Cpu, nil
	}
	it, known := rollup.ParseItem(s)
	if !known {
		return 0, badParam("item", "%q is not Cpu, Memory or Storage", s)
	}
	return it, nil
}

// one returns the parameter's value; ok is false when it is absent or
// empty (an empty value means the default, as most clients send it).
func one(v url.Values, name string) (string, bool) {
	s := v.Get(name)
	return s, s != ""
}

// parseRange checks start and end (in that order): both days, end not
// before start, at most MaxSpanDays apart.
func parseRange(v url.Values) (start, end rollup.Day, err error) {
	if start, err = parseDay(v, "start"); err != nil {
		return 0, 0, err
	}
	if end, err = parseDay(v, "end"); err != nil {
		return 0, 0, err
	}
	if end < start {
		return 0, 0, badParam("end", "%s is before start %s", v.Get("end"), v.Get("start"))
	}
	if end-start > MaxSpanDays {
		return 0, 0, badParam("end", "at most %d days after start, got %d", MaxSpanDays, end-start)
	}
	return start, end, nil
}

func parseDay(v url.Values, name string) (rollup.Day, error) {
	s, ok := one(v, name)
	if !ok {
		return 0, badParam(name, "required (YYYY-MM-DD)")
	}
	t, err := time.Parse(time.DateOnly, s)
	if err != nil || len(s) != len(time.DateOnly) {
		return 0, badParam(name, "%q is not a date YYYY-MM-DD", s)
	}
	return rollup.DayFromDate(t.Date()), nil
}

// parseInt parses an integer parameter within lo..hi.
func parseInt(v url.Values, name string, def, lo, hi int) (int, error) {
	s, ok := one(v, name)
	if !ok {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	switch {
	case err != nil:
		return 0, badParam(name, "%q is not an integer", s)
	case n < lo:
		return 0, badParam(name, "must be at least %d, got %d", lo, n)
	case n > hi:
		return 0, badParam(name, "must be at most %d, got %d", hi, n)
	}
	return n, nil
}

// checkName is sample.CheckName (a name is accepted exactly when a sample
// could carry it) for the query parameter param: the error names param.
func checkName(param, what, name string) error {
	if err := sample.CheckName(what, name); err != nil {
		return badParam(param, "%s", strings.TrimPrefix(err.Error(), what+": "))
	}
	return nil
}
