package api_test

import (
	"errors"
	"math"
	"net/url"
	"strings"
	"testing"

	"github.com/alauda/costmeter/api"
)

// FuzzParseQuery checks that any query string either parses into a query
// within every rule or fails with a BadRequest naming the parameter.
func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{
		"start=2025-01-01&end=2025-01-31",
		"start=2025-01-01&end=2025-01-31&step=week&kind=namespace_all&item=Memory&method=Request&currentPage=3&pageSize=50",
		"start=2024-02-29&end=2025-02-28&step=day&kind=namespace&name=default",
		"start=2024-01-01&end=2025-01-02",
		"start=2025-01-02&end=2025-01-01",
		"start=2025-01-01&end=2025-01-31&kind=cluster&name=east.b",
		"start=2025-01-01&end=2025-01-31&kind=project&name=a%20b",
		"start=2025-01-01&end=2025-01-31&kind=namespace&name=a%2Fb",
		"start=2025-01-01&end=2025-01-31&currentPage=9223372036854775807&pageSize=1000",
		"start=2025-01-01&end=2025-01-31&currentPage=-1",
		"start=2025-01-01&end=2025-01-31&pageSize=1e3",
		"start=2025-01-01&end=2025-01-31&format=csv",
		"start=0000-01-01&end=0000-12-31",
		"start=9999-12-31&end=9999-12-31",
		"start=2025-1-1&end=2025-01-31",
		"start=2025-01-01&start=2025-02-01&end=2025-03-01",
		"",
		"%zz",
	} {
		f.Add(s)
	}
	params := []string{"start", "end", "step", "kind", "name", "item", "method", "currentPage", "pageSize", "format"}
	f.Fuzz(func(t *testing.T, raw string) {
		v, _ := url.ParseQuery(raw) // what a broken query still yields, as net/http gives it
		q, err := api.ParseQuery(v)
		if err != nil {
			if !errors.Is(err, api.ErrBadParameter) {
				t.Fatalf("%q: error %v is not a bad parameter", raw, err)
			}
			msg := err.Error()
			named := false
			for _, p := range params {
				named = named || strings.Contains(msg, ": "+p+": ")
			}
			if !named {
				t.Fatalf("%q: message %q names no parameter", raw, msg)
			}
			return
		}
		switch {
		case q.End < q.Start || q.End-q.Start > api.MaxSpanDays:
			t.Fatalf("%q: range %s..%s accepted", raw, q.Start, q.End)
		case q.Page < 1 || q.PageSize < 1 || q.PageSize > api.MaxPageSize:
			t.Fatalf("%q: page %d size %d accepted", raw, q.Page, q.PageSize)
		case int64(q.Page-1) > math.MaxInt64/int64(q.PageSize):
			t.Fatalf("%q: offset overflows", raw)
		}
		switch q.Kind {
		case api.KindProject, api.KindNamespace, api.KindCluster:
			if q.Name == "" || strings.ContainsAny(q.Name, " /{}:") || len(q.Name) > 63 {
				t.Fatalf("%q: name %q accepted", raw, q.Name)
			}
		case api.KindProjectAll, api.KindNamespaceAll, api.KindClusterAll:
		default:
			t.Fatalf("%q: kind %q accepted", raw, q.Kind)
		}
		if q.Item.String() != v.Get("item") && v.Get("item") != "" {
			t.Fatalf("%q: item %s from %q", raw, q.Item, v.Get("item"))
		}
	})
}
