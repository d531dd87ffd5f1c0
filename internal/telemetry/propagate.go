package telemetry

import (
	"context"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
)

// Propagator returns the W3C trace-context propagator (traceparent,
// tracestate) every binary uses, in HTTP and NATS headers alike. It is a
// value, not a global: the propagator is fixed by the wire format.
func Propagator() propagation.TextMapPropagator { return propagation.TraceContext{} }

// HeaderCarrier adapts NATS message headers to the propagator. Keys are
// written lower-case, as the W3C specification spells them, and read in any
// case: nats.Header does not canonicalise keys the way net/http does, and
// other clients (the nats CLI, other languages) write them as they please.
type HeaderCarrier nats.Header

var _ propagation.TextMapCarrier = HeaderCarrier(nil)

// Get returns the first value of key, matched case-insensitively.
func (h HeaderCarrier) Get(key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	for k, v := range h {
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v[0]
		}
	}
	return ""
}

// Set replaces key's values with value.
func (h HeaderCarrier) Set(key, value string) { h[strings.ToLower(key)] = []string{value} }

// Keys lists the keys present.
func (h HeaderCarrier) Keys() []string {
	out := make([]string, 0, len(h))
	for k := range h {
		out = append(out, k)
	}
	return out
}

// Inject writes the span context of ctx into msg's headers (creating them
// if needed). Without a valid span in ctx it writes nothing.
func Inject(ctx context.Context, msg *nats.Msg) {
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	Propagator().Inject(ctx, HeaderCarrier(msg.Header))
}

// Extract returns ctx with the remote span context found in h, if any.
func Extract(ctx context.Context, h nats.Header) context.Context {
	if len(h) == 0 {
		return ctx
	}
	return Propagator().Extract(ctx, HeaderCarrier(h))
}
