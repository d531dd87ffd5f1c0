package api_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/alauda/costmeter/api"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/testenv"
)

// billPath is the bill route of the platform, or of a project.
func billPath(project string) string {
	if project == "" {
		return "/platform/cost.alauda.io/v1beta1/costs/allocation"
	}
	return "/platform/cost.alauda.io/v1beta1/projects/" + project + "/costs/allocation"
}

// newChargebackServer is a conforming server over rdb keeping the label
// keys team and example.com/env, with cfg's pricing and policy.
func newChargebackServer(t testing.TB, rdb redis.UniversalClient, cfg api.Config) http.Handler {
	t.Helper()
	cfg.AllocationLabels = "team, example.com/env"
	if cfg.Listen == "" {
		cfg.Listen, cfg.Currency = api.DefaultConfig().Listen, api.DefaultConfig().Currency
	}
	srv, err := api.New(cfg, rollup.NewReader(rdb), time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	return conform(t, srv.Handler())
}

func TestGroupParameterErrors(t *testing.T) {
	r := testenv.StartRedis(t)
	h := newChargebackServer(t, r.Client(), api.Config{})
	ok := "start=2025-01-01&end=2025-01-31"
	usage := []struct{ name, query, msg string }{
		{"groupBy missing", ok + "&kind=group_all", "groupBy: required for kind=group_all"},
		{"groupBy missing for group", ok + "&kind=group&name=a", "groupBy: required for kind=group"},
		{"name missing for group", ok + "&kind=group&groupBy=team", "name: required for kind=group"},
		{"name not a label value", ok + "&kind=group&groupBy=team&name=-a", "name: "},
		{"groupBy not a label key", ok + "&kind=group_all&groupBy=a%20b", `groupBy: label key "a b"`},
		{"groupBy not kept", ok + "&kind=group_all&groupBy=cost-center", `groupBy: "cost-center" is not a kept label key (kept: team, example.com/env)`},
		{"groupBy with another kind", ok + "&kind=project_all&groupBy=team", "groupBy: only with kind=group or group_all, not kind=project_all"},
	}
	for _, tt := range usage {
		t.Run("usage/"+tt.name, func(t *testing.T) {
			for _, path := range []string{usagePath(""), usagePath("team")} {
				rec := get(h, path, mustQuery(t, tt.query))
				checkStatus(t, rec.Code, rec.Body.Bytes(), http.StatusBadRequest, "BadRequest", tt.msg)
			}
		})
	}
	bill := []struct{ name, query, msg string }{
		{"start missing", "end=2025-01-31&groupBy=team", "start: required"},
		{"step unknown", ok + "&step=year&groupBy=team", `step: "year"`},
		{"groupBy missing", ok, "groupBy: required"},
		{"groupBy not kept", ok + "&groupBy=cost-center", `groupBy: "cost-center" is not a kept label key`},
		{"name bad", ok + "&groupBy=team&name=a%20b", "name: "},
		{"cluster bad", ok + "&groupBy=team&cluster=East", "cluster: "},
	}
	for _, tt := range bill {
		t.Run("bill/"+tt.name, func(t *testing.T) {
			for _, path := range []string{billPath(""), billPath("team")} {
				rec := get(h, path, mustQuery(t, tt.query))
				checkStatus(t, rec.Code, rec.Body.Bytes(), http.StatusBadRequest, "BadRequest", tt.msg)
			}
		})
	}
	t.Run("no key kept", func(t *testing.T) {
		h := newServer(t, r.Client())
		rec := get(h, usagePath(""), mustQuery(t, ok+"&kind=group_all&groupBy=team"))
		checkStatus(t, rec.Code, rec.Body.Bytes(), http.StatusBadRequest, "BadRequest", `groupBy: "team" is not a kept label key: no key is kept (--allocation-labels is empty)`)
	})
	t.Run("bad project in the path", func(t *testing.T) {
		rec := get(h, billPath("Team"), mustQuery(t, ok+"&groupBy=team"))
		checkStatus(t, rec.Code, rec.Body.Bytes(), http.StatusBadRequest, "BadRequest", "project: ")
	})
}

func TestAllocationFlagsErrors(t *testing.T) {
	cfg := api.DefaultConfig()
	cfg.AllocationLabels = "team,team"
	cfg.AllocationFile = "/nonexistent/policy.yaml"
	err := cfg.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{`--allocation-labels: label key "team" is listed twice`, "--allocation-file: read allocation policy: open /nonexistent/policy.yaml"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}
