package faults_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/alauda/costmeter/api"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/testenv"
)

// TestHostileQueries sends the API every kind of wrong parameter over
// real HTTP: each answers a 400 Status naming the problem, none a 500, and
// a valid query afterwards still answers exactly.
func TestHostileQueries(t *testing.T) {
	r := testenv.StartRedis(t)
	rdb := r.Client()
	store, err := rollup.NewStore(rdb, time.UTC, testRetention)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	first := rollup.DayFromDate(2025, time.July, 1)
	var cs []rollup.Contribution
	for d := first; d < first+3; d++ {
		for _, n := range []string{"api", "web"} {
			var v rollup.Values
			v[rollup.Field(rollup.Cpu, rollup.Effective)] = 3600 * rollup.Scale // one core-hour
			cs = append(cs, rollup.Contribution{Entity: rollup.Entity{Project: "team", Cluster: "east", Namespace: n}, Piece: rollup.Piece{Day: d, From: 0, To: 3600, Values: v}})
		}
	}
	if _, err := store.Apply(ctx, cs, "faults", nil, false); err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(api.DefaultConfig(), store, time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)

	long := strings.Repeat("a", 64<<10)
	ok := "start=2025-07-01&end=2025-07-31"
	platform := api.PlatformPath + "?"
	project := func(p string) string { return "/platform/cost.alauda.io/v1beta1/projects/" + p + "/costs/usage?" }
	tests := []struct{ name, path string }{
		{"no parameters", platform},
		{"every parameter wrong", platform + "start=x&end=y&step=hour&kind=all&name=*&item=CPU&method=effective&currentPage=0&pageSize=0&format=xml"},
		{"start not a date", platform + "start=2025-13-01&end=2025-07-31"},
		{"start a timestamp", platform + "start=2025-07-01T00:00:00Z&end=2025-07-31"},
		{"start February 30", platform + "start=2025-02-30&end=2025-07-31"},
		{"end before start", platform + "start=2025-07-31&end=2025-07-01"},
		{"range over a year", platform + "start=2024-01-01&end=2025-07-31"},
		{"range of ten thousand years", platform + "start=0001-01-01&end=9999-12-31"},
		{"step", platform + ok + "&step=hour"},
		{"kind", platform + ok + "&kind=everything"},
		{"kind without name", platform + ok + "&kind=namespace"},
		{"injection-like name", platform + ok + "&kind=namespace&name=" + url.QueryEscape("a' OR 1=1")},
		{"star name", platform + ok + "&kind=project&name=*"},
		{"hash-tag name", platform + ok + "&kind=cluster&name=" + url.QueryEscape("{x}")},
		{"key-separator name", platform + ok + "&kind=namespace&name=" + url.QueryEscape("a:b/c d")},
		{"64 KB name", platform + ok + "&kind=project&name=" + long},
		{"item", platform + ok + "&item=GPU"},
		{"method", platform + ok + "&method=" + url.QueryEscape("Effective;DROP")},
		{"page zero", platform + ok + "&currentPage=0"},
		{"negative page", platform + ok + "&currentPage=-1"},
		{"page beyond int64", platform + ok + "&currentPage=99999999999999999999999"},
		{"huge page size", platform + ok + "&pageSize=1000000"},
		{"page size not a number", platform + ok + "&pageSize=1e3"},
		{"format", platform + ok + "&format=xml"},
		{"64 KB value", platform + ok + "&step=" + long},
		{"injection-like project", project(url.PathEscape("a' OR 1=1")) + ok},
		{"star project", project("*") + ok},
		{"hash-tag project", project(url.PathEscape("{x}")) + ok},
		{"64 KB project", project(long) + ok},
		{"wrong parameter on the project route", project("team") + ok + "&kind=namespace_all&step=fortnight"},
	}
	client := hs.Client()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, st := getStatus(t, client, hs.URL+tt.path)
			if code != http.StatusBadRequest || st.Kind != "Status" || st.Code != http.StatusBadRequest || st.Reason != "BadRequest" || st.Message == "" {
				t.Fatalf("%d %+v, want a 400 BadRequest Status with a message", code, st)
			}
		})
	}
	// The server is unaffected: a valid query answers exactly.
	resp, err := client.Get(hs.URL + platform + ok + "&kind=namespace_all&step=month")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var page api.Response
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("valid query after the hostile ones: %d %v", resp.StatusCode, err)
	}
	if page.Total != 2 || len(page.Items) != 2 || page.Items[0].Usage != 3 || page.Items[1].Usage != 3 {
		t.Fatalf("valid query after the hostile ones: %+v", page)
	}
}

type status struct {
	Kind    string `json:"kind"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
	Code    int    `json:"code"`
}

func getStatus(t *testing.T, c *http.Client, u string) (int, status) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var st status
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("%d: body %.200q is not a Status: %v", resp.StatusCode, body, err)
	}
	return resp.StatusCode, st
}
