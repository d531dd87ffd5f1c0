package aggregator

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/telemetry"
)

// Span attributes of a batch.
const (
	attrMessages    = attribute.Key("messaging.batch.message_count")
	attrSamples     = attribute.Key("cost.samples")
	attrApplied     = attribute.Key("cost.samples.applied")
	attrDuplicates  = attribute.Key("cost.samples.duplicates")
	attrDeadLetters = attribute.Key("cost.samples.deadlettered")
	attrReplay      = attribute.Key("cost.replay")
)

// Histogram buckets. The SDK's default boundaries (0 to 10000) suit
// milliseconds; apply latency is in seconds, from a millisecond to the
// 30-second batch deadline, and a batch holds up to BatchSize messages of
// up to 500 samples each.
var (
	applySecondsBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
	batchSizeBuckets    = []float64{1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000}
)

// maxLinks is the SDK's default limit of links per span: reading more
// traceparents than it keeps would be wasted.
const maxLinks = 128

// startApply starts the span of one batch. Its parent is the trace context
// the collector put in the first message's headers (the publish span), so
// that one trace runs from the collector's publish through this apply (and
// its Redis calls) to the dead letters and rollup events it publishes; the
// other messages' publish spans, usually of other traces, are links. A
// batch without trace context (older collectors, nats pub) starts a trace.
func (a *Aggregator) startApply(ctx context.Context, msgs []jetstream.Msg, ack bool) (context.Context, trace.Span) {
	if _, off := a.tracer.(tracenoop.Tracer); off {
		// Tracing is off: reading 256 traceparents would cost more than
		// everything else here (BenchmarkStartApply).
		return ctx, tracenoop.Span{}
	}
	var (
		parent = ctx
		found  bool
		links  []trace.Link
		seen   = map[trace.SpanID]bool{}
	)
	for _, m := range msgs {
		if len(links) == maxLinks {
			break
		}
		h := m.Headers()
		if len(h) == 0 {
			continue
		}
		sc := trace.SpanContextFromContext(telemetry.Extract(context.Background(), h))
		if !sc.IsValid() || seen[sc.SpanID()] {
			continue
		}
		seen[sc.SpanID()] = true
		if !found {
			parent, found = trace.ContextWithRemoteSpanContext(ctx, sc), true
			continue
		}
		links = append(links, trace.Link{SpanContext: sc})
	}
	return a.tracer.Start(parent, "apply samples",
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithLinks(links...),
		trace.WithAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.destination.name", stream.Samples),
			attrMessages.Int(len(msgs)),
			attrReplay.Bool(!ack),
		))
}

// lag caches the consumer's pending messages between two measurements:
// reading them is a JetStream request, which a scrape should not wait on.
type lag struct {
	mu      sync.Mutex
	pending int64
	known   bool
}

func (l *lag) set(n int64) {
	l.mu.Lock()
	l.pending, l.known = n, true
	l.mu.Unlock()
}

func (l *lag) get() (int64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pending, l.known
}

// lagGauge registers cost.aggregator.consumer.pending: messages the
// durable consumer has not yet delivered plus those delivered and not yet
// acknowledged. Every replica shares the consumer and reports the same
// number (aggregate with max, not sum).
func (a *Aggregator) lagGauge() error {
	g, err := a.meter.Int64ObservableGauge("cost.aggregator.consumer.pending", metric.WithUnit("{message}"),
		metric.WithDescription("sample messages not yet applied: pending delivery plus delivered and unacknowledged (consumer lag)"))
	if err != nil {
		return fmt.Errorf("create consumer lag gauge: %w", err)
	}
	attrs := metric.WithAttributes(attribute.String("stream", stream.Samples), attribute.String("consumer", stream.Consumer))
	_, err = a.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		if n, ok := a.lag.get(); ok {
			o.ObserveInt64(g, n, attrs)
		}
		return nil
	}, g)
	if err != nil {
		return fmt.Errorf("register consumer lag gauge: %w", err)
	}
	return nil
}

// lagLoop measures the consumer lag every LagInterval until ctx ends.
func (a *Aggregator) lagLoop(ctx context.Context, cons jetstream.Consumer) {
	t := time.NewTicker(a.cfg.LagInterval)
	defer t.Stop()
	for {
		ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
		info, err := cons.Info(ictx)
		cancel()
		switch {
		case err == nil:
			a.lag.set(int64(info.NumPending) + int64(info.NumAckPending))
		case ctx.Err() == nil:
			a.log.DebugContext(ctx, "read consumer lag", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
