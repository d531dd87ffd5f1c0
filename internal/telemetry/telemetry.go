package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/alauda/costmeter/internal/config"
)

// Environment variables main reads for Config: the standard OpenTelemetry
// exporter endpoints. Nothing else in the module reads them.
const (
	EnvOTLPEndpoint       = "OTEL_EXPORTER_OTLP_ENDPOINT"
	EnvOTLPTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
)

// tracesPath is what OTLP/HTTP appends to OTEL_EXPORTER_OTLP_ENDPOINT (the
// specification's per-signal path); ..._TRACES_ENDPOINT is used as given.
const tracesPath = "/v1/traces"

// Config chooses where traces go. With both endpoints empty no span is
// exported (and none is even recorded): metrics and logs still work.
type Config struct {
	// OTLPEndpoint is the base URL of an OTLP/HTTP receiver
	// (OTEL_EXPORTER_OTLP_ENDPOINT), e.g. http://otel-collector:4318.
	OTLPEndpoint string
	// OTLPTracesEndpoint is the full traces URL
	// (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); it wins over OTLPEndpoint.
	OTLPTracesEndpoint string
}

// RegisterFlags registers --otlp-endpoint and --otlp-traces-endpoint, which
// default to the standard environment variables.
func (c *Config) RegisterFlags(f *config.Flags) {
	f.String(&c.OTLPEndpoint, "otlp-endpoint", EnvOTLPEndpoint, "", "OTLP/HTTP receiver traces are exported to (base URL); empty exports none")
	f.String(&c.OTLPTracesEndpoint, "otlp-traces-endpoint", EnvOTLPTracesEndpoint, "", "OTLP/HTTP traces URL, used as given (wins over --otlp-endpoint)")
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	for _, e := range []struct{ flag, v string }{{"--otlp-endpoint", c.OTLPEndpoint}, {"--otlp-traces-endpoint", c.OTLPTracesEndpoint}} {
		if e.v == "" {
			continue
		}
		if u, err := url.Parse(e.v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("%s: %q is not an http:// or https:// URL", e.flag, config.RedactURL(e.v)))
		}
	}
	return errors.Join(errs...)
}

// tracesURL is the URL spans are sent to, or "" for none.
func (c Config) tracesURL() string {
	if c.OTLPTracesEndpoint != "" {
		return c.OTLPTracesEndpoint
	}
	if c.OTLPEndpoint != "" {
		return strings.TrimSuffix(c.OTLPEndpoint, "/") + tracesPath
	}
	return ""
}

// Option adjusts Setup.
type Option func(*options)

type options struct {
	exporter sdktrace.SpanExporter
}

// WithSpanExporter records every span with exp, synchronously, whatever the
// Config says. Tests pass an in-memory exporter (sdk/trace/tracetest).
func WithSpanExporter(exp sdktrace.SpanExporter) Option {
	return func(o *options) { o.exporter = exp }
}

// Telemetry is one process's metrics and traces: a MeterProvider read by a
// Prometheus exporter on a private registry, a TracerProvider, and the W3C
// trace-context propagator. Nothing here is global; main may install the
// providers as OTel globals for third-party code.
type Telemetry struct {
	meters     *sdkmetric.MeterProvider
	tracers    trace.TracerProvider
	tracing    bool
	shutdownTP func(context.Context) error
	handler    http.Handler
}

// Setup builds the providers of service (the service.name resource
// attribute). Call Shutdown when the process ends: it flushes spans.
func Setup(ctx context.Context, cfg Config, service string, opts ...Option) (*Telemetry, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	// The resource is built from what the caller says only: no detector
	// reads the environment or the host (and so nothing unexpected reaches
	// target_info on /metrics).
	res := resource.NewSchemaless(attribute.String("service.name", service))

	reg := prometheus.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return nil, fmt.Errorf("register go collector: %w", err)
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, fmt.Errorf("register process collector: %w", err)
	}
	exp, err := otelprom.New(
		otelprom.WithRegisterer(reg),
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes),
		otelprom.WithoutScopeInfo(),
	)
	if err != nil {
		return nil, fmt.Errorf("create prometheus exporter: %w", err)
	}
	t := &Telemetry{
		meters:  sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithResource(res)),
		handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}),
	}

	switch endpoint := cfg.tracesURL(); {
	case o.exporter != nil:
		tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(o.exporter), sdktrace.WithResource(res))
		t.tracers, t.shutdownTP, t.tracing = tp, tp.Shutdown, true
	case endpoint != "":
		sexp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(endpoint))
		if err != nil {
			return nil, errors.Join(fmt.Errorf("create otlp trace exporter for %s: %w", config.RedactURL(endpoint), err), t.meters.Shutdown(ctx))
		}
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(sexp), sdktrace.WithResource(res))
		t.tracers, t.shutdownTP, t.tracing = tp, tp.Shutdown, true
	default:
		t.tracers, t.shutdownTP = noop.NewTracerProvider(), func(context.Context) error { return nil }
	}
	return t, nil
}

// MeterProvider returns the provider behind /metrics.
func (t *Telemetry) MeterProvider() metric.MeterProvider { return t.meters }

// TracerProvider returns the provider of every span (a no-op one when no
// exporter is configured).
func (t *Telemetry) TracerProvider() trace.TracerProvider { return t.tracers }

// Tracing reports whether spans are recorded at all: instrumentation that
// costs even with a no-op provider (a hook on every Redis command) is added
// only then.
func (t *Telemetry) Tracing() bool { return t.tracing }

// RecordingTracerProvider is TracerProvider when spans are recorded, nil
// otherwise: for instrumentation that is worth adding only then.
func (t *Telemetry) RecordingTracerProvider() trace.TracerProvider {
	if !t.tracing {
		return nil
	}
	return t.tracers
}

// Meter returns the meter of the instrumentation scope name (a package path).
func (t *Telemetry) Meter(name string) metric.Meter { return t.meters.Meter(name) }

// Tracer returns the tracer of the instrumentation scope name.
func (t *Telemetry) Tracer(name string) trace.Tracer { return t.tracers.Tracer(name) }

// Propagator returns the propagator of the trace context: W3C traceparent
// and tracestate, in HTTP and NATS headers alike.
func (t *Telemetry) Propagator() propagation.TextMapPropagator { return Propagator() }

// Handler serves the metrics in the Prometheus text format (/metrics).
func (t *Telemetry) Handler() http.Handler { return t.handler }

// Shutdown flushes pending spans and stops both providers; it waits at most
// until ctx ends.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var errs []error
	if err := t.shutdownTP(ctx); err != nil {
		errs = append(errs, fmt.Errorf("shut tracer provider down: %w", err))
	}
	if err := t.meters.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("shut meter provider down: %w", err))
	}
	return errors.Join(errs...)
}
