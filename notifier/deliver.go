package notifier

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/alauda/costmeter/internal/jsworker"
)

// Delivery outcomes, the outcome attribute of cost.notifier.deliveries.
const (
	OutcomeDelivered = "delivered"
	OutcomeRetry     = "retry"
	OutcomeFailed    = "failed"
)

// claimBatch is how many due deliveries one claim takes.
const claimBatch = 32

// deliverLoop claims due deliveries and attempts them until ctx ends.
func (n *Notifier) deliverLoop(ctx context.Context) {
	for ctx.Err() == nil {
		ids, err := n.store.claim(ctx, n.now(), claimBatch, n.cfg.Delivery.Lease)
		if err != nil {
			if ctx.Err() == nil {
				n.log.WarnContext(ctx, "claim deliveries", "err", err)
				jsworker.Pause(ctx, time.Second)
			}
			continue
		}
		n.attemptAll(ctx, ids)
		if len(ids) == claimBatch {
			continue
		}
		wait := n.cfg.Delivery.Poll
		if due, ok, err := n.store.nextDue(ctx); err == nil && ok {
			if d := due.Sub(n.now()); d < wait {
				wait = max(d, 0)
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-n.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// attemptAll attempts ids, at most Concurrency at once.
func (n *Notifier) attemptAll(ctx context.Context, ids []string) {
	sem := make(chan struct{}, n.cfg.Delivery.Concurrency)
	var wg sync.WaitGroup
	for _, id := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := n.deliver(ctx, id); err != nil && ctx.Err() == nil {
				n.log.WarnContext(ctx, "deliver notification", "id", id, "err", err)
			}
		})
	}
	wg.Wait()
}

// deliver makes one attempt of a claimed delivery and records it.
func (n *Notifier) deliver(ctx context.Context, id string) error {
	s, ok, err := n.store.load(ctx, id)
	if err != nil {
		return err
	}
	bg := context.WithoutCancel(ctx)
	if !ok || s.State != StatePending {
		return n.store.finish(bg, id, "", "", n.now())
	}
	r, ok := n.rules.Current().Rule(s.Rule)
	if !ok {
		n.deliveries.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", OutcomeFailed)))
		return n.store.finish(bg, id, StateFailed, fmt.Sprintf("rule %q is no longer in the rules file", s.Rule), n.now())
	}
	status, postErr := n.post(ctx, r, id, s.Event)
	now := n.now()
	if ctx.Err() != nil {
		// Shutting down: not an attempt. Due again at once, for whichever
		// replica runs next.
		return n.store.requeue(bg, id, now)
	}
	if postErr == nil {
		n.deliveries.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", OutcomeDelivered)))
		n.latency.Record(ctx, now.Sub(s.Fired).Seconds())
		n.log.InfoContext(ctx, "notification delivered", "id", id, "rule", s.Rule, "status", status, "attempts", s.Attempts+1)
		return n.store.attempt(bg, id, StateDelivered, status, "", now, time.Time{})
	}
	next := now.Add(n.retryAfter(s.Attempts + 1))
	if next.Sub(s.Fired) > n.cfg.Delivery.MaxAge {
		n.deliveries.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", OutcomeFailed)))
		n.log.ErrorContext(ctx, "notification not delivered; giving up", "id", id, "rule", s.Rule, "attempts", s.Attempts+1, "err", postErr)
		return n.store.attempt(bg, id, StateFailed, status, postErr.Error(), now, time.Time{})
	}
	n.deliveries.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", OutcomeRetry)))
	n.log.WarnContext(ctx, "notification not delivered; will retry", "id", id, "rule", s.Rule, "attempts", s.Attempts+1, "retry_at", next, "err", postErr)
	return n.store.attempt(bg, id, StatePending, status, postErr.Error(), now, next)
}

// retryAfter is the wait after the attempt-th failed attempt: exponential
// backoff (doubling from RetryInitial up to RetryMaxInterval, ±20%
// jitter). It is derived from the attempt count kept in Redis, so a
// restarted notifier continues the same schedule.
func (n *Notifier) retryAfter(attempt int) time.Duration {
	b := &backoff.ExponentialBackOff{
		InitialInterval:     n.cfg.Delivery.RetryInitial,
		RandomizationFactor: 0.2,
		Multiplier:          2,
		MaxInterval:         n.cfg.Delivery.RetryMaxInterval,
		MaxElapsedTime:      0, // MaxAge is enforced from the firing time instead
		Stop:                backoff.Stop,
		Clock:               backoff.SystemClock,
	}
	b.Reset()
	d := b.InitialInterval
	for range min(attempt, 64) {
		d = b.NextBackOff()
	}
	return d
}

// post sends the event to the rule's webhook, signed. A 2xx answer is a
// delivery; anything else (another status, no answer) is an error, with
// the status when there was one.
func (n *Notifier) post(ctx context.Context, r *Rule, id string, body []byte) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.Delivery.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.Webhook, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("build request: %w", err)
	}
	ts := n.now()
	req.Header.Set("Content-Type", ContentType)
	req.Header.Set("User-Agent", "costmeter-notifier")
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
	req.Header.Set("webhook-signature", Sign(r.Secret, id, ts, body))
	resp, err := n.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // drop the method and URL: the URL may hold a token
		}
		return 0, fmt.Errorf("post: %w", err)
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	if resp.StatusCode/100 != 2 {
		msg := fmt.Sprintf("receiver answered %d", resp.StatusCode)
		if len(bytes.TrimSpace(snippet)) > 0 {
			msg += ": " + string(bytes.TrimSpace(snippet))
		}
		return resp.StatusCode, errors.New(msg)
	}
	return resp.StatusCode, nil
}
