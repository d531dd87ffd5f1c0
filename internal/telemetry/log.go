// Package telemetry sets up what every binary reports about itself: logs
// (log/slog, text or JSON, with trace ids), metrics (OpenTelemetry, served
// in the Prometheus format on /metrics from a private registry) and traces
// (OpenTelemetry, exported over OTLP/HTTP only when an endpoint is set), and
// carries the W3C trace context through NATS message headers.
package telemetry

import (
	"context"
	"io"
	"log/slog"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/alauda/costmeter/internal/config"
)

// Log keys the trace handler adds.
const (
	KeyTraceID = "trace_id"
	KeySpanID  = "span_id"
)

// NewLogger returns a text or JSON logger at level (debug, info, warn,
// error) writing to w. Records logged with a *Context method carry the
// trace_id and span_id of the context's span, and values that look like
// secrets are redacted (see redact).
func NewLogger(w io.Writer, format, level string) *slog.Logger {
	var lv slog.Level
	switch level {
	case "debug":
		lv = slog.LevelDebug
	case "warn":
		lv = slog.LevelWarn
	case "error":
		lv = slog.LevelError
	default:
		lv = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lv, ReplaceAttr: redact}
	if format == "json" {
		return slog.New(TraceHandler(slog.NewJSONHandler(w, opts)))
	}
	return slog.New(TraceHandler(slog.NewTextHandler(w, opts)))
}

// TraceHandler wraps h so that every record whose context holds a valid
// span gets its trace_id and span_id: a log line can be found from a trace
// and the other way round.
func TraceHandler(h slog.Handler) slog.Handler { return traceHandler{h} }

type traceHandler struct{ slog.Handler }

func (t traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r = r.Clone()
		r.AddAttrs(slog.String(KeyTraceID, sc.TraceID().String()), slog.String(KeySpanID, sc.SpanID().String()))
	}
	return t.Handler.Handle(ctx, r)
}

func (t traceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return traceHandler{t.Handler.WithAttrs(as)}
}

func (t traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{t.Handler.WithGroup(name)}
}

// secretKeys are attribute keys whose values are never written.
var secretKeys = map[string]bool{"password": true, "passwd": true, "secret": true, "token": true, "authorization": true, "cookie": true, "credentials": true}

// redact is a last line of defence, not the policy (the policy is not to
// log secrets): values under secret-sounding keys are replaced, and URLs
// with user information inside strings and errors lose it.
func redact(_ []string, a slog.Attr) slog.Attr {
	if secretKeys[strings.ToLower(a.Key)] {
		return slog.String(a.Key, "***")
	}
	switch a.Value.Kind() {
	case slog.KindString:
		if s := a.Value.String(); hasUserinfo(s) {
			return slog.String(a.Key, scrubURLs(s))
		}
	case slog.KindAny:
		if err, ok := a.Value.Any().(error); ok && err != nil {
			if s := err.Error(); hasUserinfo(s) {
				return slog.String(a.Key, scrubURLs(s))
			}
		}
	}
	return a
}

func hasUserinfo(s string) bool {
	i := strings.Index(s, "://")
	return i >= 0 && strings.Contains(s[i:], "@")
}

// scrubURLs redacts the user information of every URL-looking word of s.
func scrubURLs(s string) string {
	words := strings.Fields(s)
	changed := false
	for i, w := range words {
		if hasUserinfo(w) {
			trimmed := strings.Trim(w, `"'(),;`)
			words[i] = strings.Replace(w, trimmed, config.RedactURL(trimmed), 1)
			changed = true
		}
	}
	if !changed {
		return s
	}
	return strings.Join(words, " ")
}

// ErrorHandler returns an OTel error handler logging to log: failed
// exports and dropped spans become ordinary warnings instead of the SDK's
// own stderr lines. Only main installs it (otel.SetErrorHandler is global).
func ErrorHandler(log *slog.Logger) otel.ErrorHandler {
	return otel.ErrorHandlerFunc(func(err error) { log.Warn("opentelemetry", "err", err) })
}
