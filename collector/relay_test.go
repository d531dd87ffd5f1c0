package collector_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"

	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/collector/spool"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// StreamContent is what the samples stream holds, read message by message.
type StreamContent struct {
	Messages int
	IDs      map[string]int           // Nats-Msg-Id → messages with it
	Samples  map[string]int           // cluster/namespace@start → copies
	Values   map[string]sample.Sample // cluster/namespace@start → the sample
	Starts   []time.Time              // window start of each message's first sample, in stream order
}

// ReadStream reads every message of the samples stream.
func ReadStream(ctx context.Context, t testing.TB, js jetstream.JetStream) StreamContent {
	t.Helper()
	s, err := js.Stream(ctx, stream.Samples)
	if err != nil {
		t.Fatalf("open stream: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	c := StreamContent{IDs: map[string]int{}, Samples: map[string]int{}, Values: map[string]sample.Sample{}}
	if info.State.Msgs == 0 {
		return c
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get message %d: %v", seq, err)
		}
		c.Messages++
		c.IDs[m.Header.Get(jetstream.MsgIDHeader)]++
		rs, err := sample.Decode(m.Data)
		if err != nil {
			t.Fatalf("decode message %d: %v", seq, err)
		}
		c.Starts = append(c.Starts, rs[0].Sample.Start)
		for _, r := range rs {
			if r.Err != nil {
				t.Fatalf("message %d: %v", seq, r.Err)
			}
			k := fmt.Sprintf("%s@%s", r.Sample.Key(), r.Sample.Start.Format(time.RFC3339))
			c.Samples[k]++
			c.Values[k] = r.Sample
		}
	}
	return c
}

func streamMsgs(ctx context.Context, js jetstream.JetStream) (uint64, error) {
	s, err := js.Stream(ctx, stream.Samples)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}

// TestRelayNATSOutage stops NATS while a relay publishes: the batches of
// the outage wait in the spool and arrive exactly once after the restart.
func TestRelayNATSOutage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	n := testenv.StartNATS(t)
	nc, js, err := natsconn.Connect(n.URL(), "relay-test", quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := stream.Ensure(ctx, js, stream.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	rig := startRelay(ctx, t, js, rigConfig{MaxBatch: 5, Relay: collector.RelayConfig{Streams: ptr(stream.DefaultConfig())}})
	relay, sp := rig.relay, rig.sp

	sim, err := collector.NewSimulator(collector.SimConfig{Clusters: []string{"c1", "c2"}, Projects: 2, Namespaces: 7, Interval: time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	emit := func(from, to int) {
		t.Helper()
		for w := from; w < to; w++ {
			var ss []sample.Sample
			for _, c := range []string{"c1", "c2"} {
				for i := range 7 {
					ss = append(ss, sim.Sample(c, i, t0.Add(time.Duration(w)*time.Minute)))
				}
			}
			if err := relay.Emit(ctx, ss); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Per window and cluster: 7 samples in batches of 5 → 2 messages.
	const msgsPerWindow = 4

	emit(0, 10)
	testenv.Eventually(t, 20*time.Second, "windows before the outage published", func() (bool, string) {
		got, err := streamMsgs(ctx, js)
		return got == 10*msgsPerWindow && sp.Len() == 0, fmt.Sprintf("stream %d (%v), spool %d", got, err, sp.Len())
	})

	n.Stop()
	emit(10, 40)
	if got := sp.Len(); got != 30*msgsPerWindow {
		t.Fatalf("spool holds %d batches during the outage, want %d", got, 30*msgsPerWindow)
	}
	n.Restart()
	testenv.Eventually(t, 40*time.Second, "outage batches published", func() (bool, string) {
		return sp.Len() == 0, fmt.Sprintf("spool still holds %d batches", sp.Len())
	})
	emit(40, 45)
	testenv.Eventually(t, 20*time.Second, "windows after the outage published", func() (bool, string) {
		return sp.Len() == 0, fmt.Sprintf("spool still holds %d batches", sp.Len())
	})

	// NATS goes away while batches are in flight: some are stored but not
	// acknowledged, and are published again after the restart.
	emit(45, 60)
	n.Stop()
	emit(60, 70)
	n.Restart()
	testenv.Eventually(t, 40*time.Second, "in-flight batches published", func() (bool, string) {
		return sp.Len() == 0, fmt.Sprintf("spool still holds %d batches", sp.Len())
	})

	if sp.Rejected() != 0 {
		t.Fatalf("%d batches moved aside over outages", sp.Rejected())
	}
	c := ReadStream(ctx, t, js)
	if c.Messages != 70*msgsPerWindow || len(c.IDs) != c.Messages {
		t.Fatalf("stream holds %d messages with %d distinct ids, want %d of each", c.Messages, len(c.IDs), 70*msgsPerWindow)
	}
	if len(c.Samples) != 70*14 {
		t.Fatalf("stream holds %d distinct samples, want %d", len(c.Samples), 70*14)
	}
	for k, copies := range c.Samples {
		if copies != 1 {
			t.Errorf("sample %s is in the stream %d times", k, copies)
		}
	}
	// Published in the order they were spooled (up to the last outage,
	// where a retried message may follow a later one of its round).
	c.Starts = c.Starts[:45*msgsPerWindow]
	// Published in the order they were spooled.
	for i := 1; i < len(c.Starts); i++ {
		if c.Starts[i].Before(c.Starts[i-1]) {
			t.Fatalf("message %d (window %s) follows one of window %s", i, c.Starts[i].Format(time.TimeOnly), c.Starts[i-1].Format(time.TimeOnly))
		}
	}
	want := sim.Sample("c2", 3, t0.Add(25*time.Minute))
	if got := c.Values["c2/ns-3@2025-06-01T10:25:00Z"]; got.CPU != want.CPU || got.Memory != want.Memory || got.Project != want.Project {
		t.Fatalf("outage sample = %+v, want %+v", got, want)
	}
}

func ptr[T any](v T) *T { return &v }

// TestRelayBoundedSpool: while NATS is away the spool keeps only its bound;
// the oldest batches go first and their samples are counted as dropped;
// what stayed arrives once NATS is back.
func TestRelayBoundedSpool(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	n := testenv.StartNATS(t)
	nc, js, err := natsconn.Connect(n.URL(), "relay-bound-test", quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := stream.Ensure(ctx, js, stream.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	n.Stop()
	testenv.Eventually(t, 10*time.Second, "client notices the outage", func() (bool, string) {
		return !nc.IsConnected(), nc.Status().String()
	})

	rig := startRelay(ctx, t, js, rigConfig{SpoolBytes: spool.MinBytes, Relay: collector.RelayConfig{Window: 8}})
	relay, sp, reader := rig.relay, rig.sp, rig.reader

	// 100 windows of 100 namespaces: one message of ~33 KB per window,
	// ~3.3 MB in all, three times the bound.
	sim, err := collector.NewSimulator(collector.SimConfig{Clusters: []string{"c1"}, Projects: 3, Namespaces: 100, Interval: time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	const windows = 100
	for w := range windows {
		ss := make([]sample.Sample, 100)
		for i := range ss {
			ss[i] = sim.Sample("c1", i, t0.Add(time.Duration(w)*time.Minute))
		}
		if err := relay.Emit(ctx, ss); err != nil {
			t.Fatal(err)
		}
		if sp.Bytes() > spool.MinBytes {
			t.Fatalf("spool holds %d bytes, above its bound", sp.Bytes())
		}
	}
	kept := sp.Len()
	if kept == 0 || kept >= windows {
		t.Fatalf("spool kept %d of %d batches", kept, windows)
	}
	var dropped int64
	for _, n := range testenv.CounterBy(t, reader, "cost.collector.spool.dropped", "reason") {
		dropped += n
	}
	if want := int64((windows - kept) * 100); dropped != want {
		t.Fatalf("dropped counter = %d, want %d", dropped, want)
	}

	n.Restart()
	testenv.Eventually(t, 40*time.Second, "kept batches published", func() (bool, string) {
		return sp.Len() == 0, fmt.Sprintf("spool still holds %d batches", sp.Len())
	})
	c := ReadStream(ctx, t, js)
	if c.Messages != kept || len(c.IDs) != kept || len(c.Samples) != kept*100 {
		t.Fatalf("stream holds %d messages (%d ids, %d samples), want the %d kept batches", c.Messages, len(c.IDs), len(c.Samples), kept)
	}
	// The newest windows are the ones kept.
	for w := windows - kept; w < windows; w++ {
		k := fmt.Sprintf("c1/ns-7@%s", t0.Add(time.Duration(w)*time.Minute).Format(time.RFC3339))
		if c.Samples[k] != 1 {
			t.Fatalf("kept window %d missing from the stream (%s)", w, k)
		}
	}
}

// TestRelayBackpressure: a source faster than JetStream waits at the high
// water mark instead of pushing its own batches out of the spool.
func TestRelayBackpressure(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	n := testenv.StartNATS(t)
	nc, js, err := natsconn.Connect(n.URL(), "relay-backpressure-test", quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// The publisher's default ack wait, the relay's default backoff.
	rig := startRelay(ctx, t, js, rigConfig{SpoolBytes: spool.MinBytes, AckTimeout: -1,
		Relay: collector.RelayConfig{Window: 4, MaxBackoff: -1, Streams: ptr(stream.DefaultConfig()), HighWater: spool.MinBytes / 2}})
	relay, sp, reader := rig.relay, rig.sp, rig.reader
	testenv.Eventually(t, 10*time.Second, "stream created", func() (bool, string) {
		_, err := js.Stream(ctx, stream.Samples)
		return err == nil, fmt.Sprint(err)
	})

	sim, err := collector.NewSimulator(collector.SimConfig{Clusters: []string{"c1"}, Projects: 3, Namespaces: 100, Interval: time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	const windows = 200 // ~6.6 MB through a 1 MiB spool
	for w := range windows {
		ss := make([]sample.Sample, 100)
		for i := range ss {
			ss[i] = sim.Sample("c1", i, t0.Add(time.Duration(w)*time.Minute))
		}
		if err := relay.Emit(ctx, ss); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 40*time.Second, "everything published", func() (bool, string) {
		return sp.Len() == 0, fmt.Sprintf("spool still holds %d batches", sp.Len())
	})
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == "cost.collector.spool.dropped" {
				t.Fatalf("samples were dropped: %+v", m.Data)
			}
		}
	}
	if c := ReadStream(ctx, t, js); c.Messages != windows || len(c.Samples) != windows*100 {
		t.Fatalf("stream holds %d messages and %d samples, want %d and %d", c.Messages, len(c.Samples), windows, windows*100)
	}
}

// BenchmarkRelayDrain measures how fast a relay empties a spooled backlog
// of 500-sample batches into embedded JetStream (file storage).
func BenchmarkRelayDrain(b *testing.B) {
	ctx := context.Background()
	n := testenv.StartNATS(b)
	nc, js, err := natsconn.Connect(n.URL(), "relay-bench", quiet)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	if err := stream.Ensure(ctx, js, stream.DefaultConfig()); err != nil {
		b.Fatal(err)
	}
	pub, _ := collector.NewPublisher(js, collector.PublisherConfig{}, quiet)
	sp, err := spool.Open(spool.Config{Dir: b.TempDir(), MaxBytes: 1 << 40}, spool.WithLogger(quiet))
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	relay, _ := collector.NewRelay(pub, sp, collector.RelayConfig{}, quiet)
	sim, _ := collector.NewSimulator(collector.SimConfig{Clusters: []string{"c1"}, Projects: 10, Namespaces: 500, Interval: time.Minute}, nil)
	t0 := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	for w := 0; w < b.N; w++ {
		ss := make([]sample.Sample, 500)
		for i := range ss {
			ss[i] = sim.Sample("c1", i, t0.Add(time.Duration(w)*time.Minute))
		}
		if err := relay.Emit(ctx, ss); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- relay.Run(rctx) }()
	for sp.Len() > 0 {
		select {
		case <-sp.Ready():
		case <-time.After(time.Millisecond):
		}
	}
	b.StopTimer()
	stop()
	<-done
	b.ReportMetric(float64(b.N*500)/b.Elapsed().Seconds(), "samples/s")
}
