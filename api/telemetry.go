package api

import (
	"net/http"

	"github.com/gin-gonic/gin"
	"go.opentelemetry.io/contrib/instrumentation/github.com/gin-gonic/gin/otelgin"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/alauda/costmeter/internal/telemetry"
)

// MetricsPath serves the process's metrics when WithTelemetry was given a
// handler; like the probes it needs no authentication.
const MetricsPath = "/metrics"

type telemetryDeps struct {
	meters  metric.MeterProvider
	tracers trace.TracerProvider
	metrics http.Handler
}

// WithTelemetry traces every request (a server span, a child of the
// caller's W3C traceparent) and records http.server.request.duration by
// route template (http_route, never the raw path) and status
// (http_response_status_code) with the given providers; metrics, when not
// nil, is served on /metrics. Probes, /metrics and watch streams are left
// out.
func WithTelemetry(mp metric.MeterProvider, tp trace.TracerProvider, metrics http.Handler) Option {
	return func(s *Server) { s.tel = telemetryDeps{meters: mp, tracers: tp, metrics: metrics} }
}

// instrument registers the telemetry middleware and /metrics on e; without
// WithTelemetry it does nothing.
func (s *Server) instrument(e *gin.Engine) {
	if s.tel.meters == nil && s.tel.tracers == nil {
		return
	}
	opts := []otelgin.Option{
		otelgin.WithPropagators(telemetry.Propagator()),
		otelgin.WithGinFilter(func(c *gin.Context) bool {
			switch c.FullPath() {
			case "/healthz", "/readyz", MetricsPath:
				return false
			}
			// A watch stream lasts as long as its client: as a request
			// duration it would swamp the latency histogram, and its span
			// would stay open for hours.
			return !IsWatch(c.Request)
		}),
	}
	// otelgin falls back to the OTel globals for a provider it is not
	// given: a no-op stands in for a nil one.
	mp, tp := s.tel.meters, s.tel.tracers
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	if tp == nil {
		tp = tracenoop.NewTracerProvider()
	}
	opts = append(opts, otelgin.WithMeterProvider(mp), otelgin.WithTracerProvider(tp))
	e.Use(otelgin.Middleware("cost-api", opts...))
	if s.tel.metrics != nil {
		e.GET(MetricsPath, gin.WrapH(s.tel.metrics))
	}
}
