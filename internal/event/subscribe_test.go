package event_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/alauda/costmeter/internal/event"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// rollups is an embedded JetStream with the COST_ROLLUPS stream.
func rollups(t *testing.T) jetstream.JetStream {
	t.Helper()
	n := testenv.StartNATS(t)
	nc, js, err := natsconn.Connect(n.URL(), "event-test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if err := stream.EnsureRollups(t.Context(), js, stream.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	return js
}

// consumers is the number of consumers of the COST_ROLLUPS stream.
func consumers(t *testing.T, js jetstream.JetStream) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream.Rollups)
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Consumers, nil
}

// key names an event's entity and item: kind|project|cluster|namespace|item.
func key(ev event.Event) string {
	return ev.Kind + "|" + ev.Project + "|" + ev.Cluster + "|" + ev.Namespace + "|" + ev.Item
}

// testEvents are one event per entity and item: projects whose names
// prefix each other (team, team-a), a cluster name with a dot (east.b),
// one namespace name in several projects and clusters.
func testEvents() []event.Event {
	var es []event.Event
	add := func(ev event.Event) {
		for _, it := range []string{"Cpu", "Memory"} {
			ev.Item = it
			ev.ID = fmt.Sprintf("e%d", len(es))
			ev.Fixed.Usage = int64(len(es) + 1)
			es = append(es, ev)
		}
	}
	for _, p := range []string{"team", "team-a", "ops"} {
		add(event.Event{Kind: event.KindProject, Project: p})
	}
	for _, c := range []string{"east", "east.b", "west"} {
		add(event.Event{Kind: event.KindCluster, Cluster: c})
	}
	for _, n := range [][3]string{{"team", "east", "api"}, {"team", "east.b", "api"}, {"team", "east", "web"},
		{"team-a", "east", "default"}, {"ops", "west", "default"}, {"ops", "west", "api"}} {
		add(event.Event{Kind: event.KindNamespace, Project: n[0], Cluster: n[1], Namespace: n[2]})
	}
	return es
}

func publish(t *testing.T, js jetstream.JetStream, ev event.Event) {
	t.Helper()
	if _, err := js.Publish(t.Context(), ev.Subject(), ev.Marshal()); err != nil {
		t.Fatal(err)
	}
}

// next is the subscription's next event; it fails the test when none
// comes within 10 s or the subscription ended.
func next(t *testing.T, sub *event.Subscription) event.Event {
	t.Helper()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case ev, ok := <-sub.Events():
		if !ok {
			t.Fatal("the subscription ended")
		}
		return ev
	case <-timer.C:
		t.Fatal("no event within 10 s")
		return event.Event{}
	}
}

// TestSubscribeDeliversExactlyTheSelection subscribes once per selection,
// publishes one event of every entity and item, then one marker event per
// selection. Stream order is kept, so once a subscription has its own
// marker it has everything published before it that it will ever get:
// what it got must be exactly the events of the keys written out here, in
// publish order.
func TestSubscribeDeliversExactlyTheSelection(t *testing.T) {
	js := rollups(t)
	both := func(keys ...string) []string {
		var out []string
		for _, k := range keys {
			out = append(out, k+"|Cpu", k+"|Memory")
		}
		return out
	}
	cases := []struct {
		name string
		sel  event.Selection
		keys []string
	}{
		{name: "all projects", sel: event.Selection{Kind: "project"},
			keys: both("project|team||", "project|team-a||", "project|ops||")},
		{name: "one project", sel: event.Selection{Kind: "project", Name: "team"}, keys: both("project|team||")},
		{name: "one dotted cluster", sel: event.Selection{Kind: "cluster", Name: "east.b"}, keys: both("cluster||east.b|")},
		{name: "all clusters, memory", sel: event.Selection{Kind: "cluster", Item: "Memory"},
			keys: []string{"cluster||east||Memory", "cluster||east.b||Memory", "cluster||west||Memory"}},
		{name: "team's share of cluster east", sel: event.Selection{Kind: "cluster", Name: "east", Project: "team"},
			keys: both("namespace|team|east|api", "namespace|team|east|web")},
		{name: "namespaces named api", sel: event.Selection{Kind: "namespace", Name: "api"},
			keys: both("namespace|team|east|api", "namespace|team|east.b|api", "namespace|ops|west|api")},
		{name: "namespaces of team-a", sel: event.Selection{Kind: "namespace", Project: "team-a"},
			keys: both("namespace|team-a|east|default")},
		{name: "team's api namespaces, cpu", sel: event.Selection{Kind: "namespace", Name: "api", Project: "team", Item: "Cpu"},
			keys: []string{"namespace|team|east|api|Cpu", "namespace|team|east.b|api|Cpu"}},
		{name: "everything of team", sel: event.Selection{Project: "team"},
			keys: both("project|team||", "namespace|team|east|api", "namespace|team|east.b|api", "namespace|team|east|web")},
		{name: "every event", sel: event.Selection{}, keys: both("project|team||", "project|team-a||", "project|ops||",
			"cluster||east|", "cluster||east.b|", "cluster||west|",
			"namespace|team|east|api", "namespace|team|east.b|api", "namespace|team|east|web",
			"namespace|team-a|east|default", "namespace|ops|west|default", "namespace|ops|west|api")},
	}
	subs := make([]*event.Subscription, len(cases))
	for i, c := range cases {
		sub, err := event.Subscribe(t.Context(), js, c.sel)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		defer sub.Close()
		subs[i] = sub
	}
	published := testEvents()
	if len(published) != 24 {
		t.Fatalf("%d test events", len(published))
	}
	for _, ev := range published {
		publish(t, js, ev)
	}
	// One marker per case: new totals of one of its own entities.
	byKey := map[string]event.Event{}
	for _, ev := range published {
		byKey[key(ev)] = ev
	}
	markers := make([]event.Event, len(cases))
	for i, c := range cases {
		m := byKey[c.keys[len(c.keys)-1]]
		m.ID, m.Fixed.Usage = fmt.Sprintf("marker%d", i), int64(1000+i)
		markers[i] = m
		publish(t, js, m)
	}
	published = append(published, markers...)

	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var want []string
			for _, ev := range published {
				if slices.Contains(c.keys, key(ev)) {
					want = append(want, ev.ID)
				}
				if ev.ID == markers[i].ID {
					break
				}
			}
			var got []string
			for {
				ev := next(t, subs[i])
				got = append(got, ev.ID)
				if ev.ID == markers[i].ID {
					break
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("got events %v, want %v", got, want)
			}
		})
	}
}

// TestSubscribeSkipsMislabelledAndUndecodable: an event on a project's
// subject whose body names another project, and a message that is no
// event, reach no subscriber; the next good event does.
func TestSubscribeSkipsMislabelledAndUndecodable(t *testing.T) {
	js := rollups(t)
	sub, err := event.Subscribe(t.Context(), js, event.Selection{Kind: "namespace", Project: "team"})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	intruder := event.Event{ID: "intruder", Kind: "namespace", Project: "ops", Cluster: "east", Namespace: "api", Item: "Cpu"}
	if _, err := js.Publish(t.Context(), "cost.rollups.namespace.team.east.api", intruder.Marshal()); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(t.Context(), "cost.rollups.namespace.team.east.web", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	good := event.Event{ID: "good", Kind: "namespace", Project: "team", Cluster: "east", Namespace: "api", Item: "Cpu"}
	publish(t, js, good)
	if ev := next(t, sub); ev.ID != "good" {
		t.Fatalf("first event %+v, want the good one", ev)
	}
}

// TestSubscriptionDeletesItsConsumer: the consumer exists while the
// subscription does, and is gone once its context ends (Events closed
// then) or once Close returns.
func TestSubscriptionDeletesItsConsumer(t *testing.T) {
	js := rollups(t)
	ctx, cancel := context.WithCancel(t.Context())
	sub, err := event.Subscribe(ctx, js, event.Selection{Kind: "cluster"})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := consumers(t, js); err != nil || n != 1 {
		t.Fatalf("%d consumers while subscribed (%v), want 1", n, err)
	}
	publish(t, js, event.Event{ID: "c1", Kind: "cluster", Cluster: "east", Item: "Cpu"})
	if ev := next(t, sub); ev.ID != "c1" {
		t.Fatalf("event %+v", ev)
	}
	cancel()
	testenv.Eventually(t, 5*time.Second, "the consumer is deleted when ctx ends", func() (bool, string) {
		n, err := consumers(t, js)
		if err != nil {
			return false, err.Error()
		}
		return n == 0, fmt.Sprintf("%d consumers", n)
	})
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	select {
	case ev, ok := <-sub.Events():
		if ok {
			t.Fatalf("event %+v after the end", ev)
		}
	case <-timer.C:
		t.Fatal("Events not closed within 5 s of ctx's end")
	}
	sub.Close() // after the end: returns at once

	sub, err = event.Subscribe(t.Context(), js, event.Selection{Kind: "cluster"})
	if err != nil {
		t.Fatal(err)
	}
	sub.Close()
	if n, err := consumers(t, js); err != nil || n != 0 {
		t.Fatalf("%d consumers after Close (%v), want 0", n, err)
	}
	if _, ok := <-sub.Events(); ok {
		t.Fatal("Events open after Close")
	}
}

// TestSubscribeRefused: a bad selection and a missing stream are errors
// of their own kinds, and leave no consumer behind.
func TestSubscribeRefused(t *testing.T) {
	n := testenv.StartNATS(t)
	nc, js, err := natsconn.Connect(n.URL(), "event-test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := event.Subscribe(t.Context(), js, event.Selection{Kind: "namespace", Name: "*"}); err == nil || !isBad(err) {
		t.Fatalf("wildcard name: err = %v, want ErrBadSelection", err)
	}
	_, err = event.Subscribe(t.Context(), js, event.Selection{})
	if err == nil || !isUnavailable(err) {
		t.Fatalf("no stream: err = %v, want ErrUnavailable", err)
	}
}

func isBad(err error) bool         { return errors.Is(err, event.ErrBadSelection) }
func isUnavailable(err error) bool { return errors.Is(err, event.ErrUnavailable) }
