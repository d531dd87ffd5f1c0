package notifier

import (
	"context"
	"encoding/json"
	"time"

	"github.com/redis/go-redis/v9"
)

// Delivery is the delivery state of a notification.
type Delivery struct {
	// State is pending (not delivered yet, retrying), delivered or failed
	// (given up after the maximum age, or its rule was removed).
	State string `json:"state"`
	// Attempts is how many webhook attempts were made.
	Attempts int `json:"attempts"`
	// StatusCode is the receiver's status of the last attempt (0 when it
	// did not answer).
	StatusCode int `json:"statusCode"`
	// LastError is why the last attempt failed ("" after a delivery).
	LastError string `json:"lastError"`
	// UpdatedAt is when the state last changed (RFC 3339).
	UpdatedAt string `json:"updatedAt"`
}

// Listed is one notification as the API lists it: the CloudEvent that was
// (or is being) delivered and its delivery state.
type Listed struct {
	Event    json.RawMessage `json:"event"`
	Delivery Delivery        `json:"delivery"`
}

// Log reads the notifications the notifiers recorded, for the API.
type Log struct{ s *store }

// NewLog reads notifications from rdb.
func NewLog(rdb redis.UniversalClient) *Log { return &Log{s: &store{rdb: rdb}} }

// List returns a page of notifications, newest first, and how many there
// are: every one (project "") or those of one project (its own, and its
// namespaces'; cluster notifications belong to no project).
func (l *Log) List(ctx context.Context, project string, offset, limit int) ([]Listed, int, error) {
	rows, total, err := l.s.list(ctx, project, offset, limit)
	if err != nil {
		return nil, 0, err
	}
	out := make([]Listed, 0, len(rows))
	for _, r := range rows {
		out = append(out, Listed{Event: json.RawMessage(r.Event), Delivery: Delivery{State: r.State, Attempts: r.Attempts,
			StatusCode: r.Status, LastError: r.Error, UpdatedAt: r.Updated.UTC().Format(time.RFC3339Nano)}})
	}
	return out, total, nil
}
