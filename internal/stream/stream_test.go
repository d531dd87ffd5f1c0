package stream_test

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alauda/costmeter/internal/config"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/testenv"
)

func connect(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, js, err := natsconn.Connect(url, "stream-test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return js
}

// replicas reads every pipeline stream's configured replicas.
func replicas(t *testing.T, js jetstream.JetStream) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[string]int{}
	for _, name := range []string{stream.Samples, stream.DeadLetter, stream.Rollups} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		out[name] = st.CachedInfo().Config.Replicas
	}
	return out
}

func ensureAll(t *testing.T, js jetstream.JetStream, cfg stream.Config, opts ...stream.Option) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := stream.Ensure(ctx, js, cfg, opts...); err != nil {
		t.Fatal(err)
	}
	if err := stream.EnsureRollups(ctx, js, cfg, opts...); err != nil {
		t.Fatal(err)
	}
}

func wantReplicas(t *testing.T, js jetstream.JetStream, want int) {
	t.Helper()
	for name, got := range replicas(t, js) {
		if got != want {
			t.Fatalf("stream %s has %d replicas, want %d", name, got, want)
		}
	}
}

// TestReplicasOnCluster: on a 3-node JetStream cluster the streams are
// created with the configured replicas, a running stream is scaled up and
// down to the configured count, and a collector's CreateOnly never
// changes it.
func TestReplicasOnCluster(t *testing.T) {
	c := testenv.StartNATSCluster(t, 3)
	js := connect(t, c.URL())
	var logs testenv.LockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))

	one := stream.DefaultConfig()
	ensureAll(t, js, one, stream.WithLogger(log))
	wantReplicas(t, js, 1)

	three := stream.DefaultConfig()
	three.Replicas = 3
	ensureAll(t, js, three, stream.WithLogger(log))
	wantReplicas(t, js, 3)
	if n := strings.Count(logs.String(), "stream replicas changed"); n != 3 {
		t.Fatalf("%d replica changes logged, want 3:\n%s", n, logs.String())
	}
	testenv.Eventually(t, 30*time.Second, "every node holds a current replica of "+stream.Samples, func() (bool, string) {
		n := c.StreamPeers(stream.Samples)
		return n == 3, strings.Repeat("*", n)
	})

	// A collector with the default (1) leaves the streams alone.
	ensureAll(t, js, one, stream.CreateOnly(), stream.WithLogger(log))
	wantReplicas(t, js, 3)

	// Scaling down is allowed too.
	two := stream.DefaultConfig()
	two.Replicas = 2
	ensureAll(t, js, two, stream.WithLogger(log))
	wantReplicas(t, js, 2)
	if strings.Contains(logs.String(), "level=WARN") {
		t.Fatalf("warnings on a cluster that allows every change:\n%s", logs.String())
	}
}

// TestReplicasOnSingleServer: a single server cannot hold replicas; the
// streams are created with one and a warning says so, and a running
// stream keeps its replica while its other settings are still updated.
func TestReplicasOnSingleServer(t *testing.T) {
	n := testenv.StartNATS(t)
	js := connect(t, n.URL())
	var logs testenv.LockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))

	three := stream.DefaultConfig()
	three.Replicas = 3
	ensureAll(t, js, three, stream.WithLogger(log))
	wantReplicas(t, js, 1)
	if n := strings.Count(logs.String(), "single NATS server: stream created with 1 replica"); n != 3 {
		t.Fatalf("%d creation warnings, want 3:\n%s", n, logs.String())
	}

	logs.Reset()
	log = slog.New(slog.NewTextHandler(&logs, nil))
	three.SamplesMaxAge = 3 * time.Hour
	ensureAll(t, js, three, stream.WithLogger(log))
	wantReplicas(t, js, 1)
	if n := strings.Count(logs.String(), "stream keeps its replicas: JetStream refused the configured count"); n != 3 {
		t.Fatalf("%d update warnings, want 3:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "configured=3") || !strings.Contains(logs.String(), "replicas=1") {
		t.Fatalf("warning does not name both counts:\n%s", logs.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream.Samples)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().Config.MaxAge; got != 3*time.Hour {
		t.Fatalf("max age %s: the other settings were not updated", got)
	}
}

func TestReplicasFlag(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    int
		wantErr string
	}{
		{name: "default", want: 1},
		{name: "env", env: map[string]string{"COST_STREAM_REPLICAS": "3"}, want: 3},
		{name: "flag wins", args: []string{"--stream-replicas", "5"}, env: map[string]string{"COST_STREAM_REPLICAS": "3"}, want: 5},
		{name: "zero", args: []string{"--stream-replicas", "0"}, wantErr: "--stream-replicas: 0 is not within 1..5"},
		{name: "six", env: map[string]string{"COST_STREAM_REPLICAS": "6"}, wantErr: "--stream-replicas: 6 is not within 1..5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := newFlagSet()
			f := config.NewFlags(fs, func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
			cfg := stream.DefaultConfig()
			cfg.RegisterReplicas(f)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			err := cfg.Validate()
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || cfg.Replicas != tt.want {
				t.Fatalf("replicas %d, err %v; want %d", cfg.Replicas, err, tt.want)
			}
		})
	}
}

func newFlagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// TestEnsureUnchangedSendsNoUpdate: a component starting against streams that
// already have its settings sends no update request (an update racing another
// component's consumer creation is a data race inside nats-server), while a
// changed setting is still applied.
func TestEnsureUnchangedSendsNoUpdate(t *testing.T) {
	n := testenv.StartNATS(t)
	js := connect(t, n.URL())
	cfg := stream.DefaultConfig()
	ensureAll(t, js, cfg)

	nc, err := nats.Connect(n.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	updates, err := nc.SubscribeSync("$JS.API.STREAM.UPDATE.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	ensureAll(t, js, cfg)
	cfg.RollupsMaxAge = 2 * time.Hour
	ensureAll(t, js, cfg)
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		m, err := updates.NextMsg(time.Second)
		if err != nil {
			break
		}
		got = append(got, m.Subject)
	}
	if want := []string{"$JS.API.STREAM.UPDATE." + stream.Rollups}; !slices.Equal(got, want) {
		t.Fatalf("update requests %v, want only %v", got, want)
	}
}
