package natsconn

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// PublishWindow is how many messages PublishAll keeps unacknowledged at
// once: the client refuses more than 4,000 pending async publishes by
// default, and one call may carry more messages than that.
const PublishWindow = 1000

// Published is the outcome of one message of PublishAll: JetStream's
// acknowledgement (Duplicate is set when its Nats-Msg-Id was already
// stored), or why there is none.
type Published struct {
	Ack *jetstream.PubAck
	Err error
}

// PublishAll is "publish asynchronously, then await the acknowledgements",
// the one way the pipeline publishes a set of messages: msgs are published
// in order without waiting in between, at most PublishWindow
// unacknowledged at once, and every acknowledgement is awaited until ctx
// ends. The result holds one entry per message, in order; a failure of one
// message does not stop the others. opts apply to every publish.
func PublishAll(ctx context.Context, js jetstream.JetStream, msgs []*nats.Msg, opts ...jetstream.PublishOpt) []Published {
	out := make([]Published, len(msgs))
	futures := make([]jetstream.PubAckFuture, 0, min(len(msgs), PublishWindow))
	first := 0 // index of futures[0] in msgs
	await := func() {
		for i, f := range futures {
			r := &out[first+i]
			if f == nil {
				continue // r.Err set when publishing
			}
			select {
			case ack := <-f.Ok():
				r.Ack = ack
			case err := <-f.Err():
				r.Err = err
			case <-ctx.Done():
				r.Err = fmt.Errorf("no acknowledgement: %w", ctx.Err())
			}
		}
		first += len(futures)
		futures = futures[:0]
	}
	for i, m := range msgs {
		f, err := js.PublishMsgAsync(m, opts...)
		if err != nil {
			out[i].Err = err
			f = nil
		}
		futures = append(futures, f)
		if len(futures) == PublishWindow {
			await()
		}
	}
	await()
	return out
}

// FirstError returns the first error of rs, nil when every message was
// acknowledged.
func FirstError(rs []Published) error {
	for _, r := range rs {
		if r.Err != nil {
			return r.Err
		}
	}
	return nil
}
