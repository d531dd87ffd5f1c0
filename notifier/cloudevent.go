package notifier

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/alauda/costmeter/internal/event"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/stream"
)

// CloudEvents attributes of a threshold crossing.
const (
	// EventType is the CloudEvents type of every notification.
	EventType = "io.costmeter.threshold.crossed"
	// ContentType is the Content-Type of a webhook request: a CloudEvents
	// 1.0 event in structured JSON mode.
	ContentType = "application/cloudevents+json"
)

// Delivery states.
const (
	StatePending   = "pending"
	StateDelivered = "delivered"
	StateFailed    = "failed"
)

// Data is the data of a notification event. Project, Cluster and
// Namespace are the entity's names; the parts its kind does not have are
// empty strings. Threshold is in the item's unit (for a percent rule
// budget × percent / 100); Budget and Percent are set on percent rules
// only. Usage is the period total when the threshold fired.
type Data struct {
	Rule      string `json:"rule"`
	Kind      string `json:"kind"`
	Project   string `json:"project"`
	Cluster   string `json:"cluster"`
	Namespace string `json:"namespace"`
	// GroupBy and Group are set for a group rule: the label key and value.
	GroupBy     string   `json:"groupBy,omitempty"`
	Group       string   `json:"group,omitempty"`
	Item        string   `json:"item"`
	Method      string   `json:"method"`
	Unit        string   `json:"unit"`
	PeriodStart string   `json:"periodStart"`
	PeriodEnd   string   `json:"periodEnd"`
	Threshold   float64  `json:"threshold"`
	Budget      *float64 `json:"budget,omitempty"`
	Percent     *float64 `json:"percent,omitempty"`
	Usage       float64  `json:"usage"`
}

// CloudEvent is a notification as CloudEvents 1.0 structured JSON.
type CloudEvent struct {
	SpecVersion     string `json:"specversion"`
	Type            string `json:"type"`
	Source          string `json:"source"`
	ID              string `json:"id"`
	Time            string `json:"time"`
	Subject         string `json:"subject"`
	DataContentType string `json:"datacontenttype"`
	Data            Data   `json:"data"`
}

// Notification is one fired (rule, entity, period, threshold).
type Notification struct {
	ID      string
	Rule    string
	Project string
	Subject string // the NATS subject
	Fired   time.Time
	Event   CloudEvent
}

// EventID is the stable id of a crossing: the same rule, entity, period
// and threshold always give the same id, so every delivery attempt and
// every replica agree and receivers can deduplicate.
func EventID(r *Rule, ev *event.Event, first rollup.Day, threshold int64) string {
	sum := sha256.Sum256([]byte(periodID(r, ev, first) + "|" + strconv.FormatInt(threshold, 10)))
	return hex.EncodeToString(sum[:16])
}

// newNotification builds the notification of a crossing.
func newNotification(r *Rule, ev *event.Event, p periodRange, c Crossing) *Notification {
	id := EventID(r, ev, p.first, c.Threshold)
	d := Data{Rule: r.Name, Kind: ev.Kind, Project: ev.Project, Cluster: ev.Cluster, Namespace: ev.Namespace,
		GroupBy: ev.GroupBy, Group: ev.Group, Item: r.Item.String(), Method: r.Method.String(), Unit: event.Unit(r.Item),
		PeriodStart: p.first.String(), PeriodEnd: p.last.String(), Threshold: rollup.Hours(c.Threshold), Usage: rollup.Hours(c.Usage)}
	for _, t := range r.Thresholds {
		if t.Fixed == c.Threshold {
			d.Threshold = t.Value
			if t.Percent != nil {
				b, pc := *r.Budget, *t.Percent
				d.Budget, d.Percent = &b, &pc
			}
		}
	}
	subject := ev.Kind + "/" + ev.Name()
	return &Notification{
		ID: id, Rule: r.Name, Project: ev.Project, Fired: c.Fired, Subject: alertSubject(ev),
		Event: CloudEvent{SpecVersion: "1.0", Type: EventType, Source: "/costmeter/notifier/rules/" + r.Name, ID: id,
			Time: c.Fired.UTC().Format(time.RFC3339Nano), Subject: subject, DataContentType: "application/json", Data: d},
	}
}

// alertSubject is stream.AlertsPrefix and the event's entity tokens
// (event.Event.Entity): cost.alerts.project.<project>,
// cost.alerts.cluster.<cluster> or
// cost.alerts.namespace.<project>.<cluster>.<namespace>.
func alertSubject(ev *event.Event) string { return stream.AlertsPrefix + ev.Entity() }

// Sign returns the Standard Webhooks signature header value of a request:
// "v1," and the base64 HMAC-SHA256, keyed with the secret, of
// "<id>.<timestamp>.<body>".
func Sign(secret []byte, id string, ts time.Time, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	fmt.Fprintf(mac, "%s.%d.", id, ts.Unix())
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Verify checks the Standard Webhooks headers of a request as a receiver
// does: one of the space-separated v1 signatures must match, and the
// timestamp must be within tolerance of now. Tests use it; so can Go
// receivers.
func Verify(secret []byte, id, timestamp, signatures string, body []byte, now time.Time, tolerance time.Duration) error {
	sec, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("webhook-timestamp %q is not unix seconds", timestamp)
	}
	ts := time.Unix(sec, 0)
	if d := now.Sub(ts); d > tolerance || d < -tolerance {
		return fmt.Errorf("webhook-timestamp %s is %s from now", ts.UTC().Format(time.RFC3339), d)
	}
	want := Sign(secret, id, ts, body)
	for _, s := range strings.Fields(signatures) {
		if hmac.Equal([]byte(s), []byte(want)) {
			return nil
		}
	}
	return fmt.Errorf("no webhook-signature matches")
}

// ParseSecret decodes a whsec_<base64> secret.
func ParseSecret(s string) ([]byte, error) {
	return readSecret("secret", func(string) ([]byte, error) { return []byte(s), nil })
}

func marshalEvent(ce CloudEvent) []byte {
	b, _ := json.Marshal(ce)
	return b
}
