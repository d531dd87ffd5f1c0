package collector

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Why a message is refused for good: the value of the reason label of the
// rejected-batches metrics and the "reason:" line of a rejected batch's
// sidecar in the spool.
const (
	// RefusedMaxPayload: larger than the max_payload the NATS server
	// announced (1 MiB by default); the client refuses it before sending.
	RefusedMaxPayload = "max_payload"
	// RefusedMaxMsgSize: larger than the stream's max_msg_size (JetStream
	// API error 10054, JSStreamMessageExceedsMaximumErr).
	RefusedMaxMsgSize = "max_msg_size"
	// RefusedNoStream: no stream stores the subject.
	RefusedNoStream = "no_stream"
	// RefusedWrongStream: the subject is stored by a stream other than
	// COST_SAMPLES (API error 10060, JSStreamNotMatchErr: messages are
	// published with Nats-Expected-Stream).
	RefusedWrongStream = "wrong_stream"
)

// JetStream API error codes (nats-server's server/errors.json) that refuse
// a message for good; nats.go's jetstream package names only the first.
const (
	errCodeMessageExceedsMaximum = jetstream.JSErrCodeStreamMessageExceedsMaximum // 10054
	errCodeStreamNotMatch        = jetstream.ErrorCode(10060)
)

// lookupTimeout bounds the JetStream API request that tells a missing
// stream from a JetStream that is not answering.
const lookupTimeout = 5 * time.Second

// refusals classifies publish errors for one round of a Relay. It caches
// the stream look-up per subject, so a round of refused messages to one
// subject asks the JetStream API once.
type refusals struct {
	js      jetstream.JetStream
	streams map[string]string // subject → reason, "" when not refused for good
}

func newRefusals(js jetstream.JetStream) *refusals {
	return &refusals{js: js, streams: map[string]string{}}
}

// reason tells whether err, the outcome of publishing a message to subject,
// is a refusal for good: it returns the reason (one of the Refused*
// constants), or "" when the message should be retried as it is.
//
// Refused for good, because the same bytes will get the same answer until
// an operator changes something:
//
//   - nats.ErrMaxPayload: the client refuses a message larger than the
//     server's max_payload before sending it (all servers of a cluster
//     should share that setting; a client that reconnects to a server with
//     a larger one would have sent it).
//   - API error 10054 (message size exceeds maximum allowed): the stream's
//     max_msg_size.
//   - API error 10060 (expected stream does not match): the subject belongs
//     to another stream.
//   - No responders (jetstream.ErrNoStreamResponse after the client's own
//     retries, or nats.ErrNoResponders), but only when the JetStream API,
//     asked which stream stores the subject, answers "none"
//     (jetstream.ErrStreamNotFound). No responders alone is ambiguous: it
//     is also the answer while a server starts, while JetStream is
//     disabled or not yet enabled, or while a replicated stream elects a
//     leader. In all of those the API answers with a stream name, an error
//     (JetStream not enabled, cluster not available) or not at all, and the
//     message stays queued.
//
// Everything else is retried: timeouts, a lost connection, "insufficient
// resources", limits of a stream with the discard-new policy, any other
// API error.
func (r *refusals) reason(ctx context.Context, subject string, err error) string {
	var apiErr *jetstream.APIError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, nats.ErrMaxPayload):
		return RefusedMaxPayload
	case errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeMessageExceedsMaximum:
		return RefusedMaxMsgSize
	case errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeStreamNotMatch:
		return RefusedWrongStream
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		if reason, ok := r.streams[subject]; ok {
			return reason
		}
		lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
		defer cancel()
		reason := ""
		if _, err := r.js.StreamNameBySubject(lctx, subject); errors.Is(err, jetstream.ErrStreamNotFound) {
			reason = RefusedNoStream
		}
		r.streams[subject] = reason
		return reason
	}
	return ""
}
