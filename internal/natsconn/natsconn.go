// Package natsconn connects to NATS the same way in every binary: retrying
// until the server answers, reconnecting forever, and draining on close.
package natsconn

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alauda/costmeter/internal/config"
)

// Connect opens a connection named name. It returns at once; while the
// server is unreachable the client keeps trying in the background and
// buffers publishes.
func Connect(url, name string, log *slog.Logger, opts ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	base := []nats.Option{
		nats.Name(name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.ReconnectBufSize(64 << 20),
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
