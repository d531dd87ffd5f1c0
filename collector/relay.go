package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/alauda/costmeter/collector/spool"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/stream"
)

// SpoolWriter stores batches durably before they are published.
type SpoolWriter interface {
	Append(ctx context.Context, entries []spool.Entry) error
}

// SpoolReader hands out the oldest stored batches, forgets the ones
// JetStream acknowledged and moves aside the ones it refused for good;
// Ready signals that batches were added.
type SpoolReader interface {
	Oldest(ctx context.Context, n int) ([]spool.Entry, error)
	Remove(seqs ...uint64) error
	Reject(ctx context.Context, e spool.Entry, reason string, cause error) error
	Ready() <-chan struct{}
}

// SpoolSize tells how many bytes wait in the spool.
type SpoolSize interface {
	Bytes() int64
}

// Spool is what a Relay needs of collector/spool.Spool.
type Spool interface {
	SpoolWriter
	SpoolReader
	SpoolSize
}

// Relay defaults.
const (
	// DefaultWindow is how many messages a Relay keeps in flight: enough to
	// hide the round trip, few enough that an outage buffers little in the
	// NATS client.
	DefaultWindow = 32
	// DefaultMaxBackoff caps the wait between two publishing attempts.
	DefaultMaxBackoff = 30 * time.Second
)

// RelayConfig tunes a Relay.
type RelayConfig struct {
	// Window is the most messages in flight at once (default DefaultWindow).
	Window int
	// MaxBackoff caps the jittered wait between attempts while NATS is
	// unreachable or refuses messages (default DefaultMaxBackoff).
	MaxBackoff time.Duration
	// Streams, when set, are created before the first publish if they do
	// not exist (an existing stream is left as the aggregators configured
	// it); until NATS answers, batches only pile up in the spool.
	Streams *stream.Config
	// HighWater, when positive, makes Emit wait while the spool holds more
	// bytes than this and NATS is connected: a source that produces faster
	// than JetStream takes (a simulation's backfill) is slowed down instead
	// of pushing its own oldest batches out of the spool. While NATS is
	// away Emit never waits. Leave it 0 for a source that must keep time
	// (kubernetes).
	HighWater int64
}

// Relay is the publishing path of the long-running sources (kubernetes,
// simulate): Emit puts each batch into the spool, and only there; Run
// moves batches from the spool to JetStream, oldest first, and removes each
// once JetStream acknowledged it. A source is therefore never held up by
// NATS: during an outage batches pile up on disk, bounded by the spool, and
// are published in order when NATS is back; after kill -9 the next run
// replays them. Re-published batches keep their content-hash Nats-Msg-Id,
// so JetStream drops the copies that did arrive before.
//
// Backpressure is the window: at most Window messages are in flight, and
// the next ones are read from the spool only after every message of the
// window was acknowledged or given up for this round. Failed rounds are
// retried with jittered exponential backoff capped at MaxBackoff, and no
// message is handed to a disconnected NATS client (it would only fill its
// reconnect buffer with copies).
//
// A batch JetStream refuses for good (see refusals.reason for which
// answers are final: too large for the server or the stream, no stream
// for its subject) is not retried: the spool moves it to its rejected/
// directory with the reason (spool.Spool.Reject, which logs it once and
// counts it), and the relay goes on with the next batches. Every other
// failure keeps the batch queued and is retried.
//
// Traces start when the relay publishes a batch, not when the source
// emitted it: the spool stores the message body and id only (format
// CSPOOL1 is unchanged), and a span cannot outlive the process anyway,
// while a batch may wait in the spool across restarts or for hours of a
// NATS outage. So a trace shows publish → apply → events; the time a batch
// spent in the spool is the spool gauges' business.
type Relay struct {
	pub     *Publisher
	sp      Spool
	cfg     RelayConfig
	log     *slog.Logger
	drained chan struct{} // signalled when published batches left the spool
}

// NewRelay returns a Relay publishing with pub from sp.
func NewRelay(pub *Publisher, sp Spool, cfg RelayConfig, log *slog.Logger) (*Relay, error) {
	if pub == nil || sp == nil {
		return nil, errors.New("relay: publisher and spool are required")
	}
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if log == nil {
		log = slog.Default()
	}
	return &Relay{pub: pub, sp: sp, cfg: cfg, log: log.With("component", "relay"), drained: make(chan struct{}, 1)}, nil
}

// Emit encodes samples into messages and spools them; it returns once they
// are on disk (fsynced), not once they are published. It is an Emit for
// the sources.
func (r *Relay) Emit(ctx context.Context, samples []sample.Sample) error {
	if err := r.throttle(ctx); err != nil {
		return fmt.Errorf("spool %d samples: %w", len(samples), err)
	}
	msgs := r.pub.Encode(samples)
	entries := make([]spool.Entry, len(msgs))
	for i, m := range msgs {
		entries[i] = spool.Entry{Subject: m.Subject, ID: m.ID, Samples: m.Samples, Data: m.Data}
	}
	if err := r.sp.Append(ctx, entries); err != nil {
		return fmt.Errorf("spool %d samples: %w", len(samples), err)
	}
	return nil
}

// throttle waits while the spool is above the high-water mark and NATS is
// connected (so that waiting ends soon); it re-checks every second, when
// the connection may have changed.
func (r *Relay) throttle(ctx context.Context) error {
	for r.cfg.HighWater > 0 && r.sp.Bytes() > r.cfg.HighWater && r.pub.js.Conn().IsConnected() {
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-r.drained:
		case <-t.C:
		}
		t.Stop()
	}
	return nil
}

// Run publishes spooled batches until ctx ends, then returns nil; what was
// not acknowledged stays in the spool. It returns an error only when the
// spool cannot be read.
func (r *Relay) Run(ctx context.Context) error {
	if r.cfg.Streams != nil {
		cfg := *r.cfg.Streams
		if err := natsconn.Retry(ctx, r.log, "create streams", func(ctx context.Context) error {
			return stream.Ensure(ctx, r.pub.js, cfg, stream.CreateOnly(), stream.WithLogger(r.log))
		}); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	b := r.backoff()
	failing := false
	for ctx.Err() == nil {
		entries, err := r.sp.Oldest(ctx, r.cfg.Window)
		if err != nil {
			return fmt.Errorf("read spool: %w", err)
		}
		if len(entries) == 0 {
			select {
			case <-ctx.Done():
			case <-r.sp.Ready():
			}
			continue
		}
		if !r.pub.js.Conn().IsConnected() {
			if !r.wait(ctx, b, len(entries), errors.New("nats is not connected")) {
				return nil
			}
			failing = true
			continue
		}
		msgs := make([]Message, len(entries))
		for i, e := range entries {
			msgs[i] = Message{Subject: e.Subject, ID: e.ID, Data: e.Data, Samples: e.Samples}
		}
		var (
			acked    = make([]uint64, 0, len(entries))
			samples  int
			rejected int
			lastErr  error
			refused  = newRefusals(r.pub.js)
		)
		for i, err := range r.pub.Send(ctx, msgs) {
			if err == nil {
				acked = append(acked, entries[i].Seq)
				samples += entries[i].Samples
				continue
			}
			reason := refused.reason(ctx, entries[i].Subject, err)
			if reason == "" {
				lastErr = err
				continue
			}
			if rerr := r.sp.Reject(ctx, entries[i], reason, err); rerr != nil {
				// Still queued: refused again next round, moved then.
				lastErr = rerr
				continue
			}
			rejected++
		}
		if err := r.sp.Remove(acked...); err != nil {
			// Acknowledged but still on disk: a later run publishes them
			// again and JetStream deduplicates them.
			r.log.WarnContext(ctx, "remove published batches from the spool", "err", err)
		}
		if len(acked) > 0 {
			r.log.DebugContext(ctx, "published spooled batches", "batches", len(acked), "samples", samples)
		}
		if len(acked) > 0 || rejected > 0 {
			select {
			case r.drained <- struct{}{}:
			default:
			}
		}
		if lastErr == nil {
			if failing {
				r.log.InfoContext(ctx, "publishing again")
				failing = false
			}
			b.Reset()
			continue
		}
		failing = true
		if !r.wait(ctx, b, len(entries)-len(acked)-rejected, lastErr) {
			return nil
		}
	}
	return nil
}

// wait sleeps for the next backoff interval; it reports false when ctx
// ended first.
func (r *Relay) wait(ctx context.Context, b backoff.BackOff, pending int, cause error) bool {
	d := b.NextBackOff()
	r.log.WarnContext(ctx, "publish spooled batches failed; retrying", "batches", pending, "retry_in", d.Round(time.Millisecond), "err", cause)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (r *Relay) backoff() backoff.BackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = min(200*time.Millisecond, r.cfg.MaxBackoff)
	b.MaxInterval = r.cfg.MaxBackoff
	b.RandomizationFactor = 0.5
	b.MaxElapsedTime = 0
	b.Reset()
	return b
}
