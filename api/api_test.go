package api_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/gin-gonic/gin"
	"go.uber.org/goleak"

	"github.com/alauda/costmeter/api"
	"github.com/alauda/costmeter/internal/auth"
	"github.com/alauda/costmeter/internal/pricing"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/testenv"
)

// ranges are the query ranges checked against the model: starting on a
// Sunday, crossing a leap day, crossing a year, clipped on both sides.
var ranges = [][2]string{
	{"2024-02-25", "2024-03-05"}, // Sunday start; 2024-02-29; week and month cut
	{"2024-12-29", "2025-01-06"}, // Sunday; ISO week 2025-W01 starts 2024-12-30
	{"2025-05-31", "2025-06-10"}, // Saturday; a week straddling May and June
	{"2024-02-01", "2025-01-31"}, // long: full months inside
	{"2024-03-01", "2024-03-04"}, // one clipped month, nothing after it: "this month up to today"
	{"2025-06-02", "2025-06-08"}, // one week inside June, days around it counted: a clipped cache
}

func compareRows(t *testing.T, got, want []api.Row) {
	t.Helper()
	if d := rowsDiff(got, want); d != "" {
		t.Fatal(d)
	}
}

// rowsDiff describes the first difference between got and want, "" when
// they are equal (usage and cost within rounding).
func rowsDiff(got, want []api.Row) string {
	if len(got) != len(want) {
		return fmt.Sprintf("%d rows, want %d\ngot  %s\nwant %s", len(got), len(want), brief(got), brief(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Project != w.Project || g.Cluster != w.Cluster || g.Namespace != w.Namespace || g.Start != w.Start || g.End != w.End ||
			g.Item != w.Item || g.Method != w.Method || g.Currency != w.Currency {
			return fmt.Sprintf("row %d = %+v, want %+v", i, g, w)
		}
		if !near(g.Usage, w.Usage) {
			return fmt.Sprintf("row %d usage %.9f, want %.9f (%+v)", i, g.Usage, w.Usage, w)
		}
		if (g.Cost == nil) != (w.Cost == nil) || g.Cost != nil && !near(*g.Cost, *w.Cost) {
			return fmt.Sprintf("row %d cost %v, want %v", i, g.Cost, w.Cost)
		}
	}
	return ""
}

func brief(rows []api.Row) string {
	var b strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&b, "[%s %s|%s|%s %.3f] ", r.Start, r.Project, r.Cluster, r.Namespace, r.Usage)
	}
	return b.String()
}

func TestUsageMatchesModel(t *testing.T) {
	f := newFixture(t)
	h := f.server(t)
	type combo struct {
		item   rollup.Item
		method rollup.Method
	}
	var every []combo
	for _, it := range rollup.Items() {
		for _, m := range rollup.Methods() {
			every = append(every, combo{it, m})
		}
	}
	few := []combo{{rollup.Cpu, rollup.Effective}, {rollup.Memory, rollup.Usage}, {rollup.Storage, rollup.Effective}, {rollup.Cpu, rollup.ProjectQuota}}
	type sel struct{ project, kind, name string }
	sels := []sel{
		{"", "project_all", ""}, {"", "cluster_all", ""}, {"", "namespace_all", ""},
		{"", "project", "team"}, {"", "project", "team-a"}, {"", "cluster", "east"}, {"", "cluster", "east.b"},
		{"", "namespace", "api"}, {"", "namespace", "default"},
		{"team", "project_all", ""}, {"team", "cluster_all", ""}, {"team", "namespace_all", ""},
		{"team", "project", "team"}, {"team", "cluster", "east"}, {"team", "namespace", "api"},
		{"team-a", "namespace", "default"}, {"team-a", "cluster_all", ""}, {"ops", "namespace_all", ""},
	}
	for ri, rg := range ranges {
		combos := few
		if ri == 0 {
			combos = every
		}
		for _, s := range sels {
			for _, step := range []string{"day", "week", "month"} {
				for _, c := range combos {
					q := want{project: s.project, kind: s.kind, name: s.name, step: step, start: rg[0], end: rg[1], item: c.item, method: c.method}
					name := fmt.Sprintf("%s..%s/%s/%s=%s/%s/%s/%s", rg[0], rg[1], s.project, s.kind, s.name, step, c.item, c.method)
					t.Run(name, func(t *testing.T) {
						got, total := all(t, h, q, 1000)
						wantRows := f.rows(q, nil)
						if total != len(wantRows) {
							t.Fatalf("total %d, want %d", total, len(wantRows))
						}
						compareRows(t, got, wantRows)
					})
				}
			}
		}
	}
}

func TestModelHasRows(t *testing.T) {
	// Guard against a vacuous model: the fixture must give rows in every
	// range, namespaces in two clusters, and zero-usage rows.
	f := newFixture(t)
	for _, rg := range ranges {
		rows := f.rows(want{kind: "namespace_all", step: "day", start: rg[0], end: rg[1], item: rollup.Cpu, method: rollup.Usage}, nil)
		if len(rows) < 10 {
			t.Fatalf("range %v: only %d rows", rg, len(rows))
		}
		zero := false
		for _, r := range rows {
			zero = zero || r.Usage == 0
		}
		if !zero {
			t.Fatalf("range %v: no zero-usage row", rg)
		}
	}
}

func TestBucketClipping(t *testing.T) {
	f := newFixture(t)
	h := f.server(t)
	tests := []struct {
		name, start, end, step string
		want                   []string // distinct start-end of the rows' buckets
	}{
		{"week from a Sunday", "2024-02-25", "2024-03-05", "week", []string{"20240225-20240225", "20240226-20240303", "20240304-20240305"}},
		{"month across the leap day", "2024-02-25", "2024-03-05", "month", []string{"20240225-20240229", "20240301-20240305"}},
		{"week across the year", "2024-12-29", "2025-01-06", "week", []string{"20241229-20241229", "20241230-20250105", "20250106-20250106"}},
		{"month across the year", "2024-12-29", "2025-01-06", "month", []string{"20241229-20241231", "20250101-20250106"}},
		{"week straddling May and June", "2025-05-31", "2025-06-10", "week", []string{"20250531-20250601", "20250602-20250608", "20250609-20250610"}},
		{"the leap day alone", "2024-02-29", "2024-02-29", "month", []string{"20240229-20240229"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows, _ := all(t, h, want{kind: "project_all", step: tt.step, start: tt.start, end: tt.end, item: rollup.Cpu, method: rollup.Effective}, 1000)
			var got []string
			for _, r := range rows {
				b := r.Start + "-" + r.End
				if len(got) == 0 || got[len(got)-1] != b {
					got = append(got, b)
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("buckets %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPaging(t *testing.T) {
	f := newFixture(t)
	h := f.server(t)
	for _, q := range []want{
		{kind: "namespace_all", step: "day", start: "2024-12-27", end: "2025-01-07"},
		{kind: "namespace_all", step: "week", start: "2025-05-29", end: "2025-06-11"},
		{project: "team", kind: "namespace_all", step: "day", start: "2024-02-26", end: "2024-03-05"},
		{kind: "cluster_all", step: "month", start: "2024-02-01", end: "2025-01-31"},
		{kind: "namespace", name: "api", step: "day", start: "2024-02-26", end: "2024-03-05"},
		// One clipped bucket: the month index answers, or a cache does.
		{kind: "namespace_all", step: "month", start: "2024-03-01", end: "2024-03-04"},
		{project: "team", kind: "namespace_all", step: "month", start: "2024-03-01", end: "2024-03-04"},
		{kind: "namespace_all", step: "week", start: "2025-06-02", end: "2025-06-08"},
		{project: "team", kind: "namespace_all", step: "week", start: "2025-06-02", end: "2025-06-08"},
	} {
		q.item, q.method = rollup.Cpu, rollup.Effective
		t.Run(q.project+"/"+q.kind+"/"+q.step+"/"+q.start, func(t *testing.T) {
			full, total := all(t, h, q, 1000)
			if total != len(full) || total < 3 {
				t.Fatalf("total %d, %d rows", total, len(full))
			}
			for _, size := range []int{1, 3, 7} {
				paged, ptotal := all(t, h, q, size)
				if ptotal != total {
					t.Fatalf("page size %d: total %d, want %d", size, ptotal, total)
				}
				compareRows(t, paged, full)
			}
			v := q.values()
			v.Set("pageSize", "5")
			v.Set("currentPage", strconv.Itoa(total/5+2))
			rec := get(h, usagePath(q.project), v)
			if !strings.Contains(rec.Body.String(), `"items":[]`) {
				t.Fatalf("page past the end: %s", rec.Body)
			}
			if r := decode(t, rec); r.Total != total || r.PageSize != 5 || r.CurrentPage != total/5+2 {
				t.Fatalf("page past the end: %+v", r)
			}
		})
	}
}

func TestProjectRouteNeverLeaks(t *testing.T) {
	f := newFixture(t)
	h := f.server(t)
	for _, project := range []string{"team", "team-a", "ops", "nobody"} {
		for _, kind := range []string{"project_all", "cluster_all", "namespace_all", "namespace", "cluster"} {
			for _, step := range []string{"day", "week", "month"} {
				name := map[string]string{"namespace": "api", "cluster": "east"}[kind]
				if kind == "namespace" && project == "team-a" {
					name = "default"
				}
				q := want{project: project, kind: kind, name: name, step: step, start: "2024-02-01", end: "2025-01-31", item: rollup.Cpu, method: rollup.Usage}
				rows, _ := all(t, h, q, 1000)
				for _, r := range rows {
					if r.Project != project {
						t.Fatalf("%s %s: row of project %q: %+v", project, kind, r.Project, r)
					}
				}
				if project == "nobody" && len(rows) > 0 {
					t.Fatalf("rows for a project without data: %v", brief(rows))
				}
			}
		}
	}
}

func statusOf(t *testing.T, body []byte) map[string]any {
	t.Helper()
	var st map[string]any
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("not JSON: %s", body)
	}
	return st
}

func checkStatus(t *testing.T, code int, body []byte, wantCode int, reason, msgPart string) {
	t.Helper()
	if code != wantCode {
		t.Fatalf("code %d, want %d: %s", code, wantCode, body)
	}
	st := statusOf(t, body)
	if st["kind"] != "Status" || st["apiVersion"] != "v1" || st["status"] != "Failure" || st["reason"] != reason || st["code"] != float64(wantCode) {
		t.Fatalf("not a %s Status: %s", reason, body)
	}
	if md, ok := st["metadata"].(map[string]any); !ok || len(md) != 0 {
		t.Fatalf("metadata is not {}: %s", body)
	}
	if msg, _ := st["message"].(string); !strings.Contains(msg, msgPart) {
		t.Fatalf("message %q does not contain %q", msg, msgPart)
	}
	if strings.Contains(string(body), "goroutine") || strings.Contains(string(body), ".go:") {
		t.Fatalf("stack in the body: %s", body)
	}
}

func TestParameterErrors(t *testing.T) {
	r := testenv.StartRedis(t)
	h := newServer(t, r.Client())
	ok := "start=2025-01-01&end=2025-01-31"
	tests := []struct {
		name, query, msg string
	}{
		{"start missing", "end=2025-01-31", "start: required"},
		{"end missing", "start=2025-01-01", "end: required"},
		{"start not a date", "start=2025-13-01&end=2025-12-31", `start: "2025-13-01" is not a date`},
		{"start wrong format", "start=20250101&end=2025-12-31", "start: "},
		{"start not a day", "start=2025-02-30&end=2025-03-01", "start: "},
		{"end not a date", "start=2025-01-01&end=tomorrow", "end: "},
		{"end before start", "start=2025-01-02&end=2025-01-01", "end: 2025-01-01 is before start"},
		{"more than 366 days", "start=2024-01-01&end=2025-01-02", "end: at most 366 days"},
		{"step unknown", ok + "&step=year", `step: "year"`},
		{"kind unknown", ok + "&kind=pod", `kind: "pod"`},
		{"name missing for project", ok + "&kind=project", "name: required for kind=project"},
		{"name missing for namespace", ok + "&kind=namespace", "name: required for kind=namespace"},
		{"name missing for cluster", ok + "&kind=cluster", "name: required for kind=cluster"},
		{"name with a space", ok + "&kind=namespace&name=a+b", "name: "},
		{"name with a slash", ok + "&kind=project&name=a/b", "name: "},
		{"name too long", ok + "&kind=project&name=" + strings.Repeat("a", 64), "name: longer than 63"},
		{"item unknown", ok + "&item=Gpu", `item: "Gpu"`},
		{"item lowercase", ok + "&item=cpu", "item: "},
		{"method unknown", ok + "&method=Limit", `method: "Limit"`},
		{"currentPage zero", ok + "&currentPage=0", "currentPage: must be at least 1"},
		{"currentPage not a number", ok + "&currentPage=two", `currentPage: "two" is not an integer`},
		{"pageSize zero", ok + "&pageSize=0", "pageSize: must be at least 1"},
		{"pageSize too big", ok + "&pageSize=1001", "pageSize: must be at most 1000"},
		{"pageSize not a number", ok + "&pageSize=1.5", "pageSize: "},
		{"format unknown", ok + "&format=xml", `format: "xml"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, path := range []string{usagePath(""), usagePath("team")} {
				rec := get(h, path, mustQuery(t, tt.query))
				checkStatus(t, rec.Code, rec.Body.Bytes(), http.StatusBadRequest, "BadRequest", tt.msg)
			}
		})
	}
	t.Run("exact body", func(t *testing.T) {
		rec := get(h, usagePath(""), mustQuery(t, "end=2025-01-31"))
		if got, want := rec.Body.String(), `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"start: required (YYYY-MM-DD)","reason":"BadRequest","code":400}`; got != want {
			t.Fatalf("body\n%s\nwant\n%s", got, want)
		}
		if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Fatalf("content type %q", ct)
		}
	})
	t.Run("bad project in the path", func(t *testing.T) {
		rec := get(h, usagePath("Team"), mustQuery(t, ok))
		checkStatus(t, rec.Code, rec.Body.Bytes(), http.StatusBadRequest, "BadRequest", "project: ")
	})
	t.Run("366 days apart is allowed", func(t *testing.T) {
		decode(t, get(h, usagePath(""), mustQuery(t, "start=2024-01-01&end=2025-01-01")))
	})
	t.Run("defaults", func(t *testing.T) {
		r := decode(t, get(h, usagePath(""), mustQuery(t, ok+"&step=&kind=&name=ignored")))
		if r.PageSize != 20 || r.CurrentPage != 1 || r.Total != 0 || r.Items == nil {
			t.Fatalf("%+v", r)
		}
	})
}

func mustQuery(t *testing.T, s string) url.Values {
	t.Helper()
	v, err := url.ParseQuery(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestForbiddenAndNotFound(t *testing.T) {
	r := testenv.StartRedis(t)
	as := func(p *auth.Principal) api.Option {
		return api.WithAuthenticate(func(c *gin.Context) {
			c.Request = c.Request.WithContext(auth.WithPrincipal(c.Request.Context(), p))
		})
	}
	ok := "start=2025-01-01&end=2025-01-31"
	member := newServer(t, r.Client(), as(&auth.Principal{Name: "alice", Projects: []string{"team"}}))
	platform := newServer(t, r.Client())
	tests := []struct {
		name  string
		h     http.Handler
		path  string
		query string
		code  int
	}{
		{"kind=project with another project", platform, usagePath("team"), ok + "&kind=project&name=ops", 403},
		{"member on the platform route", member, usagePath(""), ok, 403},
		{"member on another project", member, usagePath("ops"), ok, 403},
		{"member kind=project of another", member, usagePath("team"), ok + "&kind=project&name=ops", 403},
		{"member on own project", member, usagePath("team"), ok + "&kind=project&name=team", 200},
		{"member namespace_all", member, usagePath("team"), ok + "&kind=namespace_all", 200},
		{"unknown path", platform, "/platform/cost.alauda.io/v1beta1/costs/usages", ok, 404},
		{"unknown top-level path", platform, "/nope", "", 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := get(tt.h, tt.path, mustQuery(t, tt.query))
			switch tt.code {
			case 200:
				decode(t, rec)
			case 403:
				checkStatus(t, rec.Code, rec.Body.Bytes(), 403, "Forbidden", "")
			case 404:
				checkStatus(t, rec.Code, rec.Body.Bytes(), 404, "NotFound", "")
			}
		})
	}
	t.Run("no principal at all", func(t *testing.T) {
		h := newServer(t, r.Client(), api.WithAuthenticate(func(*gin.Context) {}))
		rec := get(h, usagePath("team"), mustQuery(t, ok))
		checkStatus(t, rec.Code, rec.Body.Bytes(), 403, "Forbidden", "")
	})
	t.Run("the request's deadline passed", func(t *testing.T) {
		h := newServer(t, r.Client(), api.WithAuthenticate(func(c *gin.Context) {
			ctx, cancel := context.WithDeadline(auth.WithPrincipal(c.Request.Context(), auth.Anonymous()), time.Now().Add(-time.Second))
			t.Cleanup(cancel)
			c.Request = c.Request.WithContext(ctx)
		}))
		rec := get(h, usagePath(""), mustQuery(t, ok+"&step=week"))
		checkStatus(t, rec.Code, rec.Body.Bytes(), 504, "Timeout", "deadline")
	})
	t.Run("a panic is a 500 Status without a stack", func(t *testing.T) {
		h := newServer(t, r.Client(), api.WithAuthenticate(func(*gin.Context) { panic("boom at secret.go:12") }))
		rec := get(h, usagePath(""), mustQuery(t, ok))
		if rec.Code != 500 || strings.Contains(rec.Body.String(), "boom") {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
		checkStatus(t, rec.Code, rec.Body.Bytes(), 500, "InternalError", "internal error")
	})
}

func TestRedisDown(t *testing.T) {
	r := testenv.StartRedis(t)
	h := newServer(t, r.Client())
	q := mustQuery(t, "start=2025-01-01&end=2025-01-31&kind=namespace_all&step=week")
	decode(t, get(h, usagePath(""), q))
	if rec := get(h, "/readyz", nil); rec.Code != 200 {
		t.Fatalf("readyz %d %s", rec.Code, rec.Body)
	}
	r.Kill()
	for _, path := range []string{usagePath(""), usagePath("team")} {
		rec := get(h, path, q)
		checkStatus(t, rec.Code, rec.Body.Bytes(), 503, "ServiceUnavailable", "unavailable")
	}
	if rec := get(h, "/readyz", nil); rec.Code != 503 {
		t.Fatalf("readyz with redis down: %d %s", rec.Code, rec.Body)
	}
	if rec := get(h, "/healthz", nil); rec.Code != 200 {
		t.Fatalf("healthz: %d", rec.Code)
	}
	r.Restart()
	testenv.Eventually(t, 10*time.Second, "queries answer again", func() (bool, string) {
		rec := get(h, usagePath(""), q)
		return rec.Code == 200, rec.Body.String()
	})
}

func TestPricing(t *testing.T) {
	f := newFixture(t)
	path := filepath.Join(t.TempDir(), "prices.yaml")
	if err := os.WriteFile(path, []byte(`
prices:
  - {item: Cpu, method: Effective, from: "2024-01-01", price: 0.5}
  - {item: Cpu, method: Effective, from: "2024-03-01", price: 0.75}
  - {item: Memory, method: Usage, from: "2024-02-28", price: 0.01}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(api.Config{Listen: ":0", Currency: "USD", PricingFile: path}, rollup.NewReader(f.rdb), time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	h := conform(t, srv.Handler())
	march := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	cpu := func(d time.Time) float64 {
		if d.Before(march) {
			return 0.5
		}
		return 0.75
	}
	mem := func(d time.Time) float64 {
		if d.Before(time.Date(2024, 2, 28, 0, 0, 0, 0, time.UTC)) {
			return 0
		}
		return 0.01
	}
	for _, tc := range []struct {
		item   rollup.Item
		method rollup.Method
		price  func(time.Time) float64
	}{{rollup.Cpu, rollup.Effective, cpu}, {rollup.Memory, rollup.Usage, mem}, {rollup.Storage, rollup.Usage, nil}} {
		for _, step := range []string{"day", "week", "month"} {
			q := want{kind: "namespace_all", step: step, start: "2024-02-25", end: "2024-03-05", item: tc.item, method: tc.method}
			got, _ := all(t, h, q, 1000)
			var price func(string, time.Time) float64
			if tc.price != nil {
				price = func(_ string, d time.Time) float64 { return tc.price(d) }
			}
			wantRows := f.rows(q, price)
			for i := range wantRows {
				wantRows[i].Currency = "USD"
			}
			compareRows(t, got, wantRows)
		}
	}
	t.Run("bad price lists", func(t *testing.T) {
		for _, body := range []string{
			"prices: [{item: Gpu, method: Usage, from: '2024-01-01', price: 1}]",
			"prices: [{item: Cpu, method: Usage, from: '2024-01-01', price: -1}]",
			"prices: [{item: Cpu, method: Usage, from: '01/01/2024', price: 1}]",
			"prices: [{item: Cpu, method: Usage, from: '2024-01-01'}]",
			"prices: [{item: Cpu, method: Usage, from: '2024-01-01', price: 1}, {item: Cpu, method: Usage, from: '2024-01-01', price: 2}]",
			"prices: [{item: Cpu, method: Usage, from: '2024-01-01', price: 1, currency: USD}]",
		} {
			if _, err := pricing.Parse([]byte(body)); err == nil {
				t.Errorf("accepted %s", body)
			}
		}
	})
}

// TestPricingPerCluster prices each cluster by its most specific row
// (an exact name over a glob over the rows for every cluster, a cluster
// row only from its own from-date) on every kind, the project rows from
// their per-cluster parts, and checks a bill's precision and currency.
func TestPricingPerCluster(t *testing.T) {
	f := newFixture(t)
	path := filepath.Join(t.TempDir(), "prices.yaml")
	if err := os.WriteFile(path, []byte(`
currency: USD
decimals: 2
prices:
  - {item: Cpu, method: Effective, from: "2024-01-01", price: 0.5}
  - {item: Cpu, method: Effective, cluster: "east*", from: "2024-01-01", price: "0.25"}
  - {item: Cpu, method: Effective, cluster: east.b, from: "2024-03-01", price: "2.000000001"}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(api.Config{Listen: ":0", Currency: "USD", PricingFile: path}, rollup.NewReader(f.rdb), time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	h := srv.Handler()
	march := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	price := func(cluster string, d time.Time) float64 {
		switch {
		case cluster == "east.b" && !d.Before(march):
			return 2.000000001
		case strings.HasPrefix(cluster, "east"):
			return 0.25
		default:
			return 0.5
		}
	}
	for _, kind := range []string{"namespace_all", "cluster_all", "project_all"} {
		for _, project := range []string{"", "team"} {
			for _, step := range []string{"day", "month"} {
				q := want{project: project, kind: kind, step: step, start: "2024-02-25", end: "2024-03-05", item: rollup.Cpu, method: rollup.Effective}
				got, _ := all(t, h, q, 1000)
				wantRows := f.rows(q, price)
				for i := range wantRows {
					wantRows[i].Currency = "USD"
				}
				compareRows(t, got, wantRows)
			}
		}
	}
	if _, err := api.New(api.Config{Listen: ":0", Currency: "EUR", PricingFile: path}, rollup.NewReader(f.rdb), time.UTC); err == nil ||
		!strings.Contains(err.Error(), "currency USD is not the API's --currency EUR") {
		t.Errorf("a price list in USD served as EUR: %v", err)
	}
}

func TestCSV(t *testing.T) {
	f := newFixture(t)
	h := f.server(t)
	q := want{kind: "namespace_all", step: "day", start: "2024-12-27", end: "2025-01-07", item: rollup.Memory, method: rollup.Request}
	rows, total := all(t, h, q, 1000)
	check := func(body []byte, want []api.Row) {
		t.Helper()
		recs, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != len(want)+1 || strings.Join(recs[0], ",") != "project,cluster,namespace,item,method,usage,currency,start,end" {
			t.Fatalf("%d records for %d rows; header %v", len(recs), len(want), recs[0])
		}
		for i, r := range want {
			rec := recs[i+1]
			u, _ := strconv.ParseFloat(rec[5], 64)
			if rec[0] != r.Project || rec[1] != r.Cluster || rec[2] != r.Namespace || rec[7] != r.Start || rec[8] != r.End || !near(u, r.Usage) {
				t.Fatalf("record %d %v, want %+v", i, rec, r)
			}
		}
	}
	v := q.values()
	v.Set("format", "csv")
	rec := get(h, usagePath(""), v)
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/csv") {
		t.Fatalf("%d %s", rec.Code, rec.Header())
	}
	check(rec.Body.Bytes(), rows)
	if total <= 5 {
		t.Fatalf("total %d", total)
	}
	v.Set("pageSize", "5")
	v.Set("currentPage", "2")
	check(get(h, usagePath(""), v).Body.Bytes(), rows[5:10])
}

// TestIndexesFollowWrites checks that cached bucket indexes (clipped weeks
// and months, the straddling-week merge) see data written after a query.
func TestIndexesFollowWrites(t *testing.T) {
	f := newFixture(t)
	h := f.server(t)
	for _, step := range []string{"week", "month", "day"} {
		q := want{kind: "namespace_all", step: step, start: "2025-05-31", end: "2025-06-10", item: rollup.Cpu, method: rollup.Usage}
		before, _ := all(t, h, q, 1000)
		compareRows(t, before, f.rows(q, nil))
	}
	day := 0
	for _, at := range []string{"2025-05-31T12:00:00Z", "2025-06-03T08:00:00Z"} {
		start, _ := time.Parse(time.RFC3339, at)
		day++
		f.apply(t, []sample.Sample{{Cluster: "south", Project: "new", Namespace: "late" + strconv.Itoa(day), Start: start, End: start.Add(time.Hour), CPU: sample.Resources{Usage: 2}}})
	}
	for _, step := range []string{"week", "month", "day"} {
		q := want{kind: "namespace_all", step: step, start: "2025-05-31", end: "2025-06-10", item: rollup.Cpu, method: rollup.Usage}
		after, _ := all(t, h, q, 1000)
		compareRows(t, after, f.rows(q, nil))
	}
}

func TestOpenAPI(t *testing.T) {
	f := newFixture(t)
	h := f.server(t)
	rec := get(h, "/openapi.yaml", nil)
	if rec.Code != 200 {
		t.Fatalf("openapi.yaml: %d", rec.Code)
	}
	ctx := context.Background()
	doc, err := openapi3.NewLoader().LoadFromData(rec.Body.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(ctx); err != nil {
		t.Fatalf("invalid spec: %v", err)
	}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	ok := "start=2024-12-27&end=2025-01-07"
	for _, c := range []struct{ path, query string }{
		{usagePath(""), ok},
		{usagePath(""), ok + "&kind=namespace_all&step=day&pageSize=50&item=Memory&method=Request"},
		{usagePath(""), ok + "&kind=cluster_all&step=week"},
		{usagePath("team"), ok + "&kind=cluster_all&step=month"},
		{usagePath("team"), ok + "&kind=namespace&name=api&format=csv"},
		{usagePath(""), ok + "&currentPage=99"},
		{usagePath(""), ok + "&kind=namespace_all&orderBy=usage&pageSize=3"},
		{usagePath("team"), ok + "&orderBy=usage&format=csv"},
		{usagePath(""), ok + "&orderBy=name"},
		{api.ConfigPath, ""},
		{api.CoveragePath, ok},
		{api.CoveragePath, ok + "&cluster=east&pageSize=2"},
		{api.CoveragePath, ok + "&cluster=East"},
		{usagePath(""), "start=bad&end=2025-01-01"},
		{usagePath("team"), ok + "&kind=project&name=ops"},
		{"/healthz", ""},
		{"/readyz", ""},
		{"/openapi.yaml", ""},
	} {
		t.Run(c.path+"?"+c.query, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, c.path+"?"+c.query, nil)
			rec := get(h, c.path, mustQuery(t, c.query))
			route, params, err := router.FindRoute(req)
			if err != nil {
				t.Fatalf("route: %v", err)
			}
			in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route}
			out := &openapi3filter.ResponseValidationInput{
				RequestValidationInput: in, Status: rec.Code, Header: rec.Header(),
				Options: &openapi3filter.Options{IncludeResponseStatus: true},
			}
			out.SetBodyBytes(rec.Body.Bytes())
			if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
				t.Fatalf("response %d %s does not match the spec: %v", rec.Code, truncate(rec.Body.String()), err)
			}
		})
	}
}

func truncate(s string) string {
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}

func TestRunServesUntilCancelled(t *testing.T) {
	r := testenv.StartRedis(t)
	rdb := r.Client()
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	client := newConformingClient(t)
	defer client.CloseIdleConnections()
	cfg := api.DefaultConfig()
	cfg.Listen = "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	srv, err := api.New(cfg, rollup.NewReader(rdb), time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	testenv.Eventually(t, 10*time.Second, "the API answers", func() (bool, string) {
		resp, err := client.Get("http://" + cfg.Listen + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200, resp.Status
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run returned %v after cancel", err)
	}
}

// TestConcurrentQueries runs queries that share the reader's caches (range
// indexes, the straddling-week merge) from many goroutines, for the race
// detector, and checks every answer against the model.
func TestConcurrentQueries(t *testing.T) {
	f := newFixture(t)
	h := f.server(t)
	qs := []want{
		{kind: "namespace_all", step: "week", start: "2025-05-29", end: "2025-06-10", item: rollup.Cpu, method: rollup.Usage},
		{project: "team", kind: "cluster_all", step: "week", start: "2025-05-29", end: "2025-06-10", item: rollup.Memory, method: rollup.Effective},
		{kind: "namespace", name: "default", step: "month", start: "2024-12-27", end: "2025-01-06", item: rollup.Storage, method: rollup.Effective},
	}
	expected := make([][]api.Row, len(qs))
	for i, q := range qs {
		expected[i] = f.rows(q, nil)
		if len(expected[i]) == 0 || len(expected[i]) > api.MaxPageSize {
			t.Fatalf("query %d expects %d rows: the test proves nothing", i, len(expected[i]))
		}
	}
	errs := make(chan error, 16*len(qs))
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		for i, q := range qs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				v := q.values()
				v.Set("pageSize", strconv.Itoa(api.MaxPageSize)) // every row on one page
				rec := get(h, usagePath(q.project), v)
				var r api.Response
				if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil || rec.Code != 200 {
					errs <- fmt.Errorf("query %d: %d %s", i, rec.Code, rec.Body)
					return
				}
				if r.Total != len(expected[i]) {
					errs <- fmt.Errorf("query %d: total %d, want %d", i, r.Total, len(expected[i]))
				}
				if d := rowsDiff(r.Items, expected[i]); d != "" {
					errs <- fmt.Errorf("query %d: %s", i, d)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
