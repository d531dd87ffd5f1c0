package notifier_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/alauda/costmeter/internal/event"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/pipelinetest"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/testenv"
	"github.com/alauda/costmeter/notifier"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The NATS client's and server's background goroutines that outlive
		// a closed connection for a moment.
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go.(*Conn).processMsgs"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

// receiver is the webhook receiver of the tests: it verifies every
// request's Standard Webhooks signature, content type and CloudEvent shape,
// and counts attempts and deliveries per event id. It listens on a port
// reserved up front, so that before up() a delivery meets "connection
// refused".
type receiver struct {
	t      *testing.T
	secret []byte
	port   int

	mu        sync.Mutex
	status    int // what it answers
	srv       *http.Server
	attempts  map[string]int // every request, by webhook-id
	delivered map[string]int // requests answered 2xx, by webhook-id
	events    map[string]notifier.CloudEvent
	problems  []string
}

func newReceiver(t *testing.T, secret string) *receiver {
	key, err := notifier.ParseSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{t: t, secret: key, port: testenv.FreePort(t), status: http.StatusNoContent,
		attempts: map[string]int{}, delivered: map[string]int{}, events: map[string]notifier.CloudEvent{}}
	t.Cleanup(r.down)
	return r
}

func (r *receiver) url() string { return "http://127.0.0.1:" + strconv.Itoa(r.port) + "/hook" }

// up starts listening (idempotent).
func (r *receiver) up() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srv != nil {
		return
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(r.port))
	if err != nil {
		r.t.Fatalf("receiver listen: %v", err)
	}
	r.srv = &http.Server{Handler: http.HandlerFunc(r.serve), ReadHeaderTimeout: 5 * time.Second}
	srv := r.srv
	go func() { _ = srv.Serve(ln) }()
}

// down stops listening.
func (r *receiver) down() {
	r.mu.Lock()
	srv := r.srv
	r.srv = nil
	r.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

func (r *receiver) answer(status int) {
	r.mu.Lock()
	r.status = status
	r.mu.Unlock()
}

// dataFields are exactly the fields the issue gives the data of an event.
// (groupBy and group on group rules only).
var dataFields = []string{"rule", "kind", "project", "cluster", "namespace", "groupBy", "group", "item", "method", "unit", "periodStart", "periodEnd", "threshold", "budget", "percent", "usage"}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	id := req.Header.Get("webhook-id")
	problem := func(format string, args ...any) {
		r.mu.Lock()
		r.problems = append(r.problems, fmt.Sprintf("%s: ", id)+fmt.Sprintf(format, args...))
		r.mu.Unlock()
		w.WriteHeader(http.StatusBadRequest)
	}
	if ct := req.Header.Get("Content-Type"); ct != notifier.ContentType {
		problem("content type %q", ct)
		return
	}
	if err := notifier.Verify(r.secret, id, req.Header.Get("webhook-timestamp"), req.Header.Get("webhook-signature"), body, time.Now(), 5*time.Minute); err != nil {
		problem("signature: %v", err)
		return
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		problem("body: %v", err)
		return
	}
	var keys []string
	for k := range raw {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"data", "datacontenttype", "id", "source", "specversion", "subject", "time", "type"}; !slices.Equal(keys, want) {
		problem("attributes %v, want %v", keys, want)
		return
	}
	var data map[string]any
	_ = json.Unmarshal(raw["data"], &data)
	for k := range data {
		if !slices.Contains(dataFields, k) {
			problem("data field %q is not one of %v", k, dataFields)
			return
		}
	}
	var ce notifier.CloudEvent
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ce); err != nil {
		problem("decode: %v", err)
		return
	}
	if ce.ID != id || ce.SpecVersion != "1.0" || ce.Type != "io.costmeter.threshold.crossed" || ce.DataContentType != "application/json" {
		problem("attributes: %+v", ce)
		return
	}
	_, hasBudget := data["budget"]
	_, hasPercent := data["percent"]
	if hasBudget != hasPercent || hasBudget != (ce.Data.Budget != nil) {
		problem("budget and percent: %s", raw["data"])
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts[id]++
	if prev, ok := r.events[id]; ok && prev != ce {
		r.problems = append(r.problems, fmt.Sprintf("%s: a later attempt carries another event: %+v then %+v", id, prev, ce))
	}
	r.events[id] = ce
	if r.status/100 == 2 {
		r.delivered[id]++
	}
	w.WriteHeader(r.status)
}

// snapshot returns deliveries per id, events by id and problems.
func (r *receiver) snapshot() (map[string]int, map[string]notifier.CloudEvent, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := make(map[string]int, len(r.delivered))
	for k, v := range r.delivered {
		d[k] = v
	}
	e := make(map[string]notifier.CloudEvent, len(r.events))
	for k, v := range r.events {
		if r.delivered[k] > 0 {
			e[k] = v
		}
	}
	return d, e, slices.Clone(r.problems)
}

func (r *receiver) attemptsOf(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.attempts[id]
}

// env is NATS, Redis, a rules file and a receiver.
type env struct {
	t      *testing.T
	nats   *testenv.NATS
	nc     *nats.Conn
	js     jetstream.JetStream
	rdb    redis.UniversalClient
	dir    string
	rules  string // the rules file
	secret string // the secret file
	recv   *receiver
	log    *slog.Logger
}

func newEnv(t *testing.T) *env {
	t.Helper()
	r := testenv.StartRedis(t)
	return newEnvWith(t, r.Client())
}

// newEnvWith is newEnv over the Redis (or Redis Cluster) of rdb.
func newEnvWith(t *testing.T, rdb redis.UniversalClient) *env {
	t.Helper()
	e := &env{t: t, nats: testenv.StartNATS(t), rdb: rdb, dir: t.TempDir(), log: slog.New(slog.DiscardHandler)}
	if testing.Verbose() {
		e.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	nc, js, err := natsconn.Connect(e.nats.URL(), "notifier-test", e.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	e.nc, e.js = nc, js
	e.secret = filepath.Join(e.dir, "secret")
	writeFile(t, e.secret, testSecret)
	e.rules = filepath.Join(e.dir, "rules.yaml")
	e.recv = newReceiver(t, testSecret)
	if err := stream.EnsureRollups(context.Background(), js, stream.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	return e
}

// writeRules writes rules, one flow-style YAML mapping each, adding the
// receiver's webhook and the secret file.
func (e *env) writeRules(rules ...string) {
	var b strings.Builder
	b.WriteString("rules:\n")
	for _, r := range rules {
		fmt.Fprintf(&b, "- {%s, webhook: %q, secretFile: %q}\n", r, e.recv.url(), e.secret)
	}
	writeFile(e.t, e.rules, b.String())
}

func testConfig(consumer string) notifier.Config {
	cfg := notifier.DefaultConfig()
	cfg.Consumer = consumer
	// The tests' days are fixed dates, some long past: period state must
	// not expire on them.
	cfg.Retention = 20 * 365 * 24 * time.Hour
	cfg.RulesPoll = 20 * time.Millisecond
	cfg.Delivery.RetryInitial = 20 * time.Millisecond
	cfg.Delivery.RetryMaxInterval = 100 * time.Millisecond
	cfg.Delivery.Poll = 20 * time.Millisecond
	cfg.Delivery.Timeout = 2 * time.Second
	cfg.Delivery.Lease = 5 * time.Second
	return cfg
}

// start runs a notifier with cfg until the returned stop (or the test's
// end).
func (e *env) start(cfg notifier.Config, opts ...notifier.Option) (*notifier.Notifier, func()) {
	e.t.Helper()
	rules, err := notifier.LoadRules(e.rules, cfg.RulesPoll, e.log)
	if err != nil {
		e.t.Fatal(err)
	}
	n, err := notifier.New(cfg, e.js, e.nc, e.rdb, rules, append([]notifier.Option{notifier.WithLogger(e.log)}, opts...)...)
	if err != nil {
		e.t.Fatal(err)
	}
	return n, pipelinetest.Start(e.t, n)
}

// fixed is h unit-hours in fixed point.
func fixed(h float64) int64 { return int64(h * rollup.Scale * rollup.UnitSecondsPerHour) }

// publishEvent publishes the aggregator's event of one entity, day and
// item with the given fixed-point totals (usage, request, effective,
// quota), as the aggregator does: subject, body and Nats-Msg-Id. Without
// dedupe the header is left out, as an aggregator publishing the same
// totals again after JetStream's deduplication window.
func (e *env) publishEvent(kind rollup.Scope, ent rollup.Entity, day rollup.Day, it rollup.Item, f event.Fixed, dedupe bool) event.Event {
	e.t.Helper()
	var v rollup.Values
	v[rollup.Field(it, rollup.Usage)] = f.Usage
	v[rollup.Field(it, rollup.Request)] = f.Request
	v[rollup.Field(it, rollup.Effective)] = f.Effective
	v[rollup.Field(it, rollup.ProjectQuota)] = f.ProjectQuota
	ev := event.New(rollup.Change{Scope: kind, Day: day, Member: ent.Member(kind), Values: v}, it)
	msg := nats.NewMsg(ev.Subject())
	msg.Data = ev.Marshal()
	if dedupe {
		msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.js.PublishMsg(ctx, msg); err != nil {
		e.t.Fatalf("publish event: %v", err)
	}
	return ev
}

// drained waits until the consumer has acknowledged every event.
func (e *env) drained(consumer string) {
	e.t.Helper()
	testenv.Eventually(e.t, 60*time.Second, "consumer "+consumer+" drained", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		done, detail, err := stream.Drained(ctx, e.js, stream.Rollups, consumer)
		if err != nil {
			return false, err.Error()
		}
		return done, detail
	})
}

// list reads every notification through the API's reader.
func (e *env) list() []notifier.Listed {
	e.t.Helper()
	out, total, err := notifier.NewLog(e.rdb).List(context.Background(), "", 0, 100_000)
	if err != nil {
		e.t.Fatal(err)
	}
	if total != len(out) {
		e.t.Fatalf("list: total %d, %d rows", total, len(out))
	}
	return out
}

func listedEvent(t *testing.T, l notifier.Listed) notifier.CloudEvent {
	t.Helper()
	var ce notifier.CloudEvent
	if err := json.Unmarshal(l.Event, &ce); err != nil {
		t.Fatal(err)
	}
	return ce
}

// crossing identifies a fired threshold independently of the notifier.
type crossing struct {
	rule, entity, periodStart, periodEnd string
	threshold                            float64
}

func (c crossing) String() string {
	return fmt.Sprintf("%s %s %s..%s @%g", c.rule, c.entity, c.periodStart, c.periodEnd, c.threshold)
}

func crossingOf(ce notifier.CloudEvent) crossing {
	d := ce.Data
	ent := d.Project
	switch d.Kind {
	case "cluster":
		ent = d.Cluster
	case "namespace":
		ent = d.Project + "/" + d.Cluster + "/" + d.Namespace
	case "group":
		ent = d.GroupBy + "=" + d.Group
	}
	return crossing{d.Rule, d.Kind + ":" + ent, d.PeriodStart, d.PeriodEnd, d.Threshold}
}

// waitDelivered waits until the receiver holds exactly want (each id
// delivered once) and every notification is delivered, then checks both
// sides agree.
func (e *env) waitDelivered(want map[crossing]bool) map[string]notifier.CloudEvent {
	e.t.Helper()
	var events map[string]notifier.CloudEvent
	testenv.Eventually(e.t, 60*time.Second, "every expected crossing delivered", func() (bool, string) {
		var delivered map[string]int
		var problems []string
		delivered, events, problems = e.recv.snapshot()
		if len(problems) > 0 {
			e.t.Fatalf("receiver: %s", strings.Join(problems, "\n"))
		}
		if len(events) < len(want) {
			return false, fmt.Sprintf("%d of %d delivered", len(events), len(want))
		}
		for _, l := range e.list() {
			if l.Delivery.State != notifier.StateDelivered {
				return false, fmt.Sprintf("%s is %s", listedEvent(e.t, l).ID, l.Delivery.State)
			}
		}
		_ = delivered
		return true, ""
	})
	delivered, events, _ := e.recv.snapshot()
	got := map[crossing]bool{}
	for id, ce := range events {
		if delivered[id] != 1 {
			e.t.Errorf("%s (%s) delivered %d times", id, crossingOf(ce), delivered[id])
		}
		c := crossingOf(ce)
		if got[c] {
			e.t.Errorf("%s fired under two ids", c)
		}
		got[c] = true
		if ce.Data.Usage < ce.Data.Threshold {
			e.t.Errorf("%s fired at usage %g, below its threshold", c, ce.Data.Usage)
		}
	}
	for c := range want {
		if !got[c] {
			e.t.Errorf("missing crossing %s", c)
		}
	}
	for c := range got {
		if !want[c] {
			e.t.Errorf("unexpected crossing %s", c)
		}
	}
	if l := e.list(); len(l) != len(want) {
		e.t.Errorf("%d notifications listed, want %d", len(l), len(want))
	}
	return events
}

// notFired checks, once consumer drained, that nothing new was recorded
// or delivered since before.
func (e *env) nothingNew(before map[string]notifier.CloudEvent, why string) {
	e.t.Helper()
	delivered, events, problems := e.recv.snapshot()
	if len(problems) > 0 {
		e.t.Fatalf("receiver: %s", strings.Join(problems, "\n"))
	}
	for id, n := range delivered {
		if n != 1 {
			e.t.Errorf("%s: %s delivered %d times", why, id, n)
		}
		if _, ok := before[id]; !ok {
			e.t.Errorf("%s: a new crossing fired: %s", why, crossingOf(events[id]))
		}
	}
	if l := e.list(); len(l) != len(before) {
		e.t.Errorf("%s: %d notifications, want %d", why, len(l), len(before))
	}
}
