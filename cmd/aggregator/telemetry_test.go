package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/alauda/costmeter/aggregator"
	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/telemetry"
	"github.com/alauda/costmeter/internal/testenv"
)

// TestMain lets the test binary run the aggregator itself as a child
// (testenv.ChildCommand), so that a test can signal it.
func TestMain(m *testing.M) {
	testenv.RunChild(map[string]func([]string) int{"aggregator": func(args []string) int { return run(args, os.Stderr) }})
	os.Exit(m.Run())
}

// otlpReceiver is an OTLP/HTTP traces endpoint keeping what it receives.
type otlpReceiver struct {
	mu    sync.Mutex
	spans map[string][]string // span name → trace ids (hex)
	svc   map[string]bool     // service.name of the resources
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil || r.URL.Path != "/v1/traces" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	var req collectortrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				o.svc[a.GetValue().GetStringValue()] = true
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				o.spans[s.GetName()] = append(o.spans[s.GetName()], fmt.Sprintf("%x", s.GetTraceId()))
			}
		}
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	_, _ = w.Write(out)
}

func (o *otlpReceiver) traces(name string) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.spans[name]...)
}

func get(url string) (int, string, error) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestBinaryTelemetry runs the aggregator binary with
// OTEL_EXPORTER_OTLP_ENDPOINT set: /readyz answers once NATS, Redis and
// the consumer run; /metrics on --listen counts what flowed; SIGTERM stops
// it with status 0 after the spans were flushed to the OTLP endpoint, the
// apply span in the trace the publisher started.
func TestBinaryTelemetry(t *testing.T) {
	ctx := context.Background()
	n, r := testenv.StartNATS(t), testenv.StartRedis(t)
	recv := &otlpReceiver{spans: map[string][]string{}, svc: map[string]bool{}}
	otlp := httptest.NewServer(recv)
	defer otlp.Close()

	addr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	args := []string{"--nats-url", n.URL(), "--redis-url", r.URL(), "--listen", addr, "--lag-interval", "50ms", "--log-format", "json"}
	cmd := testenv.ChildCommand("aggregator", args...)
	cmd.Env = append(cmd.Env, telemetry.EnvOTLPEndpoint+"="+otlp.URL)
	var logs testenv.LockedBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := false
	t.Cleanup(func() {
		if !exited {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	testenv.Eventually(t, 30*time.Second, "aggregator ready", func() (bool, string) {
		code, body, err := get("http://" + addr + "/readyz")
		return code == http.StatusOK, fmt.Sprintf("%d %s %v; log:\n%s", code, body, err, logs.String())
	})

	// The collector side, with its own provider.
	spans := tracetest.NewInMemoryExporter()
	col, err := telemetry.Setup(ctx, telemetry.Config{}, "cost-collector", telemetry.WithSpanExporter(spans))
	if err != nil {
		t.Fatal(err)
	}
	defer col.Shutdown(ctx)
	log := slog.New(slog.DiscardHandler)
	nc, js, err := natsconn.Connect(n.URL(), "test", log)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	pub, err := collector.NewPublisher(js, collector.PublisherConfig{}, log, collector.WithPublisherTracer(col.Tracer("test")))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now().UTC().Truncate(time.Hour).Add(-2 * time.Hour)
	var samples []sample.Sample
	for i := range 3 {
		samples = append(samples, sample.Sample{Cluster: "east", Project: "p", Namespace: fmt.Sprintf("ns-%d", i),
			Start: start, End: start.Add(time.Minute), CPU: sample.Resources{Usage: 0.5, Request: 1}})
	}
	if err := pub.Publish(ctx, samples); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, stream.SamplesPrefix+"east", []byte("{not json")); err != nil {
		t.Fatal(err)
	}

	testenv.Eventually(t, 30*time.Second, "/metrics counts the samples", func() (bool, string) {
		code, body, err := get("http://" + addr + "/metrics")
		if err != nil || code != http.StatusOK {
			return false, fmt.Sprintf("%d %v", code, err)
		}
		m, err := testenv.ParseMetrics(strings.NewReader(body))
		if err != nil {
			return false, err.Error()
		}
		applied, _ := m.Value("cost_aggregator_samples_applied_total")
		received, _ := m.Value("cost_aggregator_samples_received_total")
		bad, _ := m.Value("cost_aggregator_samples_deadlettered_total", "reason", aggregator.ReasonDecode)
		lag, ok := m.Value("cost_aggregator_consumer_pending")
		return applied == 3 && received == 4 && bad == 1 && ok && lag == 0,
			fmt.Sprintf("applied %v, received %v, dead-lettered %v, lag %v (%v)", applied, received, bad, lag, ok)
	})

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("aggregator after SIGTERM: %v\n%s", err, logs.String())
	}
	exited = true

	published := spans.GetSpans()
	if len(published) != 1 {
		t.Fatalf("%d publish spans, want 1", len(published))
	}
	want := published[0].SpanContext.TraceID().String()
	applies := recv.traces("apply samples")
	found := false
	for _, id := range applies {
		found = found || id == want
	}
	if !found {
		t.Fatalf("no apply span of trace %s exported over OTLP (apply traces %q, services %v)", want, applies, recv.svc)
	}
	if !recv.svc["cost-aggregator"] {
		t.Fatalf("service.name of the exported spans: %v", recv.svc)
	}
	redis := 0
	for name, ids := range recv.spans {
		for _, id := range ids {
			if id == want && name != "apply samples" && name != "publish rollup events" {
				redis++
			}
		}
	}
	if redis == 0 {
		t.Fatalf("no redis span in trace %s: %v", want, recv.spans)
	}
	// The dead letter is logged under its batch's apply span: the line
	// carries that span's trace id.
	var line string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, `"dead-lettered sample"`) {
			line = l
		}
	}
	if !strings.Contains(line, `"trace_id":"`) || !strings.Contains(line, `"span_id":"`) {
		t.Fatalf("dead-letter log line without trace ids: %q", line)
	}
}

// TestOTLPEndpointValidated: a bad endpoint is a configuration error.
func TestOTLPEndpointValidated(t *testing.T) {
	t.Setenv(telemetry.EnvOTLPEndpoint, "otel-collector:4318")
	var stderr bytes.Buffer
	if code := run(nil, &stderr); code != 2 || !strings.Contains(stderr.String(), "--otlp-endpoint") {
		t.Fatalf("exit %d, want 2 naming --otlp-endpoint:\n%s", code, stderr.String())
	}
}
