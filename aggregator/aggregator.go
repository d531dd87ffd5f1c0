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
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	"github.com/alauda/costmeter/internal/jsworker"
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
	ReasonExpired = "expired" // the window's month ended more than the retention ago
	ReasonFuture  = "future"  // the window ends too far in the future
	ReasonOverlap = "overlap" // partly overlaps an already counted window
)

// Config tunes the aggregator.
type Config struct {
	// AllocationLabels are the label keys to keep group rollups of,
	// comma-separated (GroupKeys).
	AllocationLabels string
	// BatchSize is how many messages one fetch asks for. A collector's
	// message holds up to 500 samples (~165 KB), so 128 messages are ~21 MB
	// per worker: large enough to merge a backlog's consecutive windows of
	// a namespace into one Redis write (the store cuts the writes into
	// short scripts), under the client's 64 MB pending limit for two
	// workers.
	BatchSize int
	// MaxBatch is how many messages one batch may gather from consecutive
	// fetches while a backlog waits: a fetch that came back full is
	// followed by another until MaxBatch messages are in hand, so that a
	// backlog's consecutive windows of a namespace-day merge into one Redis
	// write (the Redis work of a namespace-day is about the same for 6
	// windows or 25). Fetches are not held in the client at once, so the
	// 64 MB pending limit still bounds only BatchSize. A worker gathers its
	// fetches while it holds the gathering turn, so that its batch is a run
	// of consecutive messages, not interleaved with another worker's.
	// A batch stops gathering, too, once it holds MaxBatchPieces distinct
	// namespace-days (its Redis work): a burst of distinct namespaces (the
	// first windows of a new day) merges nothing, and a larger batch would
	// only commit longer. BatchSize when 0.
	MaxBatch int
	// MaxBatchPieces is the namespace-days at which a batch stops
	// gathering more fetches (see MaxBatch).
	MaxBatchPieces int
	// Linger is how long a batch keeps gathering after its first messages
	// while fetches still bring some (a burst arriving over a fraction of
	// a second, such as a collector's window of many namespaces), so that
	// the burst is one batch rather than several that each write every
	// namespace-day. An empty fetch ends it at once: a quiet stream waits
	// for nothing. 0: only full fetches gather.
	Linger time.Duration
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
	return Config{BatchSize: 128, MaxBatch: 512, MaxBatchPieces: 16_384, Linger: 250 * time.Millisecond, MaxWait: 100 * time.Millisecond, Workers: 2, HealInterval: 15 * time.Second, MaxFuture: 10 * time.Minute, Stream: stream.DefaultConfig(), Events: true, LagInterval: 5 * time.Second}
}

// RegisterFlags registers the aggregator's flags.
func (c *Config) RegisterFlags(f *config.Flags) {
	d := DefaultConfig()
	f.Int(&c.BatchSize, "batch-size", "AGGREGATOR_BATCH_SIZE", d.BatchSize, "messages fetched per batch")
	f.Int(&c.MaxBatch, "batch-max", "AGGREGATOR_BATCH_MAX", d.MaxBatch, "messages one batch may gather from consecutive full fetches while a backlog waits")
	f.Int(&c.MaxBatchPieces, "batch-max-pieces", "AGGREGATOR_BATCH_MAX_PIECES", d.MaxBatchPieces, "namespace-days at which a batch stops gathering more fetches")
	f.Duration(&c.Linger, "batch-linger", "AGGREGATOR_BATCH_LINGER", d.Linger, "how long a batch keeps gathering while fetches still bring messages (0: only full fetches gather)")
	f.Duration(&c.MaxWait, "batch-wait", "AGGREGATOR_BATCH_WAIT", d.MaxWait, "how long a fetch waits to fill a batch")
	f.Int(&c.Workers, "workers", "AGGREGATOR_WORKERS", d.Workers, "batches in flight at once")
	f.Duration(&c.HealInterval, "heal-interval", "AGGREGATOR_HEAL_INTERVAL", d.HealInterval, "how often lost Redis writes are looked for and replayed")
	f.Duration(&c.MaxFuture, "max-future", "AGGREGATOR_MAX_FUTURE", d.MaxFuture, "how far in the future a sample window may end")
	f.Duration(&c.Stream.SamplesMaxAge, "stream-max-age", "COST_STREAM_MAX_AGE", d.Stream.SamplesMaxAge, "how long samples stay in the stream (the replay window)")
	f.Bool(&c.Events, "events", "AGGREGATOR_EVENTS", d.Events, "publish rollup events to the COST_ROLLUPS stream after each commit")
	f.Duration(&c.LagInterval, "lag-interval", "AGGREGATOR_LAG_INTERVAL", d.LagInterval, "how often the consumer lag (pending messages) is measured for /metrics")
	f.Duration(&c.Stream.RollupsMaxAge, "events-max-age", "COST_EVENTS_MAX_AGE", d.Stream.RollupsMaxAge, "how long rollup events stay in their stream")
	f.String(&c.AllocationLabels, AllocationLabelsFlag, "COST_ALLOCATION_LABELS", "", "namespace label keys to keep day rollups per value of, comma-separated (team,cost-center,example.com/env; at most 8): a namespace without one counts under __unallocated__; a key added later is counted from then on")
	c.Stream.RegisterReplicas(f)
	c.Stream.DuplicateWindow, c.Stream.AckWait = d.Stream.DuplicateWindow, d.Stream.AckWait
}

// AllocationLabelsFlag is the flag of Config.AllocationLabels (the API
// reads the same flag in a binary hosting both).
const AllocationLabelsFlag = "allocation-labels"

// GroupKeys parses AllocationLabels: each a Kubernetes label key, kept
// verbatim, at most sample.MaxLabels, none twice (the error names the
// flag). The store is built with rollup.WithGroupKeys of them.
func (c Config) GroupKeys() ([]string, error) {
	keys, err := sample.ParseLabelKeys(c.AllocationLabels)
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", AllocationLabelsFlag, err)
	}
	return keys, nil
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if _, err := c.GroupKeys(); err != nil {
		errs = append(errs, err)
	}
	if c.BatchSize < 1 || c.BatchSize > 10_000 {
		errs = append(errs, fmt.Errorf("--batch-size: %d is not within 1..10000", c.BatchSize))
	}
	if c.MaxBatch != 0 && (c.MaxBatch < c.BatchSize || c.MaxBatch > 10_000) {
		errs = append(errs, fmt.Errorf("--batch-max: %d is not within --batch-size (%d)..10000", c.MaxBatch, c.BatchSize))
	}
	if c.Linger < 0 || c.Linger > 10*time.Second {
		errs = append(errs, fmt.Errorf("--batch-linger: %s is not within 0..10s", c.Linger))
	}
	if c.MaxBatchPieces < 0 {
		errs = append(errs, fmt.Errorf("--batch-max-pieces: must not be negative, got %d", c.MaxBatchPieces))
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

	worker *jsworker.Worker[*batch]
	lag    lag

	// gathering is the gathering turn: held by the worker whose fetches
	// make up its next batch.
	gathering sync.Mutex
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
	w, err := a.newWorker()
	if err != nil {
		return nil, err
	}
	a.worker = w
	return a, nil
}

// Running reports whether the consumer loop runs (readiness).
func (a *Aggregator) Running() bool { return a.worker.Running() }

// Run consumes until ctx ends, then finishes the batches in hand and
// returns nil. It returns an error only when it cannot start.
func (a *Aggregator) Run(ctx context.Context) error { return a.worker.Run(ctx) }

// newWorker is the aggregator's JetStream worker: Workers fetch loops
// that gather, apply and acknowledge batches, with the heal and lag loops
// beside them.
func (a *Aggregator) newWorker() (*jsworker.Worker[*batch], error) {
	return jsworker.New(jsworker.Spec[*batch]{
		What: "samples",
		Ensure: func(ctx context.Context) (jetstream.Consumer, error) {
			if err := stream.Ensure(ctx, a.js, a.cfg.Stream, stream.WithLogger(a.log)); err != nil {
				return nil, err
			}
			if a.cfg.Events {
				if err := stream.EnsureRollups(ctx, a.js, a.cfg.Stream, stream.WithLogger(a.log)); err != nil {
					return nil, err
				}
			}
			return stream.EnsureConsumer(ctx, a.js, a.cfg.Stream)
		},
		Fetchers: a.cfg.Workers,
		Fetch: func(ctx context.Context, cons jetstream.Consumer) (*batch, bool, error) {
			b, err := a.gather(ctx, cons)
			return b, b != nil, err
		},
		Finish: func(ctx context.Context, b *batch) error { return a.apply(ctx, b, true) },
		Fail: func(ctx context.Context, b *batch, err error) {
			a.log.ErrorContext(ctx, "apply batch", "messages", len(b.msgs), "err", err)
			for _, m := range b.msgs {
				_ = m.Nak()
			}
		},
		Beside: []func(context.Context, jetstream.Consumer){a.healLoop, a.lagLoop},
	}, a.log)
}

// gather fetches and decodes the next batch (nil when no message came):
// one fetch, and more while Config.more says so, up to MaxBatch messages,
// under the gathering turn. It fails only when the first fetch does; a
// later failure ends the batch with what it has.
func (a *Aggregator) gather(ctx context.Context, cons jetstream.Consumer) (*batch, error) {
	a.gathering.Lock()
	defer a.gathering.Unlock()
	limit := max(a.cfg.MaxBatch, a.cfg.BatchSize)
	b := newBatch()
	var first time.Time // when the batch got its first messages
	for ctx.Err() == nil && len(b.msgs)+a.cfg.BatchSize <= limit {
		fetched, err := cons.Fetch(a.cfg.BatchSize, jetstream.FetchMaxWait(a.cfg.MaxWait))
		if err != nil {
			if len(b.msgs) > 0 {
				break
			}
			return nil, err
		}
		var msgs []jetstream.Msg
		for m := range fetched.Messages() {
			msgs = append(msgs, m)
		}
		if err := fetched.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && ctx.Err() == nil {
			a.log.DebugContext(ctx, "fetch ended", "err", err)
		}
		from := len(b.parts)
		if err := a.decodeInto(b, msgs); err != nil {
			return nil, err
		}
		if a.cfg.MaxBatchPieces > 0 {
			b.countDays(b.parts[from:])
		}
		if len(msgs) > 0 && first.IsZero() {
			first = time.Now()
		}
		if !a.cfg.more(len(msgs), len(b.days), time.Since(first)) {
			break
		}
	}
	if len(b.msgs) == 0 {
		return nil, nil
	}
	a.decoded(ctx, b)
	return b, nil
}

// more tells whether a batch gathers another fetch after one that brought
// n messages, holding days namespace-days, lingered after its first
// messages: not once it holds MaxBatchPieces namespace-days; yes after a
// full fetch (a backlog waits); after a partial one, while it lingers
// less than Linger; never after an empty one.
func (c Config) more(n, days int, lingered time.Duration) bool {
	switch {
	case c.MaxBatchPieces > 0 && days >= c.MaxBatchPieces:
		return false
	case n >= c.BatchSize:
		return true
	case n > 0:
		return lingered < c.Linger
	}
	return false
}

// origin is where a sample came from: its message, the message's stream
// sequence, and its element in an array message (-1: the whole message).
type origin struct {
	msg   jetstream.Msg
	seq   uint64
	index int
}

// accepted is a valid sample on its way to the store: where it came from,
// and how many day-pieces it was cut into. Its pieces are consecutive in the
// batch's contributions (and so in the store's verdicts), in the order of
// the accepted samples.
type accepted struct {
	from   origin
	raw    []byte // the sample's bytes, for a dead letter
	start  time.Time
	end    time.Time
	pieces int
}

// batch is a decoded batch: what to commit and what is already known to be
// dead letters.
type batch struct {
	msgs     []jetstream.Msg
	received int // samples decoded, valid or not
	seqList  []uint64
	seqs     []rollup.SeqRange
	cs       []rollup.Contribution
	accepted []accepted
	letters  []deadLetter
	days     map[nsDay]struct{} // while gathering: the distinct namespace-days so far
	parts    []*decodedMsg      // while gathering: the messages' cs and accepted
}

// countDays adds the namespace-days of parts to b.days.
func (b *batch) countDays(parts []*decodedMsg) {
	for _, p := range parts {
		for j := range p.cs {
			c := &p.cs[j]
			b.days[nsDay{c.Entity.Cluster, c.Entity.Namespace, c.Day}] = struct{}{}
		}
	}
}

// nsDay is a namespace-day, the unit of Redis work.
type nsDay struct {
	cluster, namespace string
	day                rollup.Day
}

func newBatch() *batch { return &batch{days: map[nsDay]struct{}{}} }

// process decodes and applies one batch of messages (a replay's; ack
// false: not acknowledged).
func (a *Aggregator) process(ctx context.Context, msgs []jetstream.Msg, ack bool) error {
	b := newBatch()
	if err := a.decodeInto(b, msgs); err != nil {
		return err
	}
	a.decoded(ctx, b)
	return a.apply(ctx, b, ack)
}

// apply commits and settles a decoded batch under one span (see
// startApply). Messages are acknowledged only when ack is set.
func (a *Aggregator) apply(ctx context.Context, b *batch, ack bool) error {
	ctx, span := a.startApply(ctx, b.msgs, ack)
	defer span.End()
	err := func() error {
		res, err := a.commit(ctx, b)
		if err != nil {
			return err
		}
		return a.settle(ctx, b, res, ack)
	}()
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "apply batch")
	}
	return err
}

// decodeInto decodes and validates msgs into b: it cuts the valid samples
// into day-pieces (rollup.Split) and collects the dead letters of what
// cannot be counted. Messages are decoded in parallel (decoding is most of
// a backlog's CPU), their results gathered in order.
func (a *Aggregator) decodeInto(b *batch, msgs []jetstream.Msg) error {
	now, loc := a.now(), a.store.Location()
	parts := make([]decodedMsg, len(msgs))
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for range min(runtime.GOMAXPROCS(0), len(msgs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < len(msgs); i = int(next.Add(1)) - 1 {
				parts[i] = a.decodeMsg(msgs[i], now, loc)
			}
		}()
	}
	wg.Wait()
	for i := range parts {
		p := &parts[i]
		if p.err != nil {
			return p.err
		}
		b.msgs = append(b.msgs, msgs[i])
		b.seqList = append(b.seqList, p.seq)
		b.received += p.received
		b.letters = append(b.letters, p.letters...)
		b.parts = append(b.parts, p)
	}
	return nil
}

// decodedMsg is one message of a batch, decoded.
type decodedMsg struct {
	err      error // its metadata could not be read
	seq      uint64
	received int
	cs       []rollup.Contribution
	accepted []accepted
	letters  []deadLetter
}

// decodeMsg decodes and checks one message.
func (a *Aggregator) decodeMsg(m jetstream.Msg, now time.Time, loc *time.Location) decodedMsg {
	meta, err := m.Metadata()
	if err != nil {
		return decodedMsg{err: fmt.Errorf("read message metadata: %w", err)}
	}
	d := decodedMsg{seq: meta.Sequence.Stream}
	results, err := sample.Decode(m.Data())
	if err != nil {
		d.letters = append(d.letters, deadLetter{from: origin{msg: m, seq: d.seq, index: -1}, reason: ReasonDecode, detail: err.Error(), data: m.Data()})
		return d
	}
	cluster := strings.TrimPrefix(m.Subject(), stream.SamplesPrefix)
	d.cs = make([]rollup.Contribution, 0, len(results))
	d.accepted = make([]accepted, 0, len(results))
	for i := range results {
		r := &results[i]
		from := origin{msg: m, seq: d.seq, index: i}
		d.received++
		if reason, detail := a.check(r, cluster, now, loc); reason != "" {
			d.letters = append(d.letters, deadLetter{from: from, reason: reason, detail: detail, data: r.Raw})
			continue
		}
		pieces := rollup.Split(&r.Sample, loc)
		c := rollup.Contribution{Entity: rollup.Entity{Project: r.Sample.Project, Cluster: r.Sample.Cluster, Namespace: r.Sample.Namespace}, Labels: r.Sample.Labels}
		if r.Sample.IsCapacity() {
			// A cluster's capacity: counted apart from its namespaces.
			c = rollup.Contribution{Scope: rollup.ScopeCapacity, Entity: rollup.Entity{Cluster: r.Sample.Cluster}}
		}
		for _, p := range pieces {
			c.Piece = p
			d.cs = append(d.cs, c)
		}
		d.accepted = append(d.accepted, accepted{from: from, raw: r.Raw, start: r.Sample.Start, end: r.Sample.End, pieces: len(pieces)})
	}
	return d
}

// decoded ends the decoding of b: its messages' pieces are laid out in
// one slice (in message order), its sequences become ranges, and the
// received counter and the stage hook learn of it.
func (a *Aggregator) decoded(ctx context.Context, b *batch) {
	nc, na := 0, 0
	for _, p := range b.parts {
		nc += len(p.cs)
		na += len(p.accepted)
	}
	b.cs = make([]rollup.Contribution, 0, nc)
	b.accepted = make([]accepted, 0, na)
	for _, p := range b.parts {
		b.cs = append(b.cs, p.cs...)
		b.accepted = append(b.accepted, p.accepted...)
	}
	b.parts, b.days = nil, nil
	b.seqs = compress(b.seqList)
	a.received.Add(ctx, int64(b.received))
	a.stage(StageDecoded)
}

// commit applies the batch's contributions and marks its sequences applied,
// in Redis, at once (rollup.Store.Apply).
func (a *Aggregator) commit(ctx context.Context, b *batch) (rollup.Result, error) {
	start := time.Now()
	res, err := a.store.Apply(ctx, b.cs, stream.Samples, b.seqs, a.cfg.Events)
	if err != nil {
		return rollup.Result{}, err
	}
	if len(res.Verdicts) != len(b.cs) {
		return rollup.Result{}, fmt.Errorf("apply batch: %d verdicts for %d contributions", len(res.Verdicts), len(b.cs))
	}
	a.stage(StageCommitted)
	a.applyLatency.Record(ctx, time.Since(start).Seconds())
	a.batchSize.Record(ctx, int64(b.received))
	return res, nil
}

// settle does what follows a commit: counts the verdicts, dead-letters
// what could not be counted (a sample with an overlapping piece is one
// letter), publishes the rollup events, and (when ack) acknowledges the
// messages, in that order: nothing is acknowledged before its effects are
// stored.
func (a *Aggregator) settle(ctx context.Context, b *batch, res rollup.Result, ack bool) error {
	var nApplied, nDup int64
	letters := b.letters
	verdicts, cs := res.Verdicts, b.cs
	for _, s := range b.accepted {
		overlap := false
		for _, v := range verdicts[:s.pieces] {
			switch v {
			case rollup.Applied:
				nApplied++
			case rollup.Duplicate:
				nDup++
			case rollup.Overlap:
				overlap = true
			}
		}
		if overlap {
			e := cs[0].Entity // the sample's own, as each of its pieces'
			w := sample.Sample{Cluster: e.Cluster, Namespace: e.Namespace, Start: s.start, End: s.end}
			of := w.Key()
			if cs[0].Scope == rollup.ScopeCapacity {
				of = "the capacity of cluster " + e.Cluster
			}
			letters = append(letters, deadLetter{from: s.from, reason: ReasonOverlap, data: s.raw,
				detail: fmt.Sprintf("window %s..%s of %s partly overlaps a window already counted", w.Start.Format(time.RFC3339), w.End.Format(time.RFC3339), of)})
		}
		verdicts, cs = verdicts[s.pieces:], cs[s.pieces:]
	}
	a.applied.Add(ctx, nApplied)
	a.duplicates.Add(ctx, nDup)
	trace.SpanFromContext(ctx).SetAttributes(attrSamples.Int(b.received), attrApplied.Int64(nApplied), attrDuplicates.Int64(nDup), attrDeadLetters.Int(len(letters)))
	if err := a.deadLetter(ctx, letters); err != nil {
		return err
	}
	if err := a.publishEvents(ctx, res.Changes); err != nil {
		return err
	}
	if ack {
		for _, m := range b.msgs {
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
	from   origin
	reason string
	detail string
	data   []byte // the offending message, or array element
}

// deadLetterHeadroom is what a dead letter's headers may take of the payload
// limit (the reason is cut to 1 KiB).
const deadLetterHeadroom = 8 << 10

// deadLetter publishes every letter and waits for JetStream to store them,
// before the originals are acknowledged. Message ids make a retry of the
// same batch publish nothing twice, and the counter counts a letter only
// when JetStream stored it for the first time (not a duplicate of its id):
// a batch that failed after its letters were stored and is retried counts
// each letter once (within the stream's duplicate window).
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
	msgs := make([]*nats.Msg, len(letters))
	for i, l := range letters {
		msg := nats.NewMsg(stream.DeadLetterPrefix + l.reason)
		msg.Header.Set(stream.HeaderReason, truncate(l.detail, 1024))
		msg.Header.Set(stream.HeaderSubject, l.from.msg.Subject())
		msg.Header.Set(stream.HeaderSeq, strconv.FormatUint(l.from.seq, 10))
		msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("dl-%d-%d", l.from.seq, l.from.index))
		msg.Header.Set(stream.HeaderElement, strconv.Itoa(l.from.index))
		msg.Data = l.data
		if int64(len(msg.Data)) > maxData {
			msg.Header.Set(stream.HeaderTruncated, strconv.Itoa(len(msg.Data)))
			msg.Data = msg.Data[:max(maxData, 0)]
		}
		telemetry.Inject(ctx, msg)
		msgs[i] = msg
	}
	published := natsconn.PublishAll(ctx, a.js, msgs)
	if err := natsconn.FirstError(published); err != nil {
		return fmt.Errorf("dead-letter samples: %w", err)
	}
	for i, l := range letters {
		if published[i].Ack.Duplicate {
			continue // stored by an earlier attempt at this batch, counted then
		}
		a.deadLettered.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", l.reason)))
		a.log.WarnContext(ctx, "dead-lettered sample", "seq", l.from.seq, "element", l.from.index, "reason", l.reason, "detail", truncate(l.detail, 300))
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
