package aggregator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alauda/costmeter/internal/stream"
)

// healLoop compares, every HealInterval, what Redis records as applied with
// what the consumer has acknowledged. Normally the watermark is ahead (a
// batch is marked before it is acknowledged); if Redis lost its last writes
// it is behind, and the gap is replayed from the stream, where limits
// retention keeps acknowledged samples for SamplesMaxAge.
func (a *Aggregator) healLoop(ctx context.Context, cons jetstream.Consumer) {
	t := time.NewTicker(a.cfg.HealInterval)
	defer t.Stop()
	for {
		if err := a.Heal(ctx, cons); err != nil && ctx.Err() == nil {
			a.log.ErrorContext(ctx, "heal lost rollup writes", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Heal replays the acknowledged samples whose rollup writes Redis no longer
// has. It is safe to run at any time and from several replicas at once:
// replayed samples that were in fact applied come back as duplicates.
func (a *Aggregator) Heal(ctx context.Context, cons jetstream.Consumer) error {
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("read consumer info: %w", err)
	}
	acked := info.AckFloor.Stream
	st, err := a.js.Stream(ctx, stream.Samples)
	if err != nil {
		return fmt.Errorf("open stream: %w", err)
	}
	sinfo, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("read stream info: %w", err)
	}
	first := sinfo.State.FirstSeq
	if acked < first {
		return nil
	}
	low, err := a.store.Applied(ctx, stream.Samples, first)
	if err != nil {
		return err
	}
	if low >= acked {
		return nil
	}
	a.log.WarnContext(ctx, "redis lost acknowledged writes; replaying from the stream", "first_seq", low+1, "last_seq", acked)
	return a.replay(ctx, low+1, acked)
}

func (a *Aggregator) replay(ctx context.Context, from, to uint64) error {
	oc, err := a.js.OrderedConsumer(ctx, stream.Samples, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{stream.SamplesSubjects},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    from,
	})
	if err != nil {
		return fmt.Errorf("replay from %d: %w", from, err)
	}
	var done uint64
	for ctx.Err() == nil {
		batch, err := oc.Fetch(a.cfg.BatchSize, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return fmt.Errorf("replay fetch: %w", err)
		}
		var msgs []jetstream.Msg
		last := false
		for m := range batch.Messages() {
			meta, err := m.Metadata()
			if err != nil {
				continue
			}
			if meta.Sequence.Stream > to {
				last = true
				continue
			}
			msgs = append(msgs, m)
			if meta.Sequence.Stream == to {
				last = true
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) && len(msgs) == 0 && !last {
			a.log.DebugContext(ctx, "replay fetch ended", "err", err)
		}
		if len(msgs) > 0 {
			if err := a.process(ctx, msgs, false); err != nil {
				return fmt.Errorf("replay apply: %w", err)
			}
			done += uint64(len(msgs))
		}
		if last || len(msgs) == 0 {
			break
		}
	}
	a.log.InfoContext(ctx, "replay finished", "first_seq", from, "last_seq", to, "messages", done)
	return nil
}
