package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/alauda/costmeter/internal/telemetry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  telemetry.Config
		want string
	}{
		{"empty: no export", telemetry.Config{}, ""},
		{"base endpoint", telemetry.Config{OTLPEndpoint: "http://otel:4318"}, ""},
		{"traces endpoint", telemetry.Config{OTLPTracesEndpoint: "https://otel:4318/v1/traces"}, ""},
		{"grpc scheme", telemetry.Config{OTLPEndpoint: "grpc://otel:4317"}, "--otlp-endpoint"},
		{"no host", telemetry.Config{OTLPTracesEndpoint: "http://"}, "--otlp-traces-endpoint"},
		{"credentials not echoed", telemetry.Config{OTLPEndpoint: "ftp://user:hunter2@otel"}, "--otlp-endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error %v, want one mentioning %s", err, tt.want)
			case err != nil && strings.Contains(err.Error(), "hunter2"):
				t.Fatalf("error shows the password: %v", err)
			}
		})
	}
}

// TestSetup: without an endpoint nothing is traced; with one, spans are
// recorded.
func TestSetup(t *testing.T) {
	ctx := context.Background()
	off, err := telemetry.Setup(ctx, telemetry.Config{}, "test")
	if err != nil {
		t.Fatal(err)
	}
	if off.Tracing() {
		t.Fatal("tracing without an endpoint")
	}
	_, span := off.Tracer("t").Start(ctx, "x")
	if span.SpanContext().IsValid() {
		t.Fatal("a span was recorded without an endpoint")
	}
	span.End()
	if err := off.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	on, err := telemetry.Setup(ctx, telemetry.Config{OTLPEndpoint: "http://127.0.0.1:1"}, "test")
	if err != nil {
		t.Fatal(err)
	}
	if !on.Tracing() {
		t.Fatal("no tracing with an endpoint")
	}
	_, span = on.Tracer("t").Start(ctx, "x")
	if !span.SpanContext().IsValid() {
		t.Fatal("no span recorded with an endpoint")
	}
	// Nothing queued: Shutdown stops the exporter without a send.
	if err := on.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	span.End()
}

// TestMetricsHandler: instruments of every meter are served in the
// Prometheus text format, from this Telemetry's registry only.
func TestMetricsHandler(t *testing.T) {
	ctx := context.Background()
	a, err := telemetry.Setup(ctx, telemetry.Config{}, "a")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown(ctx)
	b, err := telemetry.Setup(ctx, telemetry.Config{}, "b")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown(ctx)
	c, err := a.Meter("test").Int64Counter("cost.test.things")
	if err != nil {
		t.Fatal(err)
	}
	c.Add(ctx, 3)
	body := func(tel *telemetry.Telemetry) string {
		rec := httptest.NewRecorder()
		tel.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		return rec.Body.String()
	}
	if got := body(a); !strings.Contains(got, "cost_test_things_total 3") || !strings.Contains(got, "go_goroutines") {
		t.Fatalf("/metrics of a:\n%s", got)
	}
	if got := body(b); strings.Contains(got, "cost_test_things") {
		t.Fatal("a's counter shows on b's /metrics: the registry is shared")
	}
}

// TestNATSPropagation: the trace context survives a NATS header round trip
// and is read whatever the case of the key.
func TestNATSPropagation(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	tel, err := telemetry.Setup(context.Background(), telemetry.Config{}, "test", telemetry.WithSpanExporter(spans))
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	ctx, span := tel.Tracer("t").Start(context.Background(), "publish")
	defer span.End()
	msg := &nats.Msg{Subject: "s"}
	telemetry.Inject(ctx, msg)
	if msg.Header.Get("traceparent") == "" {
		t.Fatalf("no lower-case traceparent header: %v", msg.Header)
	}
	got := trace.SpanContextFromContext(telemetry.Extract(context.Background(), msg.Header))
	if got.TraceID() != span.SpanContext().TraceID() || got.SpanID() != span.SpanContext().SpanID() || !got.IsRemote() {
		t.Fatalf("extracted %v, want %v", got, span.SpanContext())
	}
	upper := nats.Header{"Traceparent": msg.Header["traceparent"]}
	if got := trace.SpanContextFromContext(telemetry.Extract(context.Background(), upper)); got.TraceID() != span.SpanContext().TraceID() {
		t.Fatal("Traceparent (canonical case) not read")
	}
	if got := trace.SpanContextFromContext(telemetry.Extract(context.Background(), nil)); got.IsValid() {
		t.Fatal("a span context from no headers")
	}
}

// TestLogger: *Context records carry the span's ids; secrets do not reach
// the output.
func TestLogger(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	tel, err := telemetry.Setup(context.Background(), telemetry.Config{}, "test", telemetry.WithSpanExporter(spans))
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	ctx, span := tel.Tracer("t").Start(context.Background(), "op")
	defer span.End()

	var buf bytes.Buffer
	log := telemetry.NewLogger(&buf, "json", "debug").With("component", "test")
	log.InfoContext(ctx, "with span", "seq", 7)
	log.Info("without span")
	log.WarnContext(ctx, "leaky", "url", "redis://app:hunter2@redis:6379/0", "password", "hunter2",
		"err", errors.New(`dial nats://admin:hunter2@nats:4222: refused`))

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines:\n%s", len(lines), buf.String())
	}
	var rec []map[string]any
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not JSON: %s", l)
		}
		rec = append(rec, m)
	}
	if rec[0]["trace_id"] != span.SpanContext().TraceID().String() || rec[0]["span_id"] != span.SpanContext().SpanID().String() || rec[0]["component"] != "test" {
		t.Fatalf("record with span: %v", rec[0])
	}
	if _, ok := rec[1]["trace_id"]; ok {
		t.Fatalf("record without span has a trace id: %v", rec[1])
	}
	if strings.Contains(lines[2], "hunter2") {
		t.Fatalf("a secret reached the log: %s", lines[2])
	}
	if !strings.Contains(lines[2], "redis://***@redis:6379/0") || !strings.Contains(lines[2], "nats://***@nats:4222") {
		t.Fatalf("redacted URLs lost their host: %s", lines[2])
	}

	buf.Reset()
	telemetry.NewLogger(&buf, "text", "info").InfoContext(ctx, "text")
	if !strings.Contains(buf.String(), "trace_id="+span.SpanContext().TraceID().String()) {
		t.Fatalf("text record: %s", buf.String())
	}
}
