// Package natsconn connects to NATS the same way in every binary: retrying
// until the server answers, reconnecting forever, and draining on close.
package natsconn

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alauda/costmeter/internal/config"
)

// Reconnect backoff: after every server of the list (and those the
// cluster announced) failed once, the client waits ReconnectBase, doubling
// per round up to ReconnectMax, plus up to a quarter of that at random so
// that many clients do not come back in step. A single server that
// restarts is found again within ReconnectBase; a cluster that lost one
// node is not waited for at all, since the next server in the list is
// tried at once.
const (
	ReconnectBase = 250 * time.Millisecond
	ReconnectMax  = 5 * time.Second
)

// ReconnectBufSize bounds what is buffered while disconnected: publishes
// made then are sent after the reconnect, and one that would overflow it
// fails at once (the publisher retries it with the same Nats-Msg-Id).
const ReconnectBufSize = 64 << 20

// ReconnectDelay is the wait before the round-th pass over the server
// list (round counts from 1), without its jitter.
func ReconnectDelay(round int) time.Duration {
	d := ReconnectBase
	for i := 1; i < round && d < ReconnectMax; i++ {
		d *= 2
	}
	return min(d, ReconnectMax)
}

// Connect opens a connection named name to url, one server or a
// comma-separated list of them ("nats://a:4222,nats://b:4222", the nats.go
// convention; each may carry its user and password). It returns at once;
// while no server is reachable the client keeps trying in the background,
// forever, with ReconnectDelay between rounds, and buffers publishes (up to
// ReconnectBufSize). When the server it uses goes away it moves to another
// one of the list; a JetStream publish whose acknowledgement was lost on
// the way is retried by its caller with the same Nats-Msg-Id, which the
// stream deduplicates.
func Connect(url, name string, log *slog.Logger, opts ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	base := []nats.Option{
		nats.Name(name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(func(round int) time.Duration {
			d := ReconnectDelay(round)
			return d + rand.N(d/4+1)
		}),
		nats.ReconnectBufSize(ReconnectBufSize),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("nats reconnected", "url", c.ConnectedUrlRedacted()) }),
	}
	nc, err := nats.Connect(url, append(base, opts...)...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to nats %s: %w", redact(url), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("open jetstream: %w", err)
	}
	return nc, js, nil
}

// Drain unsubscribes, flushes what nc still has to send (acknowledgements
// included) and closes it, waiting at most timeout. nats.Conn.Drain alone
// returns at once: a process exiting right after it cuts the flush short.
func Drain(nc *nats.Conn, timeout time.Duration) {
	if nc.IsClosed() {
		return
	}
	if err := nc.Drain(); err != nil {
		nc.Close()
		return
	}
	deadline := time.Now().Add(timeout)
	for !nc.IsClosed() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	nc.Close()
}

// Retry runs op with jittered, capped exponential backoff until it
// succeeds or ctx ends; what for names the operation in logs.
func Retry(ctx context.Context, log *slog.Logger, what string, op func(context.Context) error) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 200 * time.Millisecond
	b.MaxInterval = 5 * time.Second
	b.MaxElapsedTime = 0
	return backoff.RetryNotify(func() error {
		octx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return op(octx)
	}, backoff.WithContext(b, ctx), func(err error, d time.Duration) {
		log.Warn(what+" failed; retrying", "retry_in", d.Round(time.Millisecond), "err", err)
	})
}

// redact hides credentials in a URL (or list of URLs) before it reaches a
// log or an error.
func redact(url string) string { return config.RedactURL(url) }
