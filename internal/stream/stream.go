// Package stream names the JetStream streams, subjects and consumers of the
// pipeline and creates them idempotently: whichever component starts first
// creates them, the others find them.
package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alauda/costmeter/internal/config"
)

// Names and subjects. A sample message goes to SamplesPrefix+<cluster>.
const (
	Samples         = "COST_SAMPLES"
	SamplesPrefix   = "cost.samples."
	SamplesSubjects = "cost.samples.>"

	DeadLetter         = "COST_DEADLETTER"
	DeadLetterPrefix   = "cost.deadletter."
	DeadLetterSubjects = "cost.deadletter.>"

	// Rollups carries the aggregator's rollup events (internal/event):
	// RollupsPrefix + kind + name tokens.
	Rollups         = "COST_ROLLUPS"
	RollupsPrefix   = "cost.rollups."
	RollupsSubjects = "cost.rollups.>"

	// AlertsPrefix starts the core NATS subject of a notifier's threshold
	// crossing: AlertsPrefix + the rollup event's entity tokens
	// (event.Event.Entity), cost.alerts.<kind>.<name…>. No stream keeps
	// them.
	AlertsPrefix = "cost.alerts."

	// Consumer is the durable pull consumer shared by every aggregator
	// replica: JetStream hands each message to one of them.
	Consumer = "aggregator"
)

// Headers set on dead-lettered messages: every Cost-* header name of the
// pipeline is here.
const (
	// HeaderReason says what is wrong, naming the field.
	HeaderReason = "Cost-Reason"
	// HeaderSubject is the subject the sample message was published on.
	HeaderSubject = "Cost-Subject"
	// HeaderSeq is the sample message's sequence in the samples stream.
	HeaderSeq = "Cost-Stream-Seq"
	// HeaderElement names the element of an array message a dead letter is
	// about (-1: the whole message).
	HeaderElement = "Cost-Element"
	// HeaderTruncated is set on a dead letter whose data was cut to fit the
	// NATS payload limit; its value is the original length.
	HeaderTruncated = "Cost-Truncated"
)

// Config sizes the streams.
type Config struct {
	// SamplesMaxAge bounds how long samples stay in the stream after they
	// were applied (limits retention): the window in which lost Redis writes
	// heal by replay.
	SamplesMaxAge time.Duration
	// DuplicateWindow is JetStream's Nats-Msg-Id deduplication window.
	DuplicateWindow time.Duration
	// AckWait is how long a delivered message may stay unacknowledged.
	AckWait time.Duration
	// Replicas of each stream (1 for a single server).
	Replicas int
	// RollupsMaxAge is how long rollup events stay for subscribers.
	RollupsMaxAge time.Duration
}

// DefaultConfig is a week of replay, ten minutes of publish deduplication.
func DefaultConfig() Config {
	return Config{SamplesMaxAge: 7 * 24 * time.Hour, DuplicateWindow: 10 * time.Minute, AckWait: 30 * time.Second, Replicas: 1, RollupsMaxAge: 7 * 24 * time.Hour}
}

// MaxReplicas is JetStream's limit on a stream's replicas.
const MaxReplicas = 5

// RegisterReplicas registers --stream-replicas (COST_STREAM_REPLICAS).
func (c *Config) RegisterReplicas(f *config.Flags) {
	f.Int(&c.Replicas, "stream-replicas", "COST_STREAM_REPLICAS", DefaultConfig().Replicas,
		"replicas of the COST_SAMPLES, COST_DEADLETTER and COST_ROLLUPS streams (3 on a JetStream cluster: a publish is acknowledged once a majority stored it)")
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	if c.Replicas < 1 || c.Replicas > MaxReplicas {
		return fmt.Errorf("--stream-replicas: %d is not within 1..%d", c.Replicas, MaxReplicas)
	}
	return nil
}

// Option adjusts Ensure and EnsureRollups.
type Option func(*ensureOptions)

type ensureOptions struct {
	log        *slog.Logger
	createOnly bool
}

// WithLogger sets where replica changes and warnings are logged (default:
// slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *ensureOptions) { o.log = l } }

// CreateOnly creates missing streams and leaves existing ones as they are.
// Collectors use it: the aggregators own the streams' configuration, so a
// collector started with older or other flags (in another cluster, say)
// never scales a stream down or shortens its retention.
func CreateOnly() Option { return func(o *ensureOptions) { o.createOnly = true } }

// Ensure creates the sample and dead-letter streams, or updates them to
// cfg. A stream running with other replicas than cfg.Replicas is scaled to
// them when JetStream allows it (a cluster with enough servers up); when it
// does not (a single server, too few peers), the stream keeps its replicas,
// its other settings are still updated, and a warning is logged. A stream
// created on a single server with cfg.Replicas > 1 gets 1, with a warning.
func Ensure(ctx context.Context, js jetstream.JetStream, cfg Config, opts ...Option) error {
	if cfg.Replicas < 1 {
		cfg.Replicas = 1
	}
	o := options(opts)
	streams := []jetstream.StreamConfig{{
		Name:        Samples,
		Description: "usage samples from collectors, kept after acknowledgement so lost rollup writes can be replayed",
		Subjects:    []string{SamplesSubjects},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      cfg.SamplesMaxAge,
		Duplicates:  cfg.DuplicateWindow,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Discard:     jetstream.DiscardOld,
	}, {
		Name:        DeadLetter,
		Description: "samples the aggregator could not count, with the reason in the Cost-Reason header",
		Subjects:    []string{DeadLetterSubjects},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      30 * 24 * time.Hour,
		Duplicates:  cfg.DuplicateWindow,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	}}
	for _, sc := range streams {
		if err := ensure(ctx, js, sc, o); err != nil {
			return err
		}
	}
	return nil
}

// EnsureRollups creates or updates the rollup events stream, with the
// replicas rules of Ensure.
func EnsureRollups(ctx context.Context, js jetstream.JetStream, cfg Config, opts ...Option) error {
	if cfg.Replicas < 1 {
		cfg.Replicas = 1
	}
	if cfg.RollupsMaxAge <= 0 {
		cfg.RollupsMaxAge = DefaultConfig().RollupsMaxAge
	}
	return ensure(ctx, js, jetstream.StreamConfig{
		Name:        Rollups,
		Description: "rollup events: new day totals per changed entity, day and item",
		Subjects:    []string{RollupsSubjects},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      cfg.RollupsMaxAge,
		Duplicates:  cfg.DuplicateWindow,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	}, options(opts))
}

func options(opts []Option) ensureOptions {
	o := ensureOptions{log: slog.Default()}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// errCodeReplicasNotSupported is JetStream's "replicas > 1 not supported
// in non-clustered mode".
const errCodeReplicasNotSupported jetstream.ErrorCode = 10074

func replicasNotSupported(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeReplicasNotSupported
}

// ensure creates sc or updates the running stream to it.
func ensure(ctx context.Context, js jetstream.JetStream, sc jetstream.StreamConfig, o ensureOptions) error {
	st, err := js.Stream(ctx, sc.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = js.CreateStream(ctx, sc)
		if replicasNotSupported(err) {
			o.log.WarnContext(ctx, "single NATS server: stream created with 1 replica, not the configured count",
				"stream", sc.Name, "replicas", sc.Replicas)
			sc.Replicas = 1
			_, err = js.CreateStream(ctx, sc)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("create stream %s: %w", sc.Name, err)
		}
		// Another component created it meanwhile: update it as found.
		st, err = js.Stream(ctx, sc.Name)
	}
	if err != nil {
		return fmt.Errorf("look up stream %s: %w", sc.Name, err)
	}
	if o.createOnly {
		return nil
	}
	if have := st.CachedInfo().Config.Replicas; have != sc.Replicas {
		_, err := js.UpdateStream(ctx, sc)
		if err == nil {
			o.log.InfoContext(ctx, "stream replicas changed", "stream", sc.Name, "from", have, "to", sc.Replicas)
			return nil
		}
		// Only a refusal by JetStream keeps the replicas; a timeout or a
		// leader election in progress is retried by the caller.
		var apiErr *jetstream.APIError
		if !errors.As(err, &apiErr) {
			return fmt.Errorf("update stream %s: %w", sc.Name, err)
		}
		o.log.WarnContext(ctx, "stream keeps its replicas: JetStream refused the configured count",
			"stream", sc.Name, "replicas", have, "configured", sc.Replicas, "err", err)
		sc.Replicas = have
	}
	if sameSettings(st.CachedInfo().Config, sc) {
		// Nothing to change: an update request would only race other
		// components creating consumers on the stream (nats-server v2.15
		// swaps the store's configuration under them).
		return nil
	}
	if _, err := js.UpdateStream(ctx, sc); err != nil {
		return fmt.Errorf("update stream %s: %w", sc.Name, err)
	}
	return nil
}

// sameSettings reports whether the running stream already has every setting
// that want sets (the server fills in defaults for the others).
func sameSettings(have, want jetstream.StreamConfig) bool {
	return have.Description == want.Description &&
		slices.Equal(have.Subjects, want.Subjects) &&
		have.Retention == want.Retention &&
		have.MaxAge == want.MaxAge &&
		have.Duplicates == want.Duplicates &&
		have.Storage == want.Storage &&
		have.Replicas == want.Replicas &&
		have.Discard == want.Discard
}

// EnsureConsumer creates or updates the aggregators' durable consumer.
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.Consumer, error) {
	c, err := js.CreateOrUpdateConsumer(ctx, Samples, jetstream.ConsumerConfig{
		Durable:       Consumer,
		Description:   "aggregators: apply samples to the Redis rollups",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: 100_000,
		FilterSubject: SamplesSubjects,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("create consumer %s: %w", Consumer, err)
	}
	return c, nil
}

// Drained reports whether consumer has acknowledged every message in
// streamName up to the stream's last sequence, with none awaiting an
// acknowledgement; detail says how far it is. It reads the ack floor
// rather than the consumer's pending count, which can lag behind messages
// stored while the consumer was being created.
func Drained(ctx context.Context, js jetstream.JetStream, streamName, consumer string) (done bool, detail string, err error) {
	st, err := js.Stream(ctx, streamName)
	if err != nil {
		return false, "", fmt.Errorf("read stream %s: %w", streamName, err)
	}
	si, err := st.Info(ctx)
	if err != nil {
		return false, "", fmt.Errorf("read stream %s: %w", streamName, err)
	}
	c, err := st.Consumer(ctx, consumer)
	if err != nil {
		return false, "", fmt.Errorf("read consumer %s: %w", consumer, err)
	}
	ci, err := c.Info(ctx)
	if err != nil {
		return false, "", fmt.Errorf("read consumer %s: %w", consumer, err)
	}
	detail = fmt.Sprintf("ack floor %d of %d, ack pending %d", ci.AckFloor.Stream, si.State.LastSeq, ci.NumAckPending)
	return ci.AckFloor.Stream >= si.State.LastSeq && ci.NumAckPending == 0, detail, nil
}
