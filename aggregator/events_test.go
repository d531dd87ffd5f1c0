package aggregator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
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
// namespace and cluster day rollup with a non-zero item.
func (e *env) expected(l *ledger) map[string]event.Fixed {
	ctx := context.Background()
	out := map[string]event.Fixed{}
	l.Each(func(sc rollup.Scope, member string, d rollup.Day, _ rollup.Values) {
		if event.KindOf(sc) == "" {
			return
		}
		v, ok, err := e.store.DayValues(ctx, d, sc, member)
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

	samples := gen("east.example", 8, time.Date(2025, 6, 7, 23, 0, 0, 0, time.UTC), 30, 4*time.Minute)
	l := pipelinetest.NewLedger()
	l.Add(samples...)
	small, _ := collector.NewPublisher(e.js, collector.PublisherConfig{MaxBatch: 4}, e.log)
	if err := small.Publish(ctx, samples); err != nil {
		t.Fatal(err)
	}
	// The first aggregator dies after committing its third batch to Redis,
	// before publishing that batch's events or acknowledging it.
	cmd := e.startChild("committed:3")
	_ = cmd.Wait()
	e.startAggregator(10)
	e.waitExact(l, 60*time.Second)
	want := e.expected(l)
	testenv.Eventually(t, 30*time.Second, "subscriber state equals the rollups", func() (bool, string) {
		got := sub.snapshot()
		if len(got) != len(want) {
			return false, fmt.Sprintf("%d entity-day-items, want %d", len(got), len(want))
		}
		for k, w := range want {
			if got[k] != w {
				return false, fmt.Sprintf("%s: subscriber %+v, rollups %+v", k, got[k], w)
			}
		}
		return true, ""
	})
}
