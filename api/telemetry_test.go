package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/alauda/costmeter/api"
	"github.com/alauda/costmeter/internal/telemetry"
	"github.com/alauda/costmeter/internal/testenv"
)

// TestRequestTelemetry: /metrics of the API's own engine counts requests
// by route template and status, the request span continues the caller's
// traceparent, and the probes stay out of both.
func TestRequestTelemetry(t *testing.T) {
	r := testenv.StartRedis(t)
	spans := tracetest.NewInMemoryExporter()
	tel, err := telemetry.Setup(context.Background(), telemetry.Config{}, "cost-api", telemetry.WithSpanExporter(spans))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	h := newServer(t, r.Client(), api.WithTelemetry(tel.MeterProvider(), tel.TracerProvider(), tel.Handler()))

	ok := mustQuery(t, "start=2025-01-01&end=2025-01-31&kind=namespace_all")
	bad := mustQuery(t, "start=2025-01-01")
	for range 3 {
		decode(t, get(h, usagePath("team"), ok))
	}
	decode(t, get(h, usagePath("ops"), ok))
	decode(t, get(h, usagePath(""), ok))
	if rec := get(h, usagePath(""), bad); rec.Code != http.StatusBadRequest {
		t.Fatalf("bad query: status %d", rec.Code)
	}
	get(h, "/healthz", nil)
	get(h, "/no/such/path", nil)

	const name = "http_server_request_duration_seconds"
	m := testenv.Scrape(t, h)
	tests := []struct {
		name  string
		route string
		code  string
		want  float64
	}{
		{"project route by template, not by project", api.ProjectPath, "200", 4},
		{"platform route ok", api.PlatformPath, "200", 1},
		{"platform route bad request", api.PlatformPath, "400", 1},
		{"probes are not counted", "/healthz", "200", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _ := m.Value(name, "http_route", tt.route, "http_response_status_code", tt.code)
			if got != tt.want {
				t.Fatalf("%s{http_route=%q,http_response_status_code=%q} = %v, want %v; series: %q", name, tt.route, tt.code, got, tt.want, m.Series(name))
			}
		})
	}
	for _, s := range m.Series(name) {
		if containsAny(s, "/projects/team/", "/projects/ops/", "/no/such/path") {
			t.Fatalf("a raw path became a label: %s", s)
		}
	}

	// A caller's traceparent is continued.
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req := httptest.NewRequest(http.MethodGet, usagePath("")+"?"+ok.Encode(), nil)
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	h.ServeHTTP(httptest.NewRecorder(), req)
	var found bool
	for _, s := range spans.GetSpans() {
		if s.Name == "GET "+api.PlatformPath && s.SpanContext.TraceID().String() == traceID {
			found = true
			if got := s.Parent.SpanID().String(); got != "00f067aa0ba902b7" {
				t.Fatalf("request span's parent is %s, want the caller's span", got)
			}
		}
	}
	if !found {
		t.Fatalf("no span of trace %s among %d spans", traceID, len(spans.GetSpans()))
	}
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
