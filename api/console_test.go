package api_test

import (
	"cmp"
	"encoding/csv"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/alauda/costmeter/api"
	"github.com/alauda/costmeter/internal/auth"
	"github.com/alauda/costmeter/internal/rollup"
)

func TestConsoleIsServed(t *testing.T) {
	f := newFixture(t)
	h := f.server(t)
	for _, c := range []struct {
		path     string
		code     int
		location string
		ctype    string
	}{
		{"/", http.StatusFound, "/console/", ""},
		{"/console", http.StatusMovedPermanently, "/console/", ""},
		{"/console/", http.StatusOK, "", "text/html"},
		{"/console/index.html", http.StatusOK, "", "text/html"},
		{"/console/app.js", http.StatusOK, "", "javascript"},
		{"/console/views/chart.js", http.StatusOK, "", "javascript"},
		{"/console/style.css", http.StatusOK, "", "text/css"},
		{"/console/vendor/echarts/echarts.min.js", http.StatusOK, "", "javascript"},
		{"/console/vendor/echarts/LICENSE", http.StatusOK, "", ""},
		{"/console/vendor/echarts/NOTICE", http.StatusOK, "", ""},
		{"/console/vendor/", http.StatusNotFound, "", ""},
		{"/console/vendor", http.StatusNotFound, "", ""},
		{"/console/nope.js", http.StatusNotFound, "", ""},
		{"/console/../api.go", http.StatusNotFound, "", ""},
	} {
		t.Run(c.path, func(t *testing.T) {
			rec := get(h, c.path, nil)
			if rec.Code != c.code {
				t.Fatalf("%s: %d, want %d: %s", c.path, rec.Code, c.code, truncate(rec.Body.String()))
			}
			if c.location != "" && rec.Header().Get("Location") != c.location {
				t.Fatalf("Location %q, want %q", rec.Header().Get("Location"), c.location)
			}
			if !strings.Contains(rec.Header().Get("Content-Type"), c.ctype) {
				t.Fatalf("Content-Type %q, want %q", rec.Header().Get("Content-Type"), c.ctype)
			}
			if c.code == http.StatusOK && !strings.Contains(rec.Header().Get("Content-Security-Policy"), "connect-src 'self'") {
				t.Fatalf("no CSP confining the console to its origin: %v", rec.Header())
			}
		})
	}
	// Nothing from elsewhere: no absolute URL in the page or the console's own modules.
	for _, p := range []string{"/console/", "/console/app.js", "/console/api.js", "/console/live.js", "/console/chartoption.js", "/console/style.css"} {
		body := get(h, p, nil).Body.String()
		for _, bad := range []string{"http://", "https://", `"//`, "'//", "url(//", "url(http"} {
			if strings.Contains(body, bad) {
				t.Errorf("%s refers to %q: no network beyond the API", p, bad)
			}
		}
	}
}

func TestConfigRoute(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct {
		name string
		p    *auth.Principal
		want api.Scope
	}{
		{"platform", &auth.Principal{Name: "admin", Platform: true}, api.Scope{Name: "admin", Platform: true, Projects: []string{}}},
		{"projects", &auth.Principal{Name: "pay", Projects: []string{"payments", "web"}}, api.Scope{Name: "pay", Projects: []string{"payments", "web"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			authn := func(g *gin.Context) {
				g.Request = g.Request.WithContext(auth.WithPrincipal(g.Request.Context(), c.p))
			}
			loc, _ := time.LoadLocation("Asia/Shanghai")
			srv, err := api.New(api.DefaultConfig(), rollup.NewReader(f.rdb), loc, api.WithAuthenticate(authn),
				api.WithClock(func() time.Time { return time.Date(2025, 6, 30, 17, 0, 0, 0, time.UTC) }))
			if err != nil {
				t.Fatal(err)
			}
			rec := get(conform(t, srv.Handler()), api.ConfigPath, nil)
			if rec.Code != 200 {
				t.Fatalf("%d %s", rec.Code, rec.Body)
			}
			var got api.ConfigResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			// 17:00 UTC is already July 1st in Shanghai.
			if got.Timezone != "Asia/Shanghai" || got.Today != "2025-07-01" || got.Currency != "CNY" || len(got.Priced) != 0 || got.Watch {
				t.Fatalf("config %+v", got)
			}
			if got.Scope.Name != c.want.Name || got.Scope.Platform != c.want.Platform || !slices.Equal(got.Scope.Projects, c.want.Projects) {
				t.Fatalf("scope %+v, want %+v", got.Scope, c.want)
			}
		})
	}
}

// byUsage orders model rows as orderBy=usage must: entities by their total
// over all rows, largest first, ties by name, then by bucket.
func byUsage(rows []api.Row) []api.Row {
	key := func(r api.Row) string { return r.Project + " " + r.Cluster + " " + r.Namespace }
	totals := map[string]float64{}
	for _, r := range rows {
		totals[key(r)] += r.Usage
	}
	out := slices.Clone(rows)
	slices.SortStableFunc(out, func(a, b api.Row) int {
		if c := cmp.Compare(totals[key(b)], totals[key(a)]); c != 0 {
			return c
		}
		if c := cmp.Compare(key(a), key(b)); c != 0 {
			return c
		}
		return cmp.Compare(a.Start, b.Start)
	})
	return out
}

func TestOrderByUsage(t *testing.T) {
	f := newFixture(t)
	h := f.server(t)
	for _, q := range []want{
		{kind: "namespace_all", step: "day", start: ranges[2][0], end: ranges[2][1], item: rollup.Cpu, method: rollup.Effective},
		{kind: "project_all", step: "week", start: ranges[0][0], end: ranges[0][1], item: rollup.Memory, method: rollup.Usage},
		{kind: "cluster_all", step: "month", start: ranges[3][0], end: ranges[3][1], item: rollup.Storage, method: rollup.Request},
		{project: "team", kind: "namespace_all", step: "week", start: ranges[1][0], end: ranges[1][1], item: rollup.Cpu, method: rollup.Usage},
		{project: "team", kind: "cluster_all", step: "day", start: ranges[2][0], end: ranges[2][1], item: rollup.Cpu, method: rollup.ProjectQuota},
	} {
		t.Run(q.project+"/"+q.kind+"/"+q.step, func(t *testing.T) {
			wantRows := byUsage(f.rows(q, nil))
			if len(wantRows) < 3 {
				t.Fatalf("the model has %d rows: the test proves nothing", len(wantRows))
			}
			if slices.EqualFunc(wantRows, f.rows(q, nil), func(a, b api.Row) bool { return a == b }) && q.kind != "project_all" {
				t.Fatalf("usage order equals name order: the test proves nothing")
			}
			var got []api.Row
			for page := 1; ; page++ {
				v := q.values()
				v.Set("orderBy", "usage")
				v.Set("pageSize", "7")
				v.Set("currentPage", strconv.Itoa(page))
				r := decode(t, get(h, usagePath(q.project), v))
				if r.Total != len(wantRows) {
					t.Fatalf("total %d, want %d", r.Total, len(wantRows))
				}
				got = append(got, r.Items...)
				if len(r.Items) < 7 {
					break
				}
			}
			compareRows(t, got, wantRows)
			// The CSV export has the same rows in the same order.
			v := q.values()
			v.Set("orderBy", "usage")
			v.Set("format", "csv")
			rec := get(h, usagePath(q.project), v)
			recs, err := csv.NewReader(rec.Body).ReadAll()
			if err != nil || rec.Code != 200 {
				t.Fatalf("csv: %d %v", rec.Code, err)
			}
			if len(recs) != len(wantRows)+1 {
				t.Fatalf("csv has %d records, want %d and a header", len(recs), len(wantRows))
			}
			for i, r := range wantRows {
				if c := recs[i+1]; c[0] != r.Project || c[1] != r.Cluster || c[2] != r.Namespace || c[7] != r.Start {
					t.Fatalf("csv row %d = %v, want %+v", i, c, r)
				}
			}
		})
	}
	for _, bad := range []string{"name", "Usage", "usage,name"} {
		rec := get(h, usagePath(""), url.Values{"start": {"2025-06-01"}, "end": {"2025-06-30"}, "orderBy": {bad}})
		checkStatus(t, rec.Code, rec.Body.Bytes(), 400, "BadRequest", "orderBy: ")
	}
}
