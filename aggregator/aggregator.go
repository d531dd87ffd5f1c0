// Package aggregator consumes usage samples from JetStream and applies them
// to the Redis day rollups exactly once.
//
// The rules, in the order they matter:
//   - a message is acknowledged only after its effects (rollups, indexes,
//     dead letters, applied-sequence mark) are committed;
//   - applying is idempotent: the rollup store keeps, per namespace and day,
//     which seconds were already counted, so redelivery, retries and
//     replicas never count a window twice;
//   - a message that is not a valid sample goes to the dead-letter stream
//     with its reason and is acknowledged, so it never blocks the stream;
//   - if Redis loses acknowledged writes (a crash with appendfsync
//     everysec), the applied-sequence watermark falls behind the consumer's
//     ack floor and the lost range is replayed from the stream.
package aggregator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/alauda/costmeter/internal/config"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/telemetry"
)

// Dead-letter reasons: the last token of the dead-letter subject and the
// value of the reason attribute of the dead-letter counter.
const (
	ReasonDecode  = "decode"  // not JSON, or not a sample or array of samples
	ReasonInvalid = "invalid" // a field breaks a rule of the wire format
	ReasonSubject = "subject" // the sample's cluster is not the subject's
	ReasonExpired = "expired" // the window ended before the retention period
	ReasonFuture  = "future"  // the window ends too far in the future
	ReasonOverlap = "overlap" // partly overlaps an already counted window
)

// Config tunes the aggregator.
type Config struct {
	// BatchSize is how many messages one fetch asks for. A collector's
	// message holds up to 500 samples (~165 KB), so 128 messages are ~21 MB
	// per worker: large enough to merge a backlog's consecutive windows of
	// a namespace into one Redis write (the store cuts the writes into
	// short scripts), under the client's 64 MB pending limit for two
	// workers.
	BatchSize int
	// MaxWait is how long a fetch waits to fill its batch.
	MaxWait time.Duration
	// Workers is how many batches are in flight at once in this process.
	Workers int
	// HealInterval is how often the watermark is compared with the
	// consumer's ack floor (lost Redis writes are replayed).
	HealInterval time.Duration
	// MaxFuture is how far past now a window may end (clock skew).
	MaxFuture time.Duration
	// Stream sizes the JetStream streams when this process creates them.
	Stream stream.Config
	// Events turns on rollup events (internal/event) after each commit.
	Events bool
	// LagInterval is how often the consumer's pending messages are read
	// for the consumer-lag gauge (a JetStream request, so not per scrape).
	LagInterval time.Duration
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{BatchSize: 128, MaxWait: 100 * time.Millisecond, Workers: 2, HealInterval: 15 * time.Second, MaxFuture: 10 * time.Minute, Stream: stream.DefaultConfig(), Events: true, LagInterval: 5 * time.Second}
}

// RegisterFlags registers the aggregator's flags.
func (c *Config) RegisterFlags(f *config.Flags) {
	d := DefaultConfig()
	f.Int(&c.BatchSize, "batch-size", "AGGREGATOR_BATCH_SIZE", d.BatchSize, "messages fetched per batch")
	f.Duration(&c.MaxWait, "batch-wait", "AGGREGATOR_BATCH_WAIT", d.MaxWait, "how long a fetch waits to fill a batch")
	f.Int(&c.Workers, "workers", "AGGREGATOR_WORKERS", d.Workers, "batches in flight at once")
	f.Duration(&c.HealInterval, "heal-interval", "AGGREGATOR_HEAL_INTERVAL", d.HealInterval, "how often lost Redis writes are looked for and replayed")
	f.Duration(&c.MaxFuture, "max-future", "AGGREGATOR_MAX_FUTURE", d.MaxFuture, "how far in the future a sample window may end")
	f.Duration(&c.Stream.SamplesMaxAge, "stream-max-age", "COST_STREAM_MAX_AGE", d.Stream.SamplesMaxAge, "how long samples stay in the stream (the replay window)")
	f.Bool(&c.Events, "events", "AGGREGATOR_EVENTS", d.Events, "publish rollup events to the COST_ROLLUPS stream after each commit")
	f.Duration(&c.LagInterval, "lag-interval", "AGGREGATOR_LAG_INTERVAL", d.LagInterval, "how often the consumer lag (pending messages) is measured for /metrics")
	f.Duration(&c.Stream.RollupsMaxAge, "events-max-age", "COST_EVENTS_MAX_AGE", d.Stream.RollupsMaxAge, "how long rollup events stay in their stream")
	c.Stream.RegisterReplicas(f)
	c.Stream.DuplicateWindow, c.Stream.AckWait = d.Stream.DuplicateWindow, d.Stream.AckWait
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.BatchSize < 1 || c.BatchSize > 10_000 {
		errs = append(errs, fmt.Errorf("--batch-size: %d is not within 1..10000", c.BatchSize))
	}
	if c.MaxWait <= 0 {
		errs = append(errs, fmt.Errorf("--batch-wait: must be positive, got %s", c.MaxWait))
	}
	if c.Workers < 1 || c.Workers > 64 {
		errs = append(errs, fmt.Errorf("--workers: %d is not within 1..64", c.Workers))
	}
	if c.HealInterval <= 0 {
		errs = append(errs, fmt.Errorf("--heal-interval: must be positive, got %s", c.HealInterval))
	}
	if c.LagInterval <= 0 {
		errs = append(errs, fmt.Errorf("--lag-interval: must be positive, got %s", c.LagInterval))
	}
	if c.MaxFuture < 0 {
		errs = append(errs, fmt.Errorf("--max-future: must not be negative, got %s", c.MaxFuture))
	}
	if c.Stream.SamplesMaxAge < time.Hour {
		errs = append(errs, fmt.Errorf("--stream-max-age: %s is shorter than an hour", c.Stream.SamplesMaxAge))
	}
	errs = append(errs, c.Stream.Validate())
	return errors.Join(errs...)
}

// Rollups is what the aggregator needs of the rollup store.
type Rollups interface {
	Apply(ctx context.Context, cs []rollup.Contribution, stream string, seqs []rollup.SeqRange, changes bool) (rollup.Result, error)
	Applied(ctx context.Context, stream string, first uint64) (uint64, error)
	Expired(d rollup.Day, now time.Time) bool
	Location() *time.Location
}

// Option sets an optional dependency.
type Option func(*Aggregator)

// WithLogger sets the logger (default: slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(a *Aggregator) { a.log = l } }

// WithMeter sets the OTel meter (default: no-op).
func WithMeter(m metric.Meter) Option { return func(a *Aggregator) { a.meter = m } }

// WithTracer sets the OTel tracer (default: no-op). Each batch is one
// span, a child of its first message's publish span.
func WithTracer(t trace.Tracer) Option { return func(a *Aggregator) { a.tracer = t } }

// WithClock sets the clock (default: time.Now).
func WithClock(now func() time.Time) Option { return func(a *Aggregator) { a.now = now } }

// Stage is a point in the life of a batch, for fault injection.
type Stage int

// The stages a hook sees.
const (
	// StageDecoded: the batch is decoded, nothing is written yet.
	StageDecoded Stage = iota
	// StageCommitted: the rollups are committed; dead letters and events
	// are not published, nothing is acknowledged.
	StageCommitted
)

// WithStageHook calls hook at each stage of every batch. Fault tests and
// soak runs use it to kill the process at the worst moments.
func WithStageHook(hook func(Stage)) Option { return func(a *Aggregator) { a.hook = hook } }

// Aggregator applies samples from the stream to the rollups.
type Aggregator struct {
	hook   func(Stage)
	cfg    Config
	js     jetstream.JetStream
	store  Rollups
	log    *slog.Logger
	meter  metric.Meter
	tracer trace.Tracer
	now    func() time.Time

	received, applied, duplicates, deadLettered, events metric.Int64Counter
	batchSize                                           metric.Int64Histogram
	applyLatency                                        metric.Float64Histogram

	mu      sync.Mutex
	running bool
	lag     lag
}

// New returns an Aggregator reading from js and writing to store.
func New(cfg Config, js jetstream.JetStream, store Rollups, opts ...Option) (*Aggregator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if js == nil || store == nil {
		return nil, errors.New("aggregator: jetstream and store are required")
	}
	a := &Aggregator{cfg: cfg, js: js, store: store, log: slog.Default(), meter: noop.NewMeterProvider().Meter(""), tracer: tracenoop.NewTracerProvider().Tracer(""), now: time.Now}
	for _, o := range opts {
		o(a)
	}
	a.log = a.log.With("component", "aggregator")
	var errs [7]error
	a.events, errs[6] = a.meter.Int64Counter("cost.aggregator.events.published", metric.WithDescription("rollup events published"))
	a.received, errs[0] = a.meter.Int64Counter("cost.aggregator.samples.received", metric.WithDescription("samples decoded from the stream"))
	a.applied, errs[1] = a.meter.Int64Counter("cost.aggregator.samples.applied", metric.WithDescription("sample day-pieces added to the rollups"))
	a.duplicates, errs[2] = a.meter.Int64Counter("cost.aggregator.samples.duplicates", metric.WithDescription("sample day-pieces already counted"))
	a.deadLettered, errs[3] = a.meter.Int64Counter("cost.aggregator.samples.deadlettered", metric.WithDescription("samples sent to the dead-letter stream, by reason"))
	a.batchSize, errs[4] = a.meter.Int64Histogram("cost.aggregator.batch.size", metric.WithDescription("samples per applied batch"),
		metric.WithExplicitBucketBoundaries(batchSizeBuckets...))
	a.applyLatency, errs[5] = a.meter.Float64Histogram("cost.aggregator.apply.duration", metric.WithUnit("s"), metric.WithDescription("time to commit one batch to redis"),
		metric.WithExplicitBucketBoundaries(applySecondsBuckets...))
	if err := errors.Join(errs[:]...); err != nil {
		return nil, fmt.Errorf("create aggregator instruments: %w", err)
	}
	if err := a.lagGauge(); err != nil {
		return nil, err
	}
	return a, nil
}

// Running reports whether the consumer loop runs (readiness).
func (a *Aggregator) Running() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.running
}

func (a *Aggregator) setRunning(v bool) {
	a.mu.Lock()
	a.running = v
	a.mu.Unlock()
}

// Run consumes until ctx ends, then finishes the batches in hand and
// returns nil. It returns an error only when it cannot start.
func (a *Aggregator) Run(ctx context.Context) error {
	var cons jetstream.Consumer
	err := natsconn.Retry(ctx, a.log, "create streams", func(ctx context.Context) error {
		if err := stream.Ensure(ctx, a.js, a.cfg.Stream, stream.WithLogger(a.log)); err != nil {
			return err
		}
		if a.cfg.Events {
			if err := stream.EnsureRollups(ctx, a.js, a.cfg.Stream, stream.WithLogger(a.log)); err != nil {
				return err
			}
		}
		c, err := stream.EnsureConsumer(ctx, a.js, a.cfg.Stream)
		cons = c
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	a.setRunning(true)
	defer a.setRunning(false)
	var wg sync.WaitGroup
	for w := 0; w < a.cfg.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.consume(ctx, cons)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.healLoop(ctx, cons)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.lagLoop(ctx, cons)
	}()
	wg.Wait()
	return nil
}

func (a *Aggregator) consume(ctx context.Context, cons jetstream.Consumer) {
	for ctx.Err() == nil {
		batch, err := cons.Fetch(a.cfg.BatchSize, jetstream.FetchMaxWait(a.cfg.MaxWait))
		if err != nil {
			a.log.WarnContext(ctx, "fetch samples", "err", err)
			a.pause(ctx, time.Second)
			continue
		}
		msgs := make([]jetstream.Msg, 0, a.cfg.BatchSize)
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && ctx.Err() == nil {
			a.log.DebugContext(ctx, "fetch ended", "err", err)
		}
		if len(msgs) == 0 {
			continue
		}
		// The batch in hand is finished even when shutdown began: it was
		// delivered to us and acknowledging it now saves a redelivery.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		err = a.process(fctx, msgs, true)
		cancel()
		if err != nil {
			// Not acknowledged: JetStream redelivers after AckWait; applying
			// again is idempotent.
			a.log.ErrorContext(ctx, "apply batch", "messages", len(msgs), "err", err)
			for _, m := range msgs {
				_ = m.Nak()
			}
			a.pause(ctx, time.Second)
		}
	}
}

func (a *Aggregator) pause(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// origin ties a contribution back to its message and sample for dead
// letters.
type origin struct {
	msg    int
	sample *sample.Result
	index  int
}

// process applies one batch of messages under one span (see startApply).
func (a *Aggregator) process(ctx context.Context, msgs []jetstream.Msg, ack bool) error {
	ctx, span := a.startApply(ctx, msgs, ack)
	defer span.End()
	if err := a.apply(ctx, msgs, ack); err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "apply batch")
		return err
	}
	return nil
}

// apply applies one batch of messages: decode, validate, apply, dead-
// letter what cannot be counted, and (when ack) acknowledge. Messages
// from a replay are not acknowledged.
func (a *Aggregator) apply(ctx context.Context, msgs []jetstream.Msg, ack bool) error {
	var (
		cs      []rollup.Contribution
		origins []origin
		seqs    = make([]uint64, 0, len(msgs))
		letters []deadLetter
		samples int
		now     = a.now()
		loc     = a.store.Location()
	)
	for mi, m := range msgs {
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("read message metadata: %w", err)
		}
		seqs = append(seqs, meta.Sequence.Stream)
		results, err := sample.Decode(m.Data())
		if err != nil {
			letters = append(letters, deadLetter{msg: m, seq: meta.Sequence.Stream, index: -1, reason: ReasonDecode, detail: err.Error(), data: m.Data()})
			continue
		}
		cluster := strings.TrimPrefix(m.Subject(), stream.SamplesPrefix)
		for i := range results {
			r := &results[i]
			samples++
			reason, detail := a.check(r, cluster, now, loc)
			if reason != "" {
				letters = append(letters, deadLetter{msg: m, seq: meta.Sequence.Stream, index: i, reason: reason, detail: detail, data: r.Raw})
				continue
			}
			for _, p := range rollup.Split(&r.Sample, loc) {
				cs = append(cs, rollup.Contribution{Entity: rollup.Entity{Project: r.Sample.Project, Cluster: r.Sample.Cluster, Namespace: r.Sample.Namespace}, Piece: p})
				origins = append(origins, origin{msg: mi, sample: r, index: i})
			}
		}
	}
	a.received.Add(ctx, int64(samples))

	a.stage(StageDecoded)
	start := time.Now()
	res, err := a.store.Apply(ctx, cs, stream.Samples, compress(seqs), a.cfg.Events)
	if err != nil {
		return err
	}
	verdicts := res.Verdicts
	a.stage(StageCommitted)
	a.applyLatency.Record(ctx, time.Since(start).Seconds())
	a.batchSize.Record(ctx, int64(samples))
	var nApplied, nDup int64
	overlapped := map[[2]int]bool{}
	for i, v := range verdicts {
		switch v {
		case rollup.Applied:
			nApplied++
		case rollup.Duplicate:
			nDup++
		case rollup.Overlap:
			o := origins[i]
			key := [2]int{o.msg, o.index}
			if overlapped[key] {
				continue
			}
			overlapped[key] = true
			s := &o.sample.Sample
			letters = append(letters, deadLetter{msg: msgs[o.msg], seq: seqOf(msgs[o.msg]), index: o.index, reason: ReasonOverlap, data: o.sample.Raw,
				detail: fmt.Sprintf("window %s..%s of %s partly overlaps a window already counted", s.Start.Format(time.RFC3339), s.End.Format(time.RFC3339), s.Key())})
		}
	}
	a.applied.Add(ctx, nApplied)
	a.duplicates.Add(ctx, nDup)
	trace.SpanFromContext(ctx).SetAttributes(attrSamples.Int(samples), attrApplied.Int64(nApplied), attrDuplicates.Int64(nDup), attrDeadLetters.Int(len(letters)))
	if err := a.deadLetter(ctx, letters); err != nil {
		return err
	}
	if err := a.publishEvents(ctx, res.Changes); err != nil {
		return err
	}
	if ack {
		for _, m := range msgs {
			if err := m.Ack(); err != nil {
				a.log.WarnContext(ctx, "ack sample message", "err", err)
			}
		}
	}
	return nil
}

func (a *Aggregator) stage(s Stage) {
	if a.hook != nil {
		a.hook(s)
	}
}

func seqOf(m jetstream.Msg) uint64 {
	meta, err := m.Metadata()
	if err != nil {
		return 0
	}
	return meta.Sequence.Stream
}

// check applies the rules that need more than the sample itself.
func (a *Aggregator) check(r *sample.Result, cluster string, now time.Time, loc *time.Location) (string, string) {
	switch {
	case errors.Is(r.Err, sample.ErrMalformed):
		return ReasonDecode, r.Err.Error()
	case r.Err != nil:
		return ReasonInvalid, r.Err.Error()
	case r.Sample.Cluster != cluster:
		return ReasonSubject, fmt.Sprintf("cluster %q was published on the subject of cluster %q", r.Sample.Cluster, cluster)
	case a.store.Expired(rollup.DayOf(r.Sample.End.Add(-time.Second), loc), now):
		return ReasonExpired, fmt.Sprintf("window ending %s is older than the retention period", r.Sample.End.Format(time.RFC3339))
	case r.Sample.End.After(now.Add(a.cfg.MaxFuture)):
		return ReasonFuture, fmt.Sprintf("window ends %s, more than %s after now", r.Sample.End.Format(time.RFC3339), a.cfg.MaxFuture)
	}
	return "", ""
}

// compress turns sequences into sorted inclusive ranges.
func compress(seqs []uint64) []rollup.SeqRange {
	if len(seqs) == 0 {
		return nil
	}
	s := append([]uint64(nil), seqs...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	out := []rollup.SeqRange{{First: s[0], Last: s[0]}}
	for _, q := range s[1:] {
		last := &out[len(out)-1]
		switch {
		case q == last.Last || q == last.Last+1:
			last.Last = q
		default:
			out = append(out, rollup.SeqRange{First: q, Last: q})
		}
	}
	return out
}

type deadLetter struct {
	msg    jetstream.Msg
	seq    uint64
	index  int // element of an array message, -1 for the whole message
	reason string
	detail string
	data   []byte // the offending message, or array element
}

// HeaderTruncated is set on a dead letter whose data was cut to fit the
// NATS payload limit; its value is the original length.
const HeaderTruncated = "Cost-Truncated"

// deadLetterHeadroom is what a dead letter's headers may take of the payload
// limit (the reason is cut to 1 KiB).
const deadLetterHeadroom = 8 << 10

// HeaderElement names the element of an array message a dead letter is
// about (-1: the whole message).
const HeaderElement = "Cost-Element"

// deadLetter publishes every letter and waits for JetStream to store them,
// before the originals are acknowledged. Message ids make a retry of the
// same batch publish nothing twice.
func (a *Aggregator) deadLetter(ctx context.Context, letters []deadLetter) error {
	if len(letters) == 0 {
		return nil
	}
	ctx, span := a.tracer.Start(ctx, "dead-letter samples", trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrMessages.Int(len(letters))))
	defer span.End()
	// A letter carries its offending bytes, which may be as large as the
	// largest message NATS accepts; with headers it would not fit, its
	// publish would fail for ever and block the batch. So the data is cut to
	// fit (the whole original stays in the samples stream at Cost-Stream-Seq).
	maxData := int64(1 << 20)
	if nc := a.js.Conn(); nc != nil && nc.MaxPayload() > 0 {
		maxData = nc.MaxPayload()
	}
	maxData -= deadLetterHeadroom
	futures := make([]jetstream.PubAckFuture, 0, len(letters))
	for _, l := range letters {
		msg := nats.NewMsg(stream.DeadLetterPrefix + l.reason)
		msg.Header.Set(stream.HeaderReason, truncate(l.detail, 1024))
		msg.Header.Set(stream.HeaderSubject, l.msg.Subject())
		msg.Header.Set(stream.HeaderSeq, strconv.FormatUint(l.seq, 10))
		msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("dl-%d-%d", l.seq, l.index))
		msg.Header.Set(HeaderElement, strconv.Itoa(l.index))
		msg.Data = l.data
		if int64(len(msg.Data)) > maxData {
			msg.Header.Set(HeaderTruncated, strconv.Itoa(len(msg.Data)))
			msg.Data = msg.Data[:max(maxData, 0)]
		}
		telemetry.Inject(ctx, msg)
		f, err := a.js.PublishMsgAsync(msg)
		if err != nil {
			return fmt.Errorf("dead-letter message %d: %w", l.seq, err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("dead-letter message: %w", err)
		case <-ctx.Done():
			return fmt.Errorf("dead-letter message: %w", ctx.Err())
		}
	}
	// Counted once stored, so a failed attempt that is retried does not
	// count twice.
	for _, l := range letters {
		a.deadLettered.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", l.reason)))
		a.log.WarnContext(ctx, "dead-lettered sample", "seq", l.seq, "element", l.index, "reason", l.reason, "detail", truncate(l.detail, 300))
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
