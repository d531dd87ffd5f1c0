package event

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alauda/costmeter/internal/stream"
)

// ErrUnavailable is wrapped by Subscribe's errors when the events cannot
// be subscribed to: NATS does not answer, or no aggregator created the
// COST_ROLLUPS stream yet.
var ErrUnavailable = errors.New("rollup events unavailable")

// Defaults of a subscription.
const (
	// DefaultBuffer is how many events wait between NATS and a slow
	// reader; beyond it NATS delivery waits (the ordered consumer
	// recovers from the stall by itself, losing nothing).
	DefaultBuffer = 256
	// consumerIdle lets the server remove a consumer that was not deleted
	// on the way out (the process died).
	consumerIdle = time.Minute
	// openTimeout bounds creating the consumer; deleteTimeout deleting it.
	openTimeout   = 10 * time.Second
	deleteTimeout = 2 * time.Second
)

// SubscribeOption adjusts Subscribe.
type SubscribeOption func(*subscribeOptions)

type subscribeOptions struct {
	buffer int
	log    *slog.Logger
}

// WithBuffer sets how many events wait for the reader (default
// DefaultBuffer).
func WithBuffer(n int) SubscribeOption { return func(o *subscribeOptions) { o.buffer = n } }

// WithLogger sets where undecodable and mislabelled events are reported
// (default: nowhere).
func WithLogger(l *slog.Logger) SubscribeOption { return func(o *subscribeOptions) { o.log = l } }

// Subscription delivers the events of a Selection published after it was
// opened, in stream order, through an ordered ephemeral consumer of the
// COST_ROLLUPS stream that it owns: the consumer is deleted when the
// subscription's context ends or Close is called, whichever comes first.
type Subscription struct {
	js     jetstream.JetStream
	sel    Selection
	log    *slog.Logger
	cons   jetstream.Consumer
	cc     jetstream.ConsumeContext
	events chan Event

	mu       sync.Mutex
	closed   bool
	inflight sync.WaitGroup // callbacks that may still send on events
	done     chan struct{}  // closed first on the way out: unblocks senders
	once     sync.Once
	finished chan struct{} // closed when the consumer is gone
}

// Subscribe opens a subscription to sel's events (Selection.Subjects)
// published from now on. Events whose body does not Match sel, or that do
// not decode, are logged and skipped. It returns an error wrapping
// ErrBadSelection for a bad selection and ErrUnavailable when the stream
// cannot be subscribed to.
func Subscribe(ctx context.Context, js jetstream.JetStream, sel Selection, opts ...SubscribeOption) (*Subscription, error) {
	o := subscribeOptions{buffer: DefaultBuffer, log: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		opt(&o)
	}
	if o.buffer < 0 {
		o.buffer = 0
	}
	subjects, err := sel.Subjects()
	if err != nil {
		return nil, err
	}
	octx, cancel := context.WithTimeout(ctx, openTimeout)
	cons, err := js.OrderedConsumer(octx, stream.Rollups, jetstream.OrderedConsumerConfig{
		FilterSubjects:    subjects,
		DeliverPolicy:     jetstream.DeliverNewPolicy,
		InactiveThreshold: consumerIdle,
	})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("%w: subscribe to %s %v: %w", ErrUnavailable, stream.Rollups, subjects, err)
	}
	s := &Subscription{js: js, sel: sel, log: o.log, cons: cons, events: make(chan Event, o.buffer),
		done: make(chan struct{}), finished: make(chan struct{})}
	s.cc, err = cons.Consume(s.deliver)
	if err != nil {
		s.deleteConsumer(ctx)
		return nil, fmt.Errorf("%w: consume %s: %w", ErrUnavailable, stream.Rollups, err)
	}
	go func() {
		select {
		case <-ctx.Done():
		case <-s.done:
		}
		s.shutdown(ctx)
	}()
	return s, nil
}

// Events is where the events arrive; it is closed once the subscription
// ended (its context ended or Close was called).
func (s *Subscription) Events() <-chan Event { return s.events }

// Close ends the subscription and returns once its consumer is deleted (or
// the deletion failed; the server then removes it after a minute idle).
// It may be called more than once.
func (s *Subscription) Close() {
	s.stopDelivery()
	<-s.finished
}

// deliver is the consumer's callback: decode, check, hand over.
func (s *Subscription) deliver(m jetstream.Msg) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.inflight.Add(1)
	s.mu.Unlock()
	defer s.inflight.Done()
	var ev Event
	if err := json.Unmarshal(m.Data(), &ev); err != nil {
		s.log.Warn("undecodable rollup event; skipped", "subject", m.Subject(), "err", err)
		return
	}
	if !s.sel.Match(ev) {
		if s.sel.Item == "" || ev.Item == s.sel.Item {
			// Not another item's: the body contradicts the subject.
			s.log.Warn("rollup event outside its subject's selection; skipped", "subject", m.Subject(), "kind", ev.Kind, "project", ev.Project)
		}
		return
	}
	select {
	case s.events <- ev:
	case <-s.done:
	}
}

// stopDelivery makes callbacks return at once and refuses new ones.
func (s *Subscription) stopDelivery() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		close(s.done)
	}
}

// shutdown stops consuming, deletes the consumer and closes Events; it
// runs once, in the subscription's goroutine.
func (s *Subscription) shutdown(ctx context.Context) {
	s.once.Do(func() {
		s.stopDelivery()
		s.cc.Stop()
		s.deleteConsumer(ctx)
		s.inflight.Wait()
		close(s.events)
		close(s.finished)
	})
}

// deleteConsumer removes the consumer from the server rather than leaving
// it to expire.
func (s *Subscription) deleteConsumer(ctx context.Context) {
	info := s.cons.CachedInfo()
	if info == nil {
		return
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deleteTimeout)
	defer cancel()
	if err := s.js.DeleteConsumer(dctx, stream.Rollups, info.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		s.log.Debug("delete rollup consumer", "consumer", info.Name, "err", err)
	}
}
