// Package collector measures namespaces and publishes their usage samples
// (with their allocation labels, see Labeler) and each cluster's capacity
// samples to JetStream. Both kinds take the same path: one subject per
// cluster (stream.SamplesPrefix), content-hash message ids, the spool and
// the relay. A source produces samples (an NDJSON file, a simulation,
// or, in collector/kube, a real cluster); the Publisher batches them per
// cluster into messages with content-hash Nats-Msg-Ids and publishes each
// until JetStream acknowledges it.
//
// The long-running sources (simulate, kubernetes) publish through a Relay:
// every batch goes to the on-disk spool (collector/spool) first and leaves
// it only once acknowledged, so an outage of NATS or a kill -9 loses
// nothing already measured; a batch JetStream refuses for good (see Relay)
// moves to the spool's rejected/ directory instead of blocking the rest. The file import publishes directly: it exits
// only after every line was acknowledged, so a failed import is simply run
// again, and message ids make that idempotent.
package collector

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/telemetry"
)

// DefaultMaxBatch is how many samples go into one message: per-message
// costs dominate on small machines, and 500 samples stay far below NATS's
// default 1 MiB payload limit (a sample encodes to ~330 bytes).
const DefaultMaxBatch = 500

// Publisher publishes sample batches to JetStream, retrying each message
// with jittered, capped exponential backoff until it is acknowledged.
// Message ids are derived from the content, so a retried or re-imported
// message is deduplicated by JetStream (and, beyond its window, by the
// aggregator's coverage).
type Publisher struct {
	js         jetstream.JetStream
	maxBatch   int
	maxElapsed time.Duration
	ackTimeout time.Duration
	log        *slog.Logger
	meter      metric.Meter
	tracer     trace.Tracer

	messages, samples, failures metric.Int64Counter
}

// PublisherOption sets an optional dependency of a Publisher.
type PublisherOption func(*Publisher)

// WithPublisherMeter sets the OTel meter (default: no-op).
func WithPublisherMeter(m metric.Meter) PublisherOption { return func(p *Publisher) { p.meter = m } }

// WithPublisherTracer sets the OTel tracer (default: no-op). Every message
// sent is a producer span whose W3C trace context travels in the message's
// headers: the aggregator's apply span is its child.
func WithPublisherTracer(t trace.Tracer) PublisherOption { return func(p *Publisher) { p.tracer = t } }

// PublisherConfig tunes a Publisher.
type PublisherConfig struct {
	// MaxBatch is the most samples per message.
	MaxBatch int
	// MaxElapsed bounds retries of one message; 0 retries until the
	// context ends.
	MaxElapsed time.Duration
	// AckTimeout is how long one round waits for acknowledgements before
	// the unacknowledged messages count as failed (default 30s).
	AckTimeout time.Duration
}

// DefaultAckTimeout is how long a published message waits for its
// acknowledgement before it is retried.
const DefaultAckTimeout = 30 * time.Second

// NewPublisher returns a Publisher.
func NewPublisher(js jetstream.JetStream, cfg PublisherConfig, log *slog.Logger, opts ...PublisherOption) (*Publisher, error) {
	if js == nil {
		return nil, errors.New("publisher: nil jetstream")
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = DefaultAckTimeout
	}
	if log == nil {
		log = slog.Default()
	}
	p := &Publisher{js: js, maxBatch: cfg.MaxBatch, maxElapsed: cfg.MaxElapsed, ackTimeout: cfg.AckTimeout, log: log.With("component", "publisher"),
		meter: metricnoop.NewMeterProvider().Meter(""), tracer: tracenoop.NewTracerProvider().Tracer("")}
	for _, o := range opts {
		o(p)
	}
	var err1, err2, err3 error
	p.messages, err1 = p.meter.Int64Counter("cost.collector.messages.published", metric.WithUnit("{message}"),
		metric.WithDescription("sample messages JetStream acknowledged (duplicates included)"))
	p.samples, err2 = p.meter.Int64Counter("cost.collector.samples.published", metric.WithUnit("{sample}"),
		metric.WithDescription("samples in the messages JetStream acknowledged"))
	p.failures, err3 = p.meter.Int64Counter("cost.collector.publish.failures", metric.WithUnit("{message}"),
		metric.WithDescription("attempts to publish a sample message that JetStream did not acknowledge (each is retried)"))
	if err := errors.Join(err1, err2, err3); err != nil {
		return nil, fmt.Errorf("create publisher instruments: %w", err)
	}
	return p, nil
}

// Message is one encoded batch, ready to publish.
type Message struct {
	Subject string
	ID      string
	Data    []byte
	Samples int
}

// Encode groups samples by cluster, in order, into messages of at most
// MaxBatch samples.
func (p *Publisher) Encode(samples []sample.Sample) []Message {
	byCluster := map[string][]sample.Sample{}
	var order []string
	for _, s := range samples {
		if _, ok := byCluster[s.Cluster]; !ok {
			order = append(order, s.Cluster)
		}
		byCluster[s.Cluster] = append(byCluster[s.Cluster], s)
	}
	var out []Message
	for _, c := range order {
		ss := byCluster[c]
		for len(ss) > 0 {
			n := min(len(ss), p.maxBatch)
			data := sample.EncodeBatch(make([]byte, 0, n*360), ss[:n])
			sum := sha256.Sum256(data)
			out = append(out, Message{Subject: stream.SamplesPrefix + c, ID: hex.EncodeToString(sum[:16]), Data: data, Samples: n})
			ss = ss[n:]
		}
	}
	return out
}

// Publish publishes samples and returns once JetStream acknowledged all.
func (p *Publisher) Publish(ctx context.Context, samples []sample.Sample) error {
	return p.PublishMessages(ctx, p.Encode(samples))
}

// ErrRefused is returned (wrapped, with the reasons) by PublishMessages
// when JetStream refused messages for good: retrying them as they are
// would never succeed (see Relay for which refusals are final).
var ErrRefused = errors.New("refused for good by JetStream")

// PublishMessages publishes encoded messages asynchronously and waits for
// every acknowledgement, retrying failures until acknowledged or ctx ends.
// A message refused for good is not retried: the others are published,
// then PublishMessages returns an error wrapping ErrRefused that names
// the refused messages.
func (p *Publisher) PublishMessages(ctx context.Context, msgs []Message) error {
	pending := msgs
	b := p.backoff(ctx)
	var refusedErr []error
	for len(pending) > 0 {
		failed, refused, lastErr := p.publishOnce(ctx, pending)
		refusedErr = append(refusedErr, refused...)
		if len(failed) == 0 {
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("publish %d messages: %w", len(failed), ctx.Err())
		}
		wait := b.NextBackOff()
		if wait == backoff.Stop {
			return fmt.Errorf("publish %d messages: giving up: %w", len(failed), lastErr)
		}
		p.log.WarnContext(ctx, "publish failed; retrying", "messages", len(failed), "retry_in", wait.Round(time.Millisecond), "err", lastErr)
		select {
		case <-ctx.Done():
			return fmt.Errorf("publish %d messages: %w", len(failed), ctx.Err())
		case <-time.After(wait):
		}
		pending = failed
	}
	if len(refusedErr) > 0 {
		return fmt.Errorf("publish %d messages: %d %w: %w", len(msgs), len(refusedErr), ErrRefused, errors.Join(refusedErr...))
	}
	return nil
}

func (p *Publisher) backoff(ctx context.Context) backoff.BackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 100 * time.Millisecond
	b.MaxInterval = 10 * time.Second
	b.RandomizationFactor = 0.5
	b.MaxElapsedTime = p.maxElapsed
	b.Reset()
	return backoff.WithContext(b, ctx)
}

// publishOnce sends every message without waiting in between, then waits
// for the acknowledgements; it returns the messages that were not
// acknowledged and may succeed later, and why each refused one never will.
func (p *Publisher) publishOnce(ctx context.Context, msgs []Message) (failed []Message, refused []error, lastErr error) {
	r := newRefusals(p.js)
	for i, err := range p.Send(ctx, msgs) {
		if err == nil {
			continue
		}
		if reason := r.reason(ctx, msgs[i].Subject, err); reason != "" {
			refused = append(refused, fmt.Errorf("message %s to %s (%d samples): %s: %w", msgs[i].ID, msgs[i].Subject, msgs[i].Samples, reason, err))
			continue
		}
		failed, lastErr = append(failed, msgs[i]), err
	}
	return failed, refused, lastErr
}

// Send publishes msgs once each, in order and without waiting in between,
// then waits (at most the ack timeout) for their acknowledgements. The
// result holds one entry per message: nil when JetStream acknowledged it
// (a duplicate Nats-Msg-Id is acknowledged too), else why not. Each
// message is one producer span, from publish to acknowledgement.
func (p *Publisher) Send(ctx context.Context, msgs []Message) []error {
	nms := make([]*nats.Msg, len(msgs))
	spans := make([]trace.Span, len(msgs))
	for i, m := range msgs {
		mctx, span := p.tracer.Start(ctx, "publish samples", trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.destination.name", m.Subject),
			attribute.String("messaging.message.id", m.ID),
			attribute.Int("cost.samples", m.Samples)))
		spans[i] = span
		nm := nats.NewMsg(m.Subject)
		nm.Data = m.Data
		nm.Header.Set(jetstream.MsgIDHeader, m.ID)
		telemetry.Inject(mctx, nm)
		nms[i] = nm
	}
	wctx, cancel := context.WithTimeout(ctx, p.ackTimeout)
	defer cancel()
	errs := make([]error, len(msgs))
	for i, r := range natsconn.PublishAll(wctx, p.js, nms, jetstream.WithExpectStream(stream.Samples)) {
		errs[i] = r.Err
		if r.Err != nil {
			spans[i].RecordError(r.Err)
			spans[i].SetStatus(codes.Error, "not acknowledged")
			p.failures.Add(ctx, 1)
		} else {
			spans[i].SetAttributes(attribute.Bool("cost.duplicate", r.Ack.Duplicate))
			p.messages.Add(ctx, 1)
			p.samples.Add(ctx, int64(msgs[i].Samples))
		}
		spans[i].End()
	}
	return errs
}
