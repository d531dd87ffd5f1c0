// Package notifier tells people when usage crosses a threshold: a durable
// subscriber of the rollup events (internal/event) that keeps period totals
// per rule and entity, decides crossings exactly once, and delivers each as
// a signed CloudEvents webhook (Standard Webhooks) with retries, and on
// NATS.
//
// The rules, in the order they matter:
//   - a period total is the sum of the latest day totals of the period's
//     days; events carry absolute day totals and may arrive out of order
//     (two aggregators), so the larger of two totals for a day is kept;
//   - a threshold fires once per (rule, entity, period): the Lua script
//     that stores a day total also sums the period and marks every newly
//     crossed threshold in the same key, atomically (keys.go, store.go), so
//     a replay of the stream, a restart, two replicas or a redelivered
//     event never fire it again, and a late event for an earlier period
//     fires for that period;
//   - an event is acknowledged only after its crossings are recorded as
//     notifications and queued for delivery; every step is idempotent, so a
//     crash anywhere is repaired by the redelivery;
//   - deliveries are at least once with a stable id: retried with
//     exponential backoff for at most MaxAge (24 h), every attempt the same
//     body and id, the state kept in Redis so that any replica resumes them.
package notifier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/alauda/costmeter/internal/config"
	"github.com/alauda/costmeter/internal/event"
	"github.com/alauda/costmeter/internal/jsworker"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/stream"
)

// DefaultConsumer is the durable consumer on COST_ROLLUPS that every
// notifier replica shares.
const DefaultConsumer = "notifier"

// Config tunes the notifier.
type Config struct {
	// RulesFile is the rules file (rules.go); RulesPoll how often it is
	// checked for changes.
	RulesFile string
	RulesPoll time.Duration
	// Consumer names the durable consumer on COST_ROLLUPS.
	Consumer string
	// BatchSize is how many events one fetch asks for.
	BatchSize int
	// Workers is how many events of a batch are evaluated at once (each
	// waits on Redis; the scripts make concurrent evaluations of one
	// period safe).
	Workers int
	// Retention is how long period state and notifications are kept after
	// their period ended (they must outlive late samples: the rollups'
	// retention).
	Retention time.Duration
	// Delivery tunes the webhook deliveries.
	Delivery DeliveryConfig
}

// DeliveryConfig tunes the webhook deliveries.
type DeliveryConfig struct {
	// Timeout bounds one attempt.
	Timeout time.Duration
	// RetryInitial and RetryMaxInterval shape the exponential backoff
	// between attempts (doubling, ±20% jitter).
	RetryInitial     time.Duration
	RetryMaxInterval time.Duration
	// MaxAge is how long after firing a delivery is retried; then it is
	// failed. At most 24 h.
	MaxAge time.Duration
	// Lease is how long a claimed delivery is kept from other replicas: a
	// replica that dies mid-attempt leaves it due again after the lease.
	Lease time.Duration
	// Poll is how often the queue is checked for deliveries that another
	// replica queued.
	Poll time.Duration
	// Concurrency is how many attempts run at once in this process.
	Concurrency int
}

// MaxDeliveryAge is the longest a delivery is retried.
const MaxDeliveryAge = 24 * time.Hour

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{RulesPoll: DefaultRulesPoll, Consumer: DefaultConsumer, BatchSize: 64, Workers: 8, Retention: rollup.DefaultRetention,
		Delivery: DeliveryConfig{Timeout: 10 * time.Second, RetryInitial: 5 * time.Second, RetryMaxInterval: time.Hour,
			MaxAge: MaxDeliveryAge, Lease: time.Minute, Poll: time.Second, Concurrency: 8}}
}

// RegisterFlags registers the notifier's flags (the retention flag is the
// shared --retention, registered by main).
func (c *Config) RegisterFlags(f *config.Flags) {
	d := DefaultConfig()
	f.String(&c.RulesFile, "rules-file", "COST_RULES_FILE", "", "budget and alert rules (YAML); reloaded when it changes")
	f.Duration(&c.RulesPoll, "rules-poll", "COST_RULES_POLL", d.RulesPoll, "how often the rules file is checked for changes")
	f.String(&c.Consumer, "notifier-consumer", "NOTIFIER_CONSUMER", d.Consumer, "durable consumer on COST_ROLLUPS shared by the notifier replicas")
	f.Int(&c.BatchSize, "notifier-batch-size", "NOTIFIER_BATCH_SIZE", d.BatchSize, "rollup events fetched at once")
	f.Int(&c.Workers, "notifier-workers", "NOTIFIER_WORKERS", d.Workers, "rollup events evaluated at once")
	f.Duration(&c.Delivery.Timeout, "webhook-timeout", "WEBHOOK_TIMEOUT", d.Delivery.Timeout, "how long one webhook attempt may take")
	f.Duration(&c.Delivery.RetryInitial, "webhook-retry-initial", "WEBHOOK_RETRY_INITIAL", d.Delivery.RetryInitial, "wait before the first retry (then doubling)")
	f.Duration(&c.Delivery.RetryMaxInterval, "webhook-retry-max-interval", "WEBHOOK_RETRY_MAX_INTERVAL", d.Delivery.RetryMaxInterval, "longest wait between two attempts")
	f.Duration(&c.Delivery.MaxAge, "webhook-max-age", "WEBHOOK_MAX_AGE", d.Delivery.MaxAge, "how long after firing a delivery is retried before it is failed (at most 24h)")
	f.Int(&c.Delivery.Concurrency, "webhook-concurrency", "WEBHOOK_CONCURRENCY", d.Delivery.Concurrency, "webhook attempts in flight at once")
	c.Delivery.Lease, c.Delivery.Poll = d.Delivery.Lease, d.Delivery.Poll
}

// Validate reports every problem at once. The rules file itself is
// checked by LoadRules.
func (c Config) Validate() error {
	var errs []error
	if c.RulesPoll <= 0 {
		errs = append(errs, fmt.Errorf("--rules-poll: must be positive, got %s", c.RulesPoll))
	}
	if c.Consumer == "" || !ruleName.MatchString(c.Consumer) || len(c.Consumer) > 63 {
		errs = append(errs, fmt.Errorf("--notifier-consumer: %q is not a lowercase name", c.Consumer))
	}
	if c.BatchSize < 1 || c.BatchSize > 10_000 {
		errs = append(errs, fmt.Errorf("--notifier-batch-size: %d is not within 1..10000", c.BatchSize))
	}
	if c.Workers < 1 || c.Workers > 256 {
		errs = append(errs, fmt.Errorf("--notifier-workers: %d is not within 1..256", c.Workers))
	}
	if c.Retention < 24*time.Hour {
		errs = append(errs, fmt.Errorf("--retention: %s is shorter than a day", c.Retention))
	}
	d := c.Delivery
	if d.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("--webhook-timeout: must be positive, got %s", d.Timeout))
	}
	if d.RetryInitial <= 0 {
		errs = append(errs, fmt.Errorf("--webhook-retry-initial: must be positive, got %s", d.RetryInitial))
	}
	if d.RetryMaxInterval < d.RetryInitial {
		errs = append(errs, fmt.Errorf("--webhook-retry-max-interval: %s is shorter than --webhook-retry-initial %s", d.RetryMaxInterval, d.RetryInitial))
	}
	if d.MaxAge <= 0 || d.MaxAge > MaxDeliveryAge {
		errs = append(errs, fmt.Errorf("--webhook-max-age: %s is not within (0, 24h]", d.MaxAge))
	}
	if d.Concurrency < 1 || d.Concurrency > 256 {
		errs = append(errs, fmt.Errorf("--webhook-concurrency: %d is not within 1..256", d.Concurrency))
	}
	if d.Lease <= d.Timeout {
		errs = append(errs, fmt.Errorf("delivery lease %s must exceed --webhook-timeout %s", d.Lease, d.Timeout))
	}
	if d.Poll <= 0 {
		errs = append(errs, fmt.Errorf("delivery poll: must be positive, got %s", d.Poll))
	}
	return errors.Join(errs...)
}

// Publisher sends a core NATS message (*nats.Conn).
type Publisher interface {
	PublishMsg(m *nats.Msg) error
}

// Option sets an optional dependency.
type Option func(*Notifier)

// WithLogger sets the logger (default: slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(n *Notifier) { n.log = l } }

// WithMeter sets the OTel meter (default: no-op).
func WithMeter(m metric.Meter) Option { return func(n *Notifier) { n.meter = m } }

// WithClock sets the clock (default: time.Now).
func WithClock(now func() time.Time) Option { return func(n *Notifier) { n.now = now } }

// WithHTTPClient sets the webhook client (default: one that follows no
// redirects; each attempt has its own timeout).
func WithHTTPClient(c *http.Client) Option { return func(n *Notifier) { n.client = c } }

// DayReader reads an entity's day rollup (*rollup.Reader, *rollup.Store).
type DayReader interface {
	DayValues(ctx context.Context, d rollup.Day, sc rollup.Scope, member string) (rollup.Values, bool, error)
}

// WithDayReader sets where a new period's days are read from (default:
// the rollups in the notifier's Redis); nil counts periods from the
// events alone.
func WithDayReader(d DayReader) Option { return func(n *Notifier) { n.days = d } }

// Notifier evaluates rollup events against the rules and delivers the
// crossings.
type Notifier struct {
	cfg    Config
	js     jetstream.JetStream
	pub    Publisher
	store  *store
	rules  *Rules
	log    *slog.Logger
	meter  metric.Meter
	now    func() time.Time
	client *http.Client
	days   DayReader
	wake   chan struct{}

	worker *jsworker.Worker[jetstream.MessageBatch]

	evaluated, fired, deliveries metric.Int64Counter
	latency                      metric.Float64Histogram
}

// latencyBuckets span a prompt delivery (tens of milliseconds) to the last
// retry a day later, in seconds.
var latencyBuckets = []float64{0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 24 * 3600}

// New returns a Notifier reading events from js, keeping its state in rdb
// and publishing notifications with pub.
func New(cfg Config, js jetstream.JetStream, pub Publisher, rdb redis.UniversalClient, rules *Rules, opts ...Option) (*Notifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if js == nil || pub == nil || rdb == nil || rules == nil {
		return nil, errors.New("notifier: jetstream, publisher, redis and rules are required")
	}
	n := &Notifier{cfg: cfg, js: js, pub: pub, store: &store{rdb: rdb, retention: cfg.Retention}, rules: rules,
		log: slog.Default(), meter: noop.NewMeterProvider().Meter(""), now: time.Now, wake: make(chan struct{}, 1), days: rollup.NewReader(rdb)}
	for _, o := range opts {
		o(n)
	}
	if n.client == nil {
		n.client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	n.log = n.log.With("component", "notifier")
	var errs [4]error
	n.evaluated, errs[0] = n.meter.Int64Counter("cost.notifier.events.evaluated", metric.WithDescription("rollup events evaluated against the rules"))
	n.fired, errs[1] = n.meter.Int64Counter("cost.notifier.thresholds.fired", metric.WithDescription("thresholds crossed (each once per rule, entity and period), by rule"))
	n.deliveries, errs[2] = n.meter.Int64Counter("cost.notifier.deliveries", metric.WithDescription("webhook attempts by outcome: delivered, retry (will be retried), failed (given up)"))
	n.latency, errs[3] = n.meter.Float64Histogram("cost.notifier.delivery.latency", metric.WithUnit("s"),
		metric.WithDescription("time from a threshold firing to its webhook delivered"), metric.WithExplicitBucketBoundaries(latencyBuckets...))
	if err := errors.Join(errs[:]...); err != nil {
		return nil, fmt.Errorf("create notifier instruments: %w", err)
	}
	w, err := n.newWorker()
	if err != nil {
		return nil, err
	}
	n.worker = w
	return n, nil
}

// Running reports whether the consumer runs (readiness).
func (n *Notifier) Running() bool { return n.worker.Running() }

// Run consumes events and delivers notifications until ctx ends, then
// finishes the events in hand and returns nil. It returns an error only
// when it cannot start.
func (n *Notifier) Run(ctx context.Context) error { return n.worker.Run(ctx) }

// newWorker is the notifier's JetStream worker: one fetch loop whose
// batches are evaluated Workers events at a time, each acknowledged or
// Nak'ed on its own, with the delivery loop and the rules watcher beside
// it.
func (n *Notifier) newWorker() (*jsworker.Worker[jetstream.MessageBatch], error) {
	allEvents, err := event.Selection{}.Subjects()
	if err != nil {
		return nil, fmt.Errorf("rollup event subjects: %w", err)
	}
	return jsworker.New(jsworker.Spec[jetstream.MessageBatch]{
		What: "rollup events",
		Ensure: func(ctx context.Context) (jetstream.Consumer, error) {
			// Created if missing, never changed: the aggregators own the
			// stream's configuration (replicas, retention).
			if err := stream.EnsureRollups(ctx, n.js, stream.DefaultConfig(), stream.CreateOnly(), stream.WithLogger(n.log)); err != nil {
				return nil, err
			}
			cfg := jetstream.ConsumerConfig{
				Durable:       n.cfg.Consumer,
				Description:   "notifiers: budget and usage alerts from the rollup events",
				AckPolicy:     jetstream.AckExplicitPolicy,
				AckWait:       30 * time.Second,
				MaxDeliver:    -1,
				MaxAckPending: 10_000,
				DeliverPolicy: jetstream.DeliverAllPolicy,
			}
			// Every rollup event. One filter goes in FilterSubject, as the
			// consumer was always created, so a running durable needs no
			// update.
			if len(allEvents) == 1 {
				cfg.FilterSubject = allEvents[0]
			} else {
				cfg.FilterSubjects = allEvents
			}
			c, err := n.js.CreateOrUpdateConsumer(ctx, stream.Rollups, cfg)
			if err != nil {
				return nil, fmt.Errorf("create consumer %s: %w", n.cfg.Consumer, err)
			}
			return c, nil
		},
		Fetch: func(_ context.Context, cons jetstream.Consumer) (jetstream.MessageBatch, bool, error) {
			batch, err := cons.Fetch(n.cfg.BatchSize, jetstream.FetchMaxWait(time.Second))
			return batch, err == nil, err
		},
		Finish: n.finish,
		// Each event has its own deadline (finish).
		FinishTimeout: jsworker.NoTimeout,
		// finish acknowledges or Naks each event itself.
		Fail: func(context.Context, jetstream.MessageBatch, error) {},
		Beside: []func(context.Context, jetstream.Consumer){
			func(ctx context.Context, _ jetstream.Consumer) { n.deliverLoop(ctx) },
			func(ctx context.Context, _ jetstream.Consumer) { _ = n.rules.Run(ctx) },
		},
	}, n.log)
}

// finish evaluates a batch, Workers events at a time: each event is
// acknowledged once its crossings are recorded, or Nak'ed to come again a
// second later. Its ctx is not cancelled by shutdown.
func (n *Notifier) finish(ctx context.Context, batch jetstream.MessageBatch) error {
	sem := make(chan struct{}, n.cfg.Workers)
	var wg sync.WaitGroup
	for m := range batch.Messages() {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			mctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := n.handle(mctx, m)
			cancel()
			if err != nil {
				n.log.ErrorContext(ctx, "evaluate rollup event; it will be redelivered", "subject", m.Subject(), "err", err)
				_ = m.NakWithDelay(time.Second)
				return
			}
			_ = m.Ack()
		})
	}
	wg.Wait()
	return nil
}

// handle evaluates one event against every rule that matches it. A
// message that is not an event is logged and terminated: it can never
// become one.
func (n *Notifier) handle(ctx context.Context, m jetstream.Msg) error {
	var ev event.Event
	if err := json.Unmarshal(m.Data(), &ev); err != nil {
		n.log.WarnContext(ctx, "not a rollup event; dropped", "subject", m.Subject(), "err", err)
		_ = m.Term()
		return nil
	}
	day, err := parseDay(ev.Day)
	if err != nil {
		n.log.WarnContext(ctx, "rollup event with a bad day; dropped", "subject", m.Subject(), "err", err)
		_ = m.Term()
		return nil
	}
	n.evaluated.Add(ctx, 1)
	return n.Evaluate(ctx, &ev, day)
}

// Evaluate applies one event to every matching rule's period and records
// the crossings.
//
// A period the notifier has no state of yet (a rule added, or an entity
// first seen, after the period's first days' events left the stream) is
// seeded with the period's day totals from the rollups, so that it is
// totalled from its first day; the events keep it current from then on.
func (n *Notifier) Evaluate(ctx context.Context, ev *event.Event, day rollup.Day) error {
	for _, r := range n.rules.Current().Rules {
		if !r.Matches(ev) {
			continue
		}
		p := periodOf(r.Period, day)
		id := periodID(r, ev, p.first)
		expire, now := p.end().Add(n.cfg.Retention), n.now()
		mode := seedNever
		if n.days != nil {
			mode = seedAsk
		}
		_, crossings, err := n.store.evaluate(ctx, id, ev.Day, r.value(ev), expire, now, r.Thresholds, mode, nil)
		if errors.Is(err, errNeedSeed) {
			var seeds map[string]int64
			if seeds, err = n.seed(ctx, r, ev, p); err != nil {
				return err
			}
			_, crossings, err = n.store.evaluate(ctx, id, ev.Day, r.value(ev), expire, now, r.Thresholds, seedWith, seeds)
		}
		if err != nil {
			return err
		}
		for _, c := range crossings {
			if err := n.recordCrossing(ctx, r, ev, p, id, c); err != nil {
				return err
			}
		}
	}
	return nil
}

// seed reads the rule's day totals of the event's entity for every day of
// the period from the rollups.
func (n *Notifier) seed(ctx context.Context, r *Rule, ev *event.Event, p periodRange) (map[string]int64, error) {
	sc := event.ScopeOf(ev.Kind)
	member := rollup.Entity{Project: ev.Project, Cluster: ev.Cluster, Namespace: ev.Namespace, GroupKey: ev.GroupBy, Group: ev.Group}.Member(sc)
	seeds := map[string]int64{}
	for d := p.first; d <= p.last; d++ {
		v, ok, err := n.days.DayValues(ctx, d, sc, member)
		if err != nil {
			return nil, fmt.Errorf("seed period of rule %s: %w", r.Name, err)
		}
		if f := v[rollup.Field(r.Item, r.Method)]; ok && f > 0 {
			seeds[d.String()] = f
		}
	}
	return seeds, nil
}

func (n *Notifier) recordCrossing(ctx context.Context, r *Rule, ev *event.Event, p periodRange, id string, c Crossing) error {
	nt := newNotification(r, ev, p, c)
	body := marshalEvent(nt.Event)
	rec, err := n.store.record(ctx, nt, body)
	if err != nil {
		return err
	}
	if c.New {
		n.fired.Add(ctx, 1, metric.WithAttributes(attribute.String("rule", r.Name)))
		n.log.InfoContext(ctx, "threshold crossed", "rule", r.Name, "kind", ev.Kind, "entity", ev.Name(),
			"period_start", p.first.String(), "threshold", nt.Event.Data.Threshold, "usage", nt.Event.Data.Usage, "id", nt.ID)
	}
	if !rec.published {
		if !rec.created {
			// Recorded before (a crash, another replica): publish the
			// stored body, the same bytes as the webhook's.
			if stored, ok, err := n.store.load(ctx, nt.ID); err == nil && ok {
				body = stored.Event
			}
		}
		msg := nats.NewMsg(nt.Subject)
		msg.Data = body
		msg.Header.Set("Content-Type", ContentType)
		msg.Header.Set(jetstream.MsgIDHeader, nt.ID)
		if err := n.pub.PublishMsg(msg); err != nil {
			return fmt.Errorf("publish notification %s: %w", nt.ID, err)
		}
		if err := n.store.markPublished(ctx, nt.ID); err != nil {
			return err
		}
	}
	if err := n.store.markRecorded(ctx, id, c.Threshold); err != nil {
		return err
	}
	if rec.state == StatePending {
		select {
		case n.wake <- struct{}{}:
		default:
		}
	}
	return nil
}
