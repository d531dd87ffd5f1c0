package aggregator_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/alauda/costmeter/aggregator"
	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/internal/pipelinetest"
	"github.com/alauda/costmeter/internal/redisconn"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/telemetry"
	"github.com/alauda/costmeter/internal/testenv"
)

// process is one binary's telemetry, recording spans in memory.
type process struct {
	tel   *telemetry.Telemetry
	spans *tracetest.InMemoryExporter
}

func newProcess(t *testing.T, service string) process {
	t.Helper()
	spans := tracetest.NewInMemoryExporter()
	tel, err := telemetry.Setup(context.Background(), telemetry.Config{}, service, telemetry.WithSpanExporter(spans))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	return process{tel: tel, spans: spans}
}

// named returns the recorded spans called name.
func (p process) named(name string) tracetest.SpanStubs {
	var out tracetest.SpanStubs
	for _, s := range p.spans.GetSpans() {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// headerLog collects the headers of every message on a subject, as a
// subscriber of the dead letters or rollup events would see them.
type headerLog struct {
	mu      sync.Mutex
	headers []nats.Header
}

func (h *headerLog) add(m *nats.Msg) {
	h.mu.Lock()
	h.headers = append(h.headers, m.Header)
	h.mu.Unlock()
}

// traceIDs returns the trace id of each message's traceparent ("" when
// it has none).
func (h *headerLog) traceIDs() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, len(h.headers))
	for i, hd := range h.headers {
		sc := trace.SpanContextFromContext(telemetry.Extract(context.Background(), hd))
		if sc.IsValid() {
			out[i] = sc.TraceID().String()
		}
	}
	return out
}

func subscribe(t *testing.T, nc *nats.Conn, subject string) *headerLog {
	t.Helper()
	var h headerLog
	sub, err := nc.Subscribe(subject, h.add)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return &h
}

// TestTelemetryEndToEnd runs a collector's publisher and an aggregator as
// two processes with their own providers, over real NATS and Redis: one
// trace runs from the publish through the apply (and its Redis calls) to
// the rollup events, carried by NATS headers only; /metrics counts exactly
// what flowed, what was a duplicate and what was dead-lettered, and why.
func TestTelemetryEndToEnd(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	col, agg := newProcess(t, "cost-collector"), newProcess(t, "cost-aggregator")
	events := subscribe(t, e.nc, stream.RollupsSubjects)
	letters := subscribe(t, e.nc, stream.DeadLetterSubjects)

	rdb := e.redis.Client()
	if err := redisconn.Trace(rdb, agg.tel.TracerProvider()); err != nil {
		t.Fatal(err)
	}
	store, err := rollup.NewStore(rdb, time.UTC, testRetention)
	if err != nil {
		t.Fatal(err)
	}
	const scope = "github.com/alauda/costmeter/aggregator"
	cfg := aggregator.DefaultConfig()
	cfg.LagInterval = 20 * time.Millisecond
	cfg.Stream.AckWait = 2 * time.Second
	a, err := aggregator.New(cfg, e.js, store, aggregator.WithLogger(e.log), aggregator.WithClock(func() time.Time { return testNow }),
		aggregator.WithMeter(agg.tel.Meter(scope)), aggregator.WithTracer(agg.tel.Tracer(scope)))
	if err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(actx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("aggregator: %v", err)
		}
	})

	pub, err := collector.NewPublisher(e.js, collector.PublisherConfig{MaxBatch: 50}, e.log,
		collector.WithPublisherMeter(col.tel.Meter("collector")), collector.WithPublisherTracer(col.tel.Tracer("collector")))
	if err != nil {
		t.Fatal(err)
	}

	// One message of four samples, within one day: four applied pieces.
	good := gen("east", 2, time.Date(2025, 6, 9, 22, 0, 0, 0, time.UTC), 2, 10*time.Minute)
	if err := pub.Publish(ctx, good); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "batch applied", func() (bool, string) {
		ok, why := pipelinetest.Drained(e.js)
		return ok && len(agg.named("apply samples")) == 1 && len(events.traceIDs()) > 0, why
	})

	t.Run("one trace from publish to events", func(t *testing.T) {
		published := col.named("publish samples")
		if len(published) != 1 {
			t.Fatalf("%d publish spans, want 1", len(published))
		}
		pubSpan, apply := published[0], agg.named("apply samples")[0]
		if got, want := apply.SpanContext.TraceID(), pubSpan.SpanContext.TraceID(); got != want {
			t.Fatalf("apply span in trace %s, publish span in %s", got, want)
		}
		if apply.Parent.SpanID() != pubSpan.SpanContext.SpanID() || !apply.Parent.IsRemote() {
			t.Fatalf("apply span's parent is %v, want the remote publish span %s", apply.Parent.SpanID(), pubSpan.SpanContext.SpanID())
		}
		if pubSpan.SpanKind != trace.SpanKindProducer || apply.SpanKind != trace.SpanKindConsumer {
			t.Fatalf("span kinds: publish %s, apply %s", pubSpan.SpanKind, apply.SpanKind)
		}
		var redisCalls int
		for _, s := range agg.spans.GetSpans() {
			if s.Parent.SpanID() == apply.SpanContext.SpanID() && s.InstrumentationScope.Name != scope {
				redisCalls++
			}
		}
		if redisCalls == 0 {
			t.Fatal("no redis span under the apply span")
		}
		want := pubSpan.SpanContext.TraceID().String()
		for i, id := range events.traceIDs() {
			if id != want {
				t.Fatalf("rollup event %d carries trace %q, want %s", i, id, want)
			}
		}
		if evs := agg.named("publish rollup events"); len(evs) != 1 || evs[0].Parent.SpanID() != apply.SpanContext.SpanID() {
			t.Fatalf("publish rollup events spans %d, want 1 under the apply span", len(evs))
		}
	})

	// A message that is not JSON, a sample of another cluster, and two
	// samples counted already (other batching, so a new message id).
	if _, err := e.js.Publish(ctx, stream.SamplesPrefix+"east", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	stray := gen("west", 1, time.Date(2025, 6, 9, 20, 0, 0, 0, time.UTC), 1, 10*time.Minute)
	if _, err := e.js.Publish(ctx, stream.SamplesPrefix+"east", sample.EncodeBatch(nil, stray)); err != nil {
		t.Fatal(err)
	}
	again, err := collector.NewPublisher(e.js, collector.PublisherConfig{MaxBatch: 2}, e.log,
		collector.WithPublisherMeter(col.tel.Meter("collector")), collector.WithPublisherTracer(col.tel.Tracer("collector")))
	if err != nil {
		t.Fatal(err)
	}
	if err := again.Publish(ctx, good[:2]); err != nil {
		t.Fatal(err)
	}

	const pending = "cost_aggregator_consumer_pending"
	testenv.Eventually(t, 20*time.Second, "bad samples dead-lettered and the lag gauge at zero", func() (bool, string) {
		if ok, why := pipelinetest.Drained(e.js); !ok {
			return false, why
		}
		m := testenv.Scrape(t, agg.tel.Handler())
		lag, ok := m.Value(pending, "stream", stream.Samples, "consumer", stream.Consumer)
		published, _ := m.Value("cost_aggregator_events_published_total")
		batches, _ := m.Value("cost_aggregator_batch_size")
		return ok && lag == 0 && len(letters.traceIDs()) == 2 && int(published) == len(events.traceIDs()) && int(batches) == len(agg.named("apply samples")),
			fmt.Sprintf("lag %v (%v), %d dead letters, events %v published and %d seen, %v batches and %d apply spans",
				lag, ok, len(letters.traceIDs()), published, len(events.traceIDs()), batches, len(agg.named("apply samples")))
	})

	t.Run("aggregator counters", func(t *testing.T) {
		m := testenv.Scrape(t, agg.tel.Handler())
		tests := []struct {
			name   string
			metric string
			labels []string
			want   float64
		}{
			// Not JSON is one malformed sample: received, then dead-lettered.
			{"received: every sample, bad ones included", "cost_aggregator_samples_received_total", nil, 4 + 1 + 1 + 2},
			{"applied pieces", "cost_aggregator_samples_applied_total", nil, 4},
			{"duplicates", "cost_aggregator_samples_duplicates_total", nil, 2},
			{"dead-lettered: not json", "cost_aggregator_samples_deadlettered_total", []string{"reason", aggregator.ReasonDecode}, 1},
			{"dead-lettered: wrong cluster", "cost_aggregator_samples_deadlettered_total", []string{"reason", aggregator.ReasonSubject}, 1},
			{"dead-lettered: all reasons", "cost_aggregator_samples_deadlettered_total", nil, 2},
			{"events published", "cost_aggregator_events_published_total", nil, float64(len(events.traceIDs()))},
			{"batch sizes recorded", "cost_aggregator_batch_size", nil, float64(len(agg.named("apply samples")))},
			{"apply latencies recorded", "cost_aggregator_apply_duration_seconds", nil, float64(len(agg.named("apply samples")))},
			{"consumer lag", pending, []string{"stream", stream.Samples}, 0},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, ok := m.Value(tt.metric, tt.labels...)
				if !ok || got != tt.want {
					t.Fatalf("%s%q = %v (present %v), want %v; series %q", tt.metric, tt.labels, got, ok, tt.want, m.Series(tt.metric))
				}
			})
		}
	})

	t.Run("dead letters carry the apply span's trace", func(t *testing.T) {
		applies := map[string]bool{}
		for _, s := range agg.named("apply samples") {
			applies[s.SpanContext.TraceID().String()] = true
		}
		for i, id := range letters.traceIDs() {
			if !applies[id] {
				t.Fatalf("dead letter %d carries trace %q, not one of an apply span", i, id)
			}
		}
	})

	t.Run("collector counters", func(t *testing.T) {
		m := testenv.Scrape(t, col.tel.Handler())
		for _, c := range []struct {
			metric string
			want   float64
		}{
			{"cost_collector_messages_published_total", 2},
			{"cost_collector_samples_published_total", 6},
			{"cost_collector_publish_failures_total", 0},
		} {
			got, _ := m.Value(c.metric)
			if got != c.want {
				t.Errorf("%s = %v, want %v; series %q", c.metric, got, c.want, m.Series(c.metric))
			}
		}
	})

	t.Run("no addresses or credentials on /metrics", func(t *testing.T) {
		rec := httptest.NewRecorder()
		agg.tel.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		for _, s := range []string{"redis://", "nats://", e.redis.Addr(), "password"} {
			if strings.Contains(rec.Body.String(), s) {
				t.Fatalf("/metrics mentions %q", s)
			}
		}
	})
}
