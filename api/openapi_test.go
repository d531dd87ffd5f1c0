package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/alauda/costmeter/api"
	"github.com/alauda/costmeter/internal/rollup"
)

// notInDescription are the routes the server registers that openapi.yaml
// leaves out on purpose, each with the reason. Nothing else may be left
// out: TestEveryRouteIsDocumented fails on any other.
var notInDescription = map[string]string{
	"GET /":              "redirects a browser to the console; no part of the API",
	"GET /console":       "the console's page (static, no data, no token); the console is a client of the API, not the API",
	"GET /console/*file": "the console's static files, as GET /console",
}

// fullServer is the API with every optional part that adds routes
// (telemetry adds /metrics), over a Redis it never dials.
func fullServer(t *testing.T) *api.Server {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { rdb.Close() })
	srv, err := api.New(api.DefaultConfig(), rollup.NewReader(rdb), time.UTC,
		api.WithTelemetry(metricnoop.NewMeterProvider(), tracenoop.NewTracerProvider(), http.NotFoundHandler()))
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

var ginParam = regexp.MustCompile(`:([A-Za-z_]+)`)

// TestEveryRouteIsDocumented compares the routes Gin registers for the
// real server with the paths and methods of openapi.yaml, both ways, so
// that a route added to the server without its description (or a
// description left behind by a removed route) fails here.
func TestEveryRouteIsDocumented(t *testing.T) {
	engine, ok := fullServer(t).Handler().(*gin.Engine)
	if !ok {
		t.Fatal("the API's handler is no longer its *gin.Engine: give this test the route table another way")
	}
	served := map[string]bool{}
	for _, r := range engine.Routes() {
		served[r.Method+" "+ginParam.ReplaceAllString(r.Path, "{$1}")] = true
	}
	documented := map[string]bool{}
	doc := loadSpec(t)
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented[method+" "+path] = true
		}
	}
	if len(documented) < 12 {
		t.Fatalf("only %d operations in openapi.yaml: %v", len(documented), documented)
	}
	for _, route := range sorted(served) {
		reason, excluded := notInDescription[route]
		switch {
		case excluded && documented[route]:
			t.Errorf("%s is in api/openapi.yaml although notInDescription leaves it out (%s): keep one", route, reason)
		case !excluded && !documented[route]:
			t.Errorf("the server registers %s but api/openapi.yaml has no such operation: describe it under paths (or, if it is no part of the API, add it to notInDescription with the reason)", route)
		}
	}
	for _, op := range sorted(documented) {
		if !served[op] {
			t.Errorf("api/openapi.yaml describes %s but the server registers no such route", op)
		}
	}
	for route := range notInDescription {
		if !served[route] {
			t.Errorf("notInDescription lists %s, which the server no longer registers: remove it", route)
		}
	}
}

func sorted(set map[string]bool) []string {
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// redoclyInstall is what makes test/node's tools, Redocly among them.
const redoclyInstall = "run: npm ci --prefix test/node"

// TestOpenAPILint lints the document the API serves with the Redocly CLI
// (test/node, pinned) and the committed redocly.yaml (the recommended
// rules, less those it turns off with a reason): no error, no warning.
func TestOpenAPILint(t *testing.T) {
	redocly, err := filepath.Abs("../test/node/node_modules/.bin/redocly")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(redocly); err != nil {
		t.Fatalf("the Redocly CLI is not installed (%v); %s", err, redoclyInstall)
	}
	spec := filepath.Join(t.TempDir(), "openapi.yaml")
	if err := os.WriteFile(spec, served(t, fullServer(t), "/openapi.yaml"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(redocly, "lint", "--config", "../redocly.yaml", "--format", "json", spec)
	cmd.Env = append(os.Environ(), "REDOCLY_TELEMETRY=off", "REDOCLY_SUPPRESS_UPDATE_NOTICE=true", "NO_COLOR=1")
	out, err := cmd.Output()
	var report struct {
		Totals struct {
			Errors, Warnings, Ignored int
		}
		Version  string
		Problems []struct {
			RuleID   string `json:"ruleId"`
			Severity string
			Message  string
			Location []struct {
				Pointer string
			}
		}
	}
	if jerr := json.Unmarshal(out, &report); jerr != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("redocly lint: %v; its output is not its JSON report (%v): %s %s", err, jerr, out, stderr)
	}
	if report.Version != "2.77.0" {
		t.Errorf("Redocly CLI %s, test/node pins 2.77.0; %s", report.Version, redoclyInstall)
	}
	for _, p := range report.Problems {
		where := ""
		if len(p.Location) > 0 {
			where = p.Location[0].Pointer
		}
		t.Errorf("%s %s at %s: %s", p.Severity, p.RuleID, where, p.Message)
	}
	if report.Totals.Errors != 0 || report.Totals.Warnings != 0 || report.Totals.Ignored != 0 {
		t.Errorf("redocly lint: %d errors, %d warnings, %d ignored; want none", report.Totals.Errors, report.Totals.Warnings, report.Totals.Ignored)
	}
	if err != nil && !t.Failed() {
		t.Errorf("redocly lint: %v with a clean report", err)
	}
}

// served returns the body of GET path from srv on a real HTTP server.
func served(t *testing.T, srv *api.Server, path string) []byte {
	t.Helper()
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	resp, err := ts.Client().Get(ts.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v: %.300s", path, resp.Status, err, body)
	}
	return body
}
