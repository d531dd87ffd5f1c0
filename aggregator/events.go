package aggregator

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/alauda/costmeter/internal/event"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/telemetry"
)

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
	var msgs []*nats.Msg
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
			msgs = append(msgs, msg)
		}
	}
	if err := natsconn.FirstError(natsconn.PublishAll(ctx, a.js, msgs)); err != nil {
		return fmt.Errorf("publish rollup events: %w", err)
	}
	a.events.Add(ctx, int64(len(msgs)))
	return nil
}
