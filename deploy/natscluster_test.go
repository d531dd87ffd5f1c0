package deploy_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/internal/config"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/testenv"
)

// parseConf reads a config of deploy/nats with the real nats-server
// parser, the passwords and the server name in the environment.
func parseConf(t *testing.T, file, serverName string) *server.Options {
	t.Helper()
	for k, v := range natsPasswords {
		t.Setenv(k, v)
	}
	t.Setenv("SERVER_NAME", serverName)
	opts, err := server.ProcessConfigFile(file)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return opts
}

// TestNATSClusterConfig parses deploy/nats/nats-cluster.conf with the real
// server parser: the users and permissions of nats-server.conf, a
// JetStream cluster of the three StatefulSet pods. Then it runs three
// servers from it (ports and store moved to the test's) and uses them as
// the components do: the aggregator creates the three streams with 3
// replicas, a collector publishes through the list of servers, and a
// collector still cannot change a stream.
func TestNATSClusterConfig(t *testing.T) {
	single := parseConf(t, "nats/nats-server.conf", "x")
	opts := parseConf(t, "nats/nats-cluster.conf", "cost-nats-1")
	if opts.ServerName != "cost-nats-1" {
		t.Errorf("server_name %q: not taken from SERVER_NAME", opts.ServerName)
	}
	if !opts.JetStream || opts.StoreDir != "/data" {
		t.Errorf("JetStream %v in %q, want on in /data", opts.JetStream, opts.StoreDir)
	}
	if opts.SyncInterval != 2*time.Minute {
		t.Errorf("sync_interval %s, the documented 2m", opts.SyncInterval)
	}
	if opts.Cluster.Name != "cost-nats" || opts.Cluster.Port != 6222 {
		t.Errorf("cluster %q on %d", opts.Cluster.Name, opts.Cluster.Port)
	}
	var routes []string
	for _, r := range opts.Routes {
		routes = append(routes, r.Host)
	}
	wantRoutes := []string{"cost-nats-0.cost-nats-cluster.cost-system.svc:6222", "cost-nats-1.cost-nats-cluster.cost-system.svc:6222", "cost-nats-2.cost-nats-cluster.cost-system.svc:6222"}
	if !reflect.DeepEqual(routes, wantRoutes) {
		t.Errorf("routes %v, want %v", routes, wantRoutes)
	}
	if opts.LameDuckDuration <= opts.LameDuckGracePeriod || opts.PidFile == "" {
		t.Errorf("lame duck %s/%s, pid file %q: the pod's preStop needs them", opts.LameDuckDuration, opts.LameDuckGracePeriod, opts.PidFile)
	}
	if !reflect.DeepEqual(opts.Users, single.Users) || len(opts.Users) != len(natsPasswords) {
		t.Fatalf("the cluster config's users differ from nats-server.conf's: copy its authorization block")
	}

	// Three servers of this config.
	clientPorts, routePorts := make([]int, 3), make([]int, 3)
	var localRoutes []string
	for i := range 3 {
		clientPorts[i], routePorts[i] = testenv.FreePort(t), testenv.FreePort(t)
		localRoutes = append(localRoutes, "nats-route://127.0.0.1:"+strconv.Itoa(routePorts[i]))
	}
	var urls []string
	for i := range 3 {
		o := parseConf(t, "nats/nats-cluster.conf", fmt.Sprintf("cost-nats-%d", i))
		o.Host, o.Port = "127.0.0.1", clientPorts[i]
		o.HTTPPort, o.PidFile = 0, ""
		o.StoreDir = t.TempDir()
		o.Cluster.Host, o.Cluster.Port = "127.0.0.1", routePorts[i]
		o.Routes = server.RoutesFromStr(strings.Join(localRoutes, ","))
		o.NoLog, o.NoSigs = true, true
		o.JetStreamMaxMemory, o.JetStreamMaxStore = 64<<20, 1<<30
		srv, err := server.NewServer(o)
		if err != nil {
			t.Fatal(err)
		}
		go srv.Start()
		t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
		if !srv.ReadyForConnections(20 * time.Second) {
			t.Fatalf("server %d not ready", i)
		}
		urls = append(urls, srv.ClientURL())
	}
	as := func(user, password string) string {
		var out []string
		for _, u := range urls {
			out = append(out, strings.Replace(u, "nats://", "nats://"+url.UserPassword(user, password).String()+"@", 1))
		}
		return strings.Join(out, ",")
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	connect := func(user, pw, inbox string) jetstream.JetStream {
		nc, js, err := natsconn.Connect(as(user, pw), user, log, natsInbox(t, inbox)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return js
	}
	agg := connect("aggregator", natsPasswords["AGGREGATOR_PASSWORD"], "_INBOX_aggregator")
	east := connect("collector-sim-east", natsPasswords["COLLECTOR_SIM_EAST_PASSWORD"], "_INBOX_collector_sim-east")
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cfg := stream.DefaultConfig()
	cfg.Replicas = 3
	testenv.Eventually(t, 60*time.Second, "the aggregator creates the streams with 3 replicas", func() (bool, string) {
		octx, ocancel := context.WithTimeout(ctx, 10*time.Second)
		defer ocancel()
		if err := stream.Ensure(octx, agg, cfg); err != nil {
			return false, err.Error()
		}
		if err := stream.EnsureRollups(octx, agg, cfg); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	for _, name := range []string{stream.Samples, stream.DeadLetter, stream.Rollups} {
		st, err := agg.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info := st.CachedInfo()
		if info.Config.Replicas != 3 || info.Cluster == nil || info.Cluster.Name != "cost-nats" {
			t.Fatalf("%s: %d replicas in cluster %+v", name, info.Config.Replicas, info.Cluster)
		}
	}
	if err := stream.Ensure(ctx, east, stream.DefaultConfig(), stream.CreateOnly()); err != nil {
		t.Fatalf("collector: %v", err)
	}
	pub, err := collector.NewPublisher(east, collector.PublisherConfig{MaxBatch: 10}, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, natsSamples("sim-east", 30)); err != nil {
		t.Fatalf("collector publishes: %v", err)
	}
	st, err := agg.Stream(ctx, stream.Samples)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := st.Info(ctx); err != nil || info.State.Msgs != 3 {
		t.Fatalf("samples stream: %+v %v", info, err)
	}
	// The collector's default (1 replica) does not scale the stream down:
	// it may not update streams at all.
	uctx, ucancel := context.WithTimeout(ctx, 5*time.Second)
	defer ucancel()
	if err := stream.Ensure(uctx, east, stream.DefaultConfig()); err == nil {
		t.Fatal("a collector updated a stream")
	}
	if st, err := agg.Stream(ctx, stream.Samples); err != nil || st.CachedInfo().Config.Replicas != 3 {
		t.Fatalf("replicas after the collector: %v", err)
	}
}

// natsInbox is the connect options of a component whose user may receive
// replies under inbox only.
func natsInbox(t *testing.T, inbox string) []nats.Option {
	t.Helper()
	opts, err := natsconn.SecurityOptions(config.NATSSecurity{InboxPrefix: inbox})
	if err != nil {
		t.Fatal(err)
	}
	return opts
}
