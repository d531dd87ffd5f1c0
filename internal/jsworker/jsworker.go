// Package jsworker runs a durable JetStream pull consumer the way every
// consuming component of the pipeline does: create the streams and the
// consumer (retried with backoff until they exist or the context ends),
// then fetch batches in one or more loops, finish each batch (apply and
// acknowledge) or fail it (negative acknowledgement, redelivered later),
// and report whether it runs (readiness). The aggregator and the notifier
// differ only in what a batch is and how it is finished.
package jsworker

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alauda/costmeter/internal/natsconn"
)

// DefaultFinishTimeout bounds the finishing of one batch.
const DefaultFinishTimeout = 30 * time.Second

// NoTimeout as Spec.FinishTimeout leaves Finish unbounded (it bounds its
// own steps).
const NoTimeout time.Duration = -1

// retryPause is the wait after a failed fetch or a failed batch, so that
// a broken server or store is not hammered.
const retryPause = time.Second

// Spec says what a Worker consumes and how it handles a batch B.
type Spec[B any] struct {
	// What names the messages in logs ("samples", "rollup events").
	What string
	// Ensure creates the streams and the consumer and returns it; it is
	// retried until it succeeds or the context ends.
	Ensure func(ctx context.Context) (jetstream.Consumer, error)
	// Fetchers is how many fetch loops run at once (default 1).
	Fetchers int
	// Fetch returns the next batch; ok is false when no message came.
	Fetch func(ctx context.Context, cons jetstream.Consumer) (b B, ok bool, err error)
	// Finish handles and acknowledges a batch. It runs on a context that
	// shutdown does not cancel (the batch in hand is finished: it was
	// delivered to us, and finishing it saves a redelivery), bounded by
	// FinishTimeout.
	Finish func(ctx context.Context, b B) error
	// Fail is called with Finish's error: log it and Nak the batch's
	// messages. The loop then pauses a second.
	Fail func(ctx context.Context, b B, err error)
	// FinishTimeout bounds Finish (0: DefaultFinishTimeout; NoTimeout:
	// unbounded).
	FinishTimeout time.Duration
	// Beside are loops that run next to the fetch loops, as long as they
	// do, with the consumer (healing, lag, deliveries).
	Beside []func(ctx context.Context, cons jetstream.Consumer)
}

// Worker runs one Spec. Its zero value is not usable: build it with New.
type Worker[B any] struct {
	spec    Spec[B]
	log     *slog.Logger
	running atomic.Bool
}

// New checks spec and returns its Worker, logging to log.
func New[B any](spec Spec[B], log *slog.Logger) (*Worker[B], error) {
	if spec.Ensure == nil || spec.Fetch == nil || spec.Finish == nil || spec.Fail == nil {
		return nil, errors.New("jsworker: Ensure, Fetch, Finish and Fail are required")
	}
	if spec.Fetchers < 1 {
		spec.Fetchers = 1
	}
	if spec.FinishTimeout == 0 {
		spec.FinishTimeout = DefaultFinishTimeout
	}
	return &Worker[B]{spec: spec, log: log}, nil
}

// Running reports whether the fetch loops run (readiness).
func (w *Worker[B]) Running() bool { return w.running.Load() }

// Run creates the consumer, then fetches and finishes batches until ctx
// ends; it finishes the batches in hand and returns nil then. It returns
// an error only when it cannot start.
func (w *Worker[B]) Run(ctx context.Context) error {
	var cons jetstream.Consumer
	err := natsconn.Retry(ctx, w.log, "create "+w.spec.What+" consumer", func(ctx context.Context) error {
		c, err := w.spec.Ensure(ctx)
		cons = c
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	w.running.Store(true)
	defer w.running.Store(false)
	var wg sync.WaitGroup
	for range w.spec.Fetchers {
		wg.Go(func() { w.loop(ctx, cons) })
	}
	for _, f := range w.spec.Beside {
		wg.Go(func() { f(ctx, cons) })
	}
	wg.Wait()
	return nil
}

func (w *Worker[B]) loop(ctx context.Context, cons jetstream.Consumer) {
	for ctx.Err() == nil {
		b, ok, err := w.spec.Fetch(ctx, cons)
		if err != nil {
			w.log.WarnContext(ctx, "fetch "+w.spec.What, "err", err)
			Pause(ctx, retryPause)
			continue
		}
		if !ok {
			continue
		}
		fctx, cancel := context.WithoutCancel(ctx), context.CancelFunc(func() {})
		if w.spec.FinishTimeout > 0 {
			fctx, cancel = context.WithTimeout(fctx, w.spec.FinishTimeout)
		}
		err = w.spec.Finish(fctx, b)
		cancel()
		if err != nil {
			// Not acknowledged: JetStream redelivers; every finish is
			// idempotent.
			w.spec.Fail(ctx, b, err)
			Pause(ctx, retryPause)
		}
	}
}

// Pause waits d or until ctx ends.
func Pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
