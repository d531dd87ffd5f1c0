package aggregator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/internal/event"
	"github.com/alauda/costmeter/internal/pipelinetest"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/testenv"
)

// subscriber is a downstream consumer of rollup events with its own
// durable consumer: it keeps, per (kind, entity, day, item), the largest
// totals it has seen, as the event schema tells subscribers to.
type subscriber struct {
	mu    sync.Mutex
	state map[string]event.Fixed
	n     int
}

func (s *subscriber) key(ev event.Event) string {
	return fmt.Sprintf("%s|%s|%s|%s|%s|%s", ev.Kind, ev.Project, ev.Cluster, ev.Namespace, ev.Day, ev.Item)
}

func (s *subscriber) handle(m jetstream.Msg) {
	var ev event.Event
	if err := json.Unmarshal(m.Data(), &ev); err != nil {
		_ = m.Term()
		return
	}
	s.mu.Lock()
	k := s.key(ev)
	if cur, ok := s.state[k]; !ok || ev.Fixed.Effective >= cur.Effective && ev.Fixed.Usage >= cur.Usage && ev.Fixed.Request >= cur.Request {
		s.state[k] = ev.Fixed
	}
	s.n++
	s.mu.Unlock()
	_ = m.Ack()
}

func (s *subscriber) snapshot() map[string]event.Fixed {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]event.Fixed, len(s.state))
	for k, v := range s.state {
		out[k] = v
	}
	return out
}

// expected reads Redis and derives the events' final state: every project,
// namespace and cluster day rollup with a non-zero item. With partial set,
// the ledger's entity-days that Redis does not hold yet are left out;
// otherwise they fail the test.
func (e *env) expected(l *ledger, partial bool) map[string]event.Fixed {
	ctx := context.Background()
	out := map[string]event.Fixed{}
	l.Each(func(sc rollup.Scope, member string, d rollup.Day, _ rollup.Values) {
		if event.KindOf(sc) == "" {
			return
		}
		v, ok, err := e.store.DayValues(ctx, d, sc, member)
		if err == nil && !ok && partial {
			return
		}
		if err != nil || !ok {
			e.t.Errorf("read %s %s %s: ok=%v err=%v", sc, member, d, ok, err)
			return
		}
		for _, it := range rollup.Items() {
			ev := event.New(rollup.Change{Scope: sc, Day: d, Member: member, Values: v}, it)
			if ev.Fixed != (event.Fixed{}) {
				out[(&subscriber{}).key(ev)] = ev.Fixed
			}
		}
	})
	return out
}

func TestEventsExactlyOnceInEffectAcrossRestart(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := stream.EnsureRollups(ctx, e.js, stream.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	sub := &subscriber{state: map[string]event.Fixed{}}
	cons, err := e.js.CreateOrUpdateConsumer(ctx, stream.Rollups, jetstream.ConsumerConfig{Durable: "test-subscriber", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(sub.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()

	// 80 messages of 4: the child (batches of up to 20) dies with some left.
	samples := gen("east.example", 8, time.Date(2025, 6, 7, 23, 0, 0, 0, time.UTC), 40, 4*time.Minute)
	l := pipelinetest.NewLedger()
	l.Add(samples...)
	small, _ := collector.NewPublisher(e.js, collector.PublisherConfig{MaxBatch: 4}, e.log)
	if err := small.Publish(ctx, samples); err != nil {
		t.Fatal(err)
	}
	// The first aggregator dies after committing its third batch to Redis,
	// before publishing that batch's events or acknowledging it. It has one
	// worker, so no other batch commits after that one and publishes
	// totals that include it.
	cmd := e.startChild("committed:3", "COSTMETER_WORKERS=1")
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child with kill at committed:3 ended with %v, want SIGKILL", err)
	}
	// The kill came between a commit and its acknowledgement, with work
	// left: Redis holds stream sequences JetStream never saw acknowledged,
	// and not yet everything.
	info, err := e.consumerInfo()
	if err != nil {
		t.Fatal(err)
	}
	applied, err := e.store.Applied(ctx, stream.Samples, 1)
	if err != nil {
		t.Fatal(err)
	}
	if applied <= info.AckFloor.Stream {
		t.Fatalf("applied up to %d, acknowledged up to %d: the child acknowledged all it committed; the test proves nothing", applied, info.AckFloor.Stream)
	}
	if d := e.diff(l); d == "" {
		t.Fatal("the child applied every sample before it died: the test proves nothing")
	}
	// The subscriber, once it has every event published so far, lacks the
	// killed batch's: they must come from the restart.
	testenv.Eventually(t, 30*time.Second, "the subscriber has every event published before the kill", func() (bool, string) {
		done, detail, err := stream.Drained(ctx, e.js, stream.Rollups, "test-subscriber")
		if err != nil {
			return false, err.Error()
		}
		return done, detail
	})
	if d := stateDiff(sub.snapshot(), e.expected(l, true)); d == "" {
		t.Fatal("before the restart the subscriber already had an event for every rollup in Redis: the test proves nothing")
	}
	e.startAggregator(10)
	e.waitExact(l, 60*time.Second)
	want := e.expected(l, false)
	testenv.Eventually(t, 30*time.Second, "subscriber state equals the rollups", func() (bool, string) {
		d := stateDiff(sub.snapshot(), want)
		return d == "", d
	})
}

// stateDiff describes the first difference between a subscriber's state
// and the expected one ("" when equal).
func stateDiff(got, want map[string]event.Fixed) string {
	if len(got) != len(want) {
		return fmt.Sprintf("%d entity-day-items, want %d", len(got), len(want))
	}
	for k, w := range want {
		if got[k] != w {
			return fmt.Sprintf("%s: subscriber %+v, rollups %+v", k, got[k], w)
		}
	}
	return ""
}
