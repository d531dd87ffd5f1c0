// Package stream names the JetStream streams, subjects and consumers of the
// pipeline and creates them idempotently: whichever component starts first
// creates them, the others find them.
package stream

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
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

	// Consumer is the durable pull consumer shared by every aggregator
	// replica: JetStream hands each message to one of them.
	Consumer = "aggregator"
)

// Headers set on dead-lettered messages.
const (
	HeaderReason  = "Cost-Reason"
	HeaderSubject = "Cost-Subject"
	HeaderSeq     = "Cost-Stream-Seq"
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

// Ensure creates or updates the sample and dead-letter streams.
func Ensure(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	if cfg.Replicas < 1 {
		cfg.Replicas = 1
	}
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
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("create stream %s: %w", sc.Name, err)
		}
	}
	return nil
}

// EnsureRollups creates or updates the rollup events stream.
func EnsureRollups(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	if cfg.Replicas < 1 {
		cfg.Replicas = 1
	}
	if cfg.RollupsMaxAge <= 0 {
		cfg.RollupsMaxAge = DefaultConfig().RollupsMaxAge
	}
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        Rollups,
		Description: "rollup events: new day totals per changed entity, day and item",
		Subjects:    []string{RollupsSubjects},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      cfg.RollupsMaxAge,
		Duplicates:  cfg.DuplicateWindow,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("create stream %s: %w", Rollups, err)
	}
	return nil
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
