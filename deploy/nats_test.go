package deploy_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natstest "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alauda/costmeter/aggregator"
	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/internal/config"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/testenv"
)

// Passwords of the sample config's users, from the environment as in
// production.
var natsPasswords = map[string]string{
	"COLLECTOR_SIM_EAST_PASSWORD": "east-pw-1f3a",
	"COLLECTOR_SIM_WEST_PASSWORD": "west-pw-7c2d",
	"AGGREGATOR_PASSWORD":         "agg-pw-9b4e",
	"API_PASSWORD":                "api-pw-3d8a",
	"NOTIFIER_PASSWORD":           "notifier-pw-2a7c",
	"ADMIN_PASSWORD":              "admin-pw-5e6f",
}

// startConfiguredNATS runs deploy/nats/nats-server.conf as shipped, on a
// free port with its store in a temp dir.
func startConfiguredNATS(t *testing.T) *server.Server {
	t.Helper()
	for k, v := range natsPasswords {
		t.Setenv(k, v)
	}
	opts, err := server.ProcessConfigFile("nats/nats-server.conf")
	if err != nil {
		t.Fatalf("nats-server.conf: %v", err)
	}
	if !opts.JetStream {
		t.Fatal("nats-server.conf: JetStream is off")
	}
	opts.Port = -1
	opts.HTTPPort = 0
	opts.StoreDir = t.TempDir()
	opts.NoLog, opts.NoSigs = true, true
	srv := natstest.RunServer(opts)
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return srv
}

type natsClient struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	errs chan error
}

// connectAs connects with user's password in the URL and its inbox prefix,
// through natsconn as the binaries do.
func connectAs(t *testing.T, srv *server.Server, user, password, inbox string) *natsClient {
	t.Helper()
	url := strings.Replace(srv.ClientURL(), "nats://", fmt.Sprintf("nats://%s:%s@", user, password), 1)
	sec, err := natsconn.SecurityOptions(config.NATSSecurity{InboxPrefix: inbox})
	if err != nil {
		t.Fatal(err)
	}
	c := &natsClient{errs: make(chan error, 64)}
	sec = append(sec, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case c.errs <- err:
		default:
		}
	}))
	c.nc, c.js, err = natsconn.Connect(url, user, slog.New(slog.NewTextHandler(io.Discard, nil)), sec...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.nc.Close)
	testenv.Eventually(t, 10*time.Second, user+" connected", func() (bool, string) {
		return c.nc.Status() == nats.CONNECTED, c.nc.Status().String()
	})
	return c
}

// denied runs op and waits for the server's permissions violation.
func (c *natsClient) denied(t *testing.T, what string, op func() error) {
	t.Helper()
	for len(c.errs) > 0 {
		<-c.errs
	}
	if err := op(); err != nil && !strings.Contains(strings.ToLower(err.Error()), "permission") {
		t.Fatalf("%s: %v", what, err)
	}
	_ = c.nc.Flush()
	select {
	case err := <-c.errs:
		if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Fatalf("%s: err = %v, want a permissions violation", what, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s was allowed", what)
	}
}

func natsSamples(cluster string, n int) []sample.Sample {
	start := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	out := make([]sample.Sample, n)
	for i := range out {
		out[i] = sample.Sample{
			Cluster: cluster, Project: "payments", Namespace: fmt.Sprintf("ns-%d", i%3),
			Start: start.Add(time.Duration(i) * time.Minute), End: start.Add(time.Duration(i+1) * time.Minute),
			CPU: sample.Resources{Usage: 0.5, Request: 1},
		}
	}
	return out
}

// TestNATSPermissions runs the real collector publisher and aggregator as
// the sample config's users: the pipeline works with exactly these rights,
// a collector can neither publish for another cluster nor read anything,
// and the aggregator cannot publish samples.
func TestNATSPermissions(t *testing.T) {
	srv := startConfiguredNATS(t)
	red := testenv.StartRedis(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()

	east := connectAs(t, srv, "collector-sim-east", natsPasswords["COLLECTOR_SIM_EAST_PASSWORD"], "_INBOX_collector_sim-east")
	west := connectAs(t, srv, "collector-sim-west", natsPasswords["COLLECTOR_SIM_WEST_PASSWORD"], "_INBOX_collector_sim-west")
	agg := connectAs(t, srv, "aggregator", natsPasswords["AGGREGATOR_PASSWORD"], "_INBOX_aggregator")

	// A collector starts first: it creates the streams, as
	// cmd/collector does (never updating an existing one).
	if err := stream.Ensure(ctx, east.js, stream.DefaultConfig(), stream.CreateOnly()); err != nil {
		t.Fatalf("collector creates the streams: %v", err)
	}
	for _, c := range []*natsClient{east, west} {
		if err := stream.Ensure(ctx, c.js, stream.DefaultConfig(), stream.CreateOnly()); err != nil {
			t.Fatalf("%s finds the streams: %v", c.nc.Opts.Name, err)
		}
	}
	// The aggregator updates them to its flags.
	if err := stream.Ensure(ctx, agg.js, stream.DefaultConfig()); err != nil {
		t.Fatalf("aggregator updates the streams: %v", err)
	}
	for _, c := range []struct {
		cl      *natsClient
		cluster string
	}{{east, "sim-east"}, {west, "sim-west"}} {
		pub, err := collector.NewPublisher(c.cl.js, collector.PublisherConfig{MaxBatch: 10}, log)
		if err != nil {
			t.Fatal(err)
		}
		if err := pub.Publish(ctx, natsSamples(c.cluster, 30)); err != nil {
			t.Fatalf("collector %s publishes: %v", c.cluster, err)
		}
	}

	store, err := rollup.NewStore(red.Client(), time.UTC, 20*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.LoadScripts(ctx); err != nil {
		t.Fatal(err)
	}
	acfg := aggregator.DefaultConfig()
	acfg.HealInterval = 200 * time.Millisecond
	a, err := aggregator.New(acfg, agg.js, store, aggregator.WithLogger(log),
		aggregator.WithClock(func() time.Time { return time.Date(2025, 6, 10, 0, 0, 0, 0, time.UTC) }))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("aggregator: %v", err)
		}
	}()
	day := rollup.DayOf(time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC), time.UTC)
	testenv.Eventually(t, 30*time.Second, "the aggregator counts both clusters", func() (bool, string) {
		for _, cl := range []string{"sim-east", "sim-west"} {
			if _, ok, err := store.DayValues(ctx, day, rollup.ScopeCluster, cl); err != nil || !ok {
				return false, fmt.Sprintf("%s: ok %v err %v", cl, ok, err)
			}
		}
		return true, ""
	})
	for len(agg.errs) > 0 {
		if err := <-agg.errs; err != nil {
			t.Fatalf("aggregator hit a permission: %v", err)
		}
	}

	// What they must not do.
	east.denied(t, "east publishing for west", func() error { return east.nc.Publish("cost.samples.sim-west", []byte("{}")) })
	east.denied(t, "east reading samples", func() error { _, err := east.nc.SubscribeSync("cost.samples.>"); return err })
	east.denied(t, "east reading other inboxes", func() error { _, err := east.nc.SubscribeSync("_INBOX_aggregator.>"); return err })
	east.denied(t, "east fetching from the consumer", func() error {
		return east.nc.Publish("$JS.API.CONSUMER.MSG.NEXT.COST_SAMPLES.aggregator", []byte("1"))
	})
	east.denied(t, "east deleting the stream", func() error { return east.nc.Publish("$JS.API.STREAM.DELETE.COST_SAMPLES", nil) })
	east.denied(t, "east updating the stream", func() error { return east.nc.Publish("$JS.API.STREAM.UPDATE.COST_SAMPLES", []byte("{}")) })
	agg.denied(t, "aggregator publishing samples", func() error { return agg.nc.Publish("cost.samples.sim-east", []byte("{}")) })
	agg.denied(t, "aggregator deleting the stream", func() error { return agg.nc.Publish("$JS.API.STREAM.DELETE.COST_SAMPLES", nil) })

	// No password (or the wrong one), no entry.
	for _, url := range []string{srv.ClientURL(), strings.Replace(srv.ClientURL(), "nats://", "nats://api:x@", 1)} {
		if nc, err := nats.Connect(url); err == nil {
			nc.Close()
			t.Fatalf("%s connected", config.RedactURL(url))
		}
	}
}
