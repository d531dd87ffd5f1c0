package aggregator

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/alauda/costmeter/internal/event"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/telemetry"
)

// eventWindow is how many events are in flight before their
// acknowledgements are awaited.
const eventWindow = 1000

// publishEvents publishes one event per changed (entity, day, item) and
// waits for JetStream to store them, before the batch is acknowledged. An
// item whose day totals are all zero has nothing to say and is skipped.
// Ids are content hashes: a redelivered batch (its pieces now duplicates)
// re-publishes the same totals under the same ids, so events lost to a crash
// between commit and acknowledgement are sent, and none is sent twice.
func (a *Aggregator) publishEvents(ctx context.Context, changes []rollup.Change) error {
	if !a.cfg.Events || len(changes) == 0 {
		return nil
	}
	ctx, span := a.tracer.Start(ctx, "publish rollup events", trace.WithSpanKind(trace.SpanKindProducer))
	defer span.End()
	var (
		futures = make([]jetstream.PubAckFuture, 0, eventWindow)
		sent    int64
	)
	// Acknowledgements are awaited every eventWindow events: the client
	// allows a bounded number of unacknowledged async publishes (4,000 by
	// default), and a batch can touch more entity-day-items than that.
	wait := func() error {
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return fmt.Errorf("publish rollup event: %w", err)
			case <-ctx.Done():
				return fmt.Errorf("publish rollup events: %w", ctx.Err())
			}
		}
		sent += int64(len(futures))
		futures = futures[:0]
		return nil
	}
	for _, c := range changes {
		if event.KindOf(c.Scope) == "" {
			continue
		}
		for _, it := range rollup.Items() {
			ev := event.New(c, it)
			if ev.Fixed == (event.Fixed{}) {
				continue
			}
			msg := nats.NewMsg(ev.Subject())
			msg.Data = ev.Marshal()
			msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
			telemetry.Inject(ctx, msg)
			f, err := a.js.PublishMsgAsync(msg)
			if err != nil {
				return fmt.Errorf("publish rollup event: %w", err)
			}
			futures = append(futures, f)
			if len(futures) == eventWindow {
				if err := wait(); err != nil {
					return err
				}
			}
		}
	}
	if err := wait(); err != nil {
		return err
	}
	a.events.Add(ctx, sent)
	return nil
}
