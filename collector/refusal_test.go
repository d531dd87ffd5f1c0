package collector_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natstest "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/collector/spool"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/testenv"
)

// natsServer is an embedded JetStream server whose options a test sets: a
// small max_payload, or JetStream off for a while on the same port.
type natsServer struct {
	t    *testing.T
	opts server.Options
	srv  *server.Server
}

func startServer(t *testing.T, adjust func(*server.Options)) *natsServer {
	t.Helper()
	n := &natsServer{t: t, opts: natstest.DefaultTestOptions}
	n.opts.Port = -1
	n.opts.JetStream = true
	n.opts.StoreDir = t.TempDir()
	if adjust != nil {
		adjust(&n.opts)
	}
	opts := n.opts
	n.srv = natstest.RunServer(&opts)
	n.opts.Port = n.srv.Addr().(*net.TCPAddr).Port
	t.Cleanup(n.stop)
	return n
}

func (n *natsServer) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.opts.Port) }

func (n *natsServer) stop() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
		n.srv = nil
	}
}

// restart starts the server again on the same port and store, with
// JetStream on or off.
func (n *natsServer) restart(jetStream bool) {
	n.t.Helper()
	n.stop()
	opts := n.opts
	opts.JetStream = jetStream
	n.srv = natstest.RunServer(&opts)
}

// counter sums the data points of the int64 counter name per value of its
// reason attribute ("" for points without one).
func (r *relayRig) counter(t *testing.T, name string) map[string]int64 {
	t.Helper()
	return testenv.CounterBy(t, r.reader, name, "reason")
}

// rejectedFiles reads the spool's rejected/ directory: sidecar text by
// batch file name, and the names of the files there.
func rejectedFiles(t *testing.T, dir string) (map[string]string, []string) {
	t.Helper()
	des, err := os.ReadDir(filepath.Join(dir, spool.RejectedDir))
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]string{}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
		if b, ok := strings.CutSuffix(de.Name(), spool.ReasonExt); ok {
			text, err := os.ReadFile(filepath.Join(dir, spool.RejectedDir, de.Name()))
			if err != nil {
				t.Fatal(err)
			}
			reasons[b+spool.Ext] = string(text)
		}
	}
	return reasons, names
}

// sidecarField returns the value of "key: value" in a sidecar.
func sidecarField(text, key string) string {
	for line := range strings.SplitSeq(text, "\n") {
		if v, ok := strings.CutPrefix(line, key+": "); ok {
			return v
		}
	}
	return ""
}

// samplesFor returns n samples of cluster c for window w.
func samplesFor(sim *collector.Simulator, c string, n, w int) []sample.Sample {
	t0 := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	ss := make([]sample.Sample, n)
	for i := range ss {
		ss[i] = sim.Sample(c, i, t0.Add(time.Duration(w)*time.Minute))
	}
	return ss
}

// TestRelayMovesTooLargeBatchAside: one batch is larger than the limit
// (the stream's max_msg_size, or the server's max_payload that the client
// enforces before sending): it moves to rejected/ with its reason, is
// counted and logged once, and the small batches before and after it are
// published, each exactly once. Before the fix the relay retried the large
// batch forever and the ones after it never went out. Raising the limit
// and moving the file back (the README's replay) publishes it too.
func TestRelayMovesTooLargeBatchAside(t *testing.T) {
	const limit = 4096 // bytes; a sample encodes to ~330
	cases := []struct {
		name       string
		server     func(*server.Options)
		maxMsgSize int32
		reason     string
		errText    string
		raise      func(ctx context.Context, t *testing.T, n *natsServer, js jetstream.JetStream)
	}{
		{
			name: "stream max_msg_size", maxMsgSize: limit, reason: collector.RefusedMaxMsgSize, errText: "err_code=10054",
			raise: func(ctx context.Context, t *testing.T, _ *natsServer, js jetstream.JetStream) {
				cfg := samplesStream(0)
				if _, err := js.UpdateStream(ctx, cfg); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "server max_payload", server: func(o *server.Options) { o.MaxPayload = limit }, reason: collector.RefusedMaxPayload, errText: "maximum payload exceeded",
			raise: func(_ context.Context, t *testing.T, n *natsServer, _ jetstream.JetStream) {
				n.opts.MaxPayload = 0
				n.restart(true)
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			n := startServer(t, tc.server)
			_, js := connectWithStream(ctx, t, n, samplesStream(tc.maxMsgSize))
			sim, err := collector.NewSimulator(collector.SimConfig{Clusters: []string{"c1"}, Projects: 2, Namespaces: 40, Interval: time.Minute}, nil)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			rig := startRelay(ctx, t, js, rigConfig{Dir: dir, MaxBatch: 100})
			// Windows 0-2: 3 samples each (one small message); window 3: 30
			// samples (one message of ~10 KB); windows 4-9: 3 samples each.
			for w := range 10 {
				size := 3
				if w == 3 {
					size = 30
				}
				if err := rig.relay.Emit(ctx, samplesFor(sim, "c1", size, w)); err != nil {
					t.Fatal(err)
				}
			}
			testenv.Eventually(t, 30*time.Second, "small batches published, the large one moved aside", func() (bool, string) {
				got, err := streamMsgs(ctx, js)
				return got == 9 && rig.sp.Len() == 0 && rig.sp.Rejected() == 1,
					fmt.Sprintf("stream %d (%v), spool %d, rejected %d; log:\n%s", got, err, rig.sp.Len(), rig.sp.Rejected(), rig.log)
			})
			c := ReadStream(ctx, t, js)
			if c.Messages != 9 || len(c.IDs) != 9 || len(c.Samples) != 27 {
				t.Fatalf("stream holds %d messages (%d ids, %d samples), want 9 (9, 27)", c.Messages, len(c.IDs), len(c.Samples))
			}
			for k, copies := range c.Samples {
				if copies != 1 || strings.Contains(k, "@2025-06-01T00:03:00Z") {
					t.Errorf("sample %s is in the stream %d times", k, copies)
				}
			}
			if got := rig.counter(t, "cost.collector.rejected.batches"); !maps.Equal(got, map[string]int64{tc.reason: 1}) {
				t.Errorf("rejected batches = %v, want %s: 1", got, tc.reason)
			}
			if got := rig.counter(t, "cost.collector.rejected.samples"); !maps.Equal(got, map[string]int64{tc.reason: 30}) {
				t.Errorf("rejected samples = %v, want %s: 30", got, tc.reason)
			}
			if got := rig.counter(t, "cost.collector.samples.published"); got[""] != 27 {
				t.Errorf("published samples = %v, want 27", got)
			}
			reasons, names := rejectedFiles(t, dir)
			const file = "00000000000000000004.batch"
			if want := []string{file, "00000000000000000004.reason"}; !slices.Equal(names, want) {
				t.Fatalf("rejected/ holds %v, want %v", names, want)
			}
			text := reasons[file]
			if sidecarField(text, "reason") != tc.reason || sidecarField(text, "samples") != "30" || sidecarField(text, "subject") != "cost.samples.c1" ||
				!strings.Contains(sidecarField(text, "error"), tc.errText) {
				t.Errorf("sidecar =\n%s\nwant reason %s, 30 samples, an error with %q", text, tc.reason, tc.errText)
			}
			if at, err := time.Parse(time.RFC3339, sidecarField(text, "time")); err != nil || time.Since(at) > time.Minute {
				t.Errorf("sidecar time %q (%v)", sidecarField(text, "time"), err)
			}
			if got := strings.Count(rig.log.String(), "refused a batch for good"); got != 1 {
				t.Errorf("the refusal is logged %d times, want once; log:\n%s", got, rig.log)
			}
			if !strings.Contains(rig.log.String(), filepath.Join(dir, spool.RejectedDir, file)) {
				t.Errorf("the log does not name the file; log:\n%s", rig.log)
			}

			// Replay: raise the limit, stop the collector, move the file
			// back, start it again.
			rig.stopped()
			tc.raise(ctx, t, n, js)
			if err := os.Rename(filepath.Join(dir, spool.RejectedDir, file), filepath.Join(dir, file)); err != nil {
				t.Fatal(err)
			}
			rig = startRelay(ctx, t, js, rigConfig{Dir: dir, MaxBatch: 100})
			testenv.Eventually(t, 30*time.Second, "replayed batch published", func() (bool, string) {
				got, err := streamMsgs(ctx, js)
				return got == 10 && rig.sp.Len() == 0, fmt.Sprintf("stream %d (%v), spool %d; log:\n%s", got, err, rig.sp.Len(), rig.log)
			})
			if c := ReadStream(ctx, t, js); c.Messages != 10 || len(c.Samples) != 57 {
				t.Fatalf("after the replay the stream holds %d messages and %d samples, want 10 and 57", c.Messages, len(c.Samples))
			}
			if _, names := rejectedFiles(t, dir); len(names) != 0 || rig.sp.Rejected() != 0 {
				t.Fatalf("rejected/ still holds %v (%d)", names, rig.sp.Rejected())
			}
		})
	}
}

// TestRelayMovesBatchesWithoutStreamAside: COST_SAMPLES stores only
// cluster "good"; cluster "lost" has no stream at all and cluster "other"
// is stored by another stream. Their batches move aside with the reasons
// no_stream and wrong_stream, while every batch of "good" is published
// exactly once. Before the fix the relay retried them forever and the
// batches queued after them never went out.
func TestRelayMovesBatchesWithoutStreamAside(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n := startServer(t, nil)
	cfg := samplesStream(0)
	cfg.Subjects = []string{stream.SamplesPrefix + "good"}
	_, js := connectWithStream(ctx, t, n, cfg)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{stream.SamplesPrefix + "other"}}); err != nil {
		t.Fatal(err)
	}
	clusters := []string{"good", "lost", "other"}
	sim, err := collector.NewSimulator(collector.SimConfig{Clusters: clusters, Projects: 2, Namespaces: 5, Interval: time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rig := startRelay(ctx, t, js, rigConfig{Dir: dir, MaxBatch: 100})
	const windows = 6
	for w := range windows {
		for _, c := range clusters {
			if err := rig.relay.Emit(ctx, samplesFor(sim, c, 5, w)); err != nil {
				t.Fatal(err)
			}
		}
	}
	testenv.Eventually(t, 40*time.Second, "good batches published, the others moved aside", func() (bool, string) {
		got, err := streamMsgs(ctx, js)
		return got == windows && rig.sp.Len() == 0 && rig.sp.Rejected() == 2*windows,
			fmt.Sprintf("stream %d (%v), spool %d, rejected %d; log:\n%s", got, err, rig.sp.Len(), rig.sp.Rejected(), rig.log)
	})
	c := ReadStream(ctx, t, js)
	if c.Messages != windows || len(c.Samples) != windows*5 {
		t.Fatalf("stream holds %d messages and %d samples, want %d and %d", c.Messages, len(c.Samples), windows, windows*5)
	}
	for k, copies := range c.Samples {
		if copies != 1 || !strings.HasPrefix(k, "good/") {
			t.Errorf("sample %s is in the stream %d times", k, copies)
		}
	}
	other, err := js.Stream(ctx, "OTHER")
	if err != nil {
		t.Fatal(err)
	}
	if info, err := other.Info(ctx); err != nil || info.State.Msgs != 0 {
		t.Fatalf("stream OTHER: %+v, %v; want no message (the publisher expects COST_SAMPLES)", info.State, err)
	}
	want := map[string]int64{collector.RefusedNoStream: windows, collector.RefusedWrongStream: windows}
	if got := rig.counter(t, "cost.collector.rejected.batches"); !maps.Equal(got, want) {
		t.Errorf("rejected batches = %v, want %v", got, want)
	}
	reasons, names := rejectedFiles(t, dir)
	if len(names) != 4*windows {
		t.Fatalf("rejected/ holds %d files, want %d: %v", len(names), 4*windows, names)
	}
	bySubject := map[string]int{}
	for file, text := range reasons {
		subject, reason := sidecarField(text, "subject"), sidecarField(text, "reason")
		bySubject[subject+" "+reason]++
		if _, err := os.Stat(filepath.Join(dir, spool.RejectedDir, file)); err != nil {
			t.Errorf("sidecar without its batch: %v", err)
		}
	}
	wantSubjects := map[string]int{"cost.samples.lost no_stream": windows, "cost.samples.other wrong_stream": windows}
	if fmt.Sprint(bySubject) != fmt.Sprint(wantSubjects) {
		t.Errorf("rejected by subject and reason = %v, want %v", bySubject, wantSubjects)
	}
	if got := strings.Count(rig.log.String(), "refused a batch for good"); got != 2*windows {
		t.Errorf("%d refusals logged, want %d (once each)", got, 2*windows)
	}
}

// TestRelayKeepsBatchesWhileJetStreamIsAway: the server comes back
// without JetStream for a while (publishes get "no responders", as for a
// subject without a stream, and the JetStream API does not answer), then
// with it. Nothing moves aside: every batch arrives exactly once. The test
// checks that the relay did meet "no responders" while JetStream was off.
func TestRelayKeepsBatchesWhileJetStreamIsAway(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n := startServer(t, nil)
	nc, js := connectWithStream(ctx, t, n, samplesStream(0))
	sim, err := collector.NewSimulator(collector.SimConfig{Clusters: []string{"c1"}, Projects: 2, Namespaces: 5, Interval: time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rig := startRelay(ctx, t, js, rigConfig{Dir: dir, MaxBatch: 100})
	emit := func(from, to int) {
		t.Helper()
		for w := from; w < to; w++ {
			if err := rig.relay.Emit(ctx, samplesFor(sim, "c1", 5, w)); err != nil {
				t.Fatal(err)
			}
		}
	}
	emit(0, 5)
	testenv.Eventually(t, 20*time.Second, "batches before the outage published", func() (bool, string) {
		got, err := streamMsgs(ctx, js)
		return got == 5 && rig.sp.Len() == 0, fmt.Sprintf("stream %d (%v), spool %d", got, err, rig.sp.Len())
	})

	n.restart(false)
	testenv.Eventually(t, 20*time.Second, "client back on the server without JetStream", func() (bool, string) {
		return nc.IsConnected(), nc.Status().String()
	})
	emit(5, 15)
	testenv.Eventually(t, 30*time.Second, "the relay meets no responders", func() (bool, string) {
		return strings.Contains(rig.log.String(), jetstream.ErrNoStreamResponse.Error()), rig.log.String()
	})
	if rig.sp.Rejected() != 0 || rig.sp.Len() != 10 {
		t.Fatalf("while JetStream is off: %d batches rejected, %d queued; want 0 and 10; log:\n%s", rig.sp.Rejected(), rig.sp.Len(), rig.log)
	}

	n.restart(true)
	emit(15, 20)
	testenv.Eventually(t, 40*time.Second, "everything published", func() (bool, string) {
		got, err := streamMsgs(ctx, js)
		return got == 20 && rig.sp.Len() == 0, fmt.Sprintf("stream %d (%v), spool %d; log:\n%s", got, err, rig.sp.Len(), rig.log)
	})
	c := ReadStream(ctx, t, js)
	if c.Messages != 20 || len(c.IDs) != 20 || len(c.Samples) != 100 {
		t.Fatalf("stream holds %d messages (%d ids, %d samples), want 20 (20, 100)", c.Messages, len(c.IDs), len(c.Samples))
	}
	for k, copies := range c.Samples {
		if copies != 1 {
			t.Errorf("sample %s is in the stream %d times", k, copies)
		}
	}
	if got := rig.counter(t, "cost.collector.rejected.batches"); len(got) != 0 {
		t.Errorf("rejected batches = %v, want none", got)
	}
	if _, names := rejectedFiles(t, dir); len(names) != 0 || rig.sp.Rejected() != 0 {
		t.Fatalf("rejected/ holds %v", names)
	}
}

// TestImportReportsRefusedMessages: the file import does not retry a
// message JetStream refuses for good; it publishes the others and fails
// with ErrRefused naming the reason.
func TestImportReportsRefusedMessages(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := startServer(t, nil)
	_, js := connectWithStream(ctx, t, n, samplesStream(4096))
	pub, err := collector.NewPublisher(js, collector.PublisherConfig{MaxBatch: 100, AckTimeout: 2 * time.Second}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	sim, err := collector.NewSimulator(collector.SimConfig{Clusters: []string{"c1", "c2"}, Projects: 2, Namespaces: 40, Interval: time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// c1: one message of 3 samples; c2: one of 30 (~10 KB).
	ss := append(samplesFor(sim, "c1", 3, 0), samplesFor(sim, "c2", 30, 0)...)
	err = pub.Publish(ctx, ss)
	if !errors.Is(err, collector.ErrRefused) || !strings.Contains(err.Error(), collector.RefusedMaxMsgSize) || !strings.Contains(err.Error(), "cost.samples.c2") {
		t.Fatalf("publish: err = %v, want ErrRefused (max_msg_size, cost.samples.c2)", err)
	}
	if c := ReadStream(ctx, t, js); c.Messages != 1 || len(c.Samples) != 3 {
		t.Fatalf("stream holds %d messages and %d samples, want 1 and 3", c.Messages, len(c.Samples))
	}
}

// samplesStream is COST_SAMPLES as the aggregator creates it, with
// maxMsgSize (0: no limit).
func samplesStream(maxMsgSize int32) jetstream.StreamConfig {
	return jetstream.StreamConfig{Name: stream.Samples, Subjects: []string{stream.SamplesPrefix + ">"}, Duplicates: 10 * time.Minute, MaxMsgSize: maxMsgSize}
}

// connectWithStream connects to n (closed when the test ends) and creates
// the samples stream cfg.
func connectWithStream(ctx context.Context, t *testing.T, n *natsServer, cfg jetstream.StreamConfig) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, js, err := natsconn.Connect(n.url(), "refusal-test", quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	return nc, js
}
