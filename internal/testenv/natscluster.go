package testenv

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natstest "github.com/nats-io/nats-server/v2/test"
)

// globalAccount is the account of clients of a server without accounts.
const globalAccount = "$G"

// NATSCluster is a real JetStream cluster: n nats-servers embedded in the
// test process, each with its own client port, route port and store, all
// routed to each other. A node can be stopped and started again on the
// same ports and store while the others run.
type NATSCluster struct {
	t     testing.TB
	nodes []*NATSNode
}

// NATSNode is one server of a NATSCluster.
type NATSNode struct {
	t    testing.TB
	opts server.Options
	srv  *server.Server // nil while stopped
}

// StartNATSCluster starts an n-node JetStream cluster (n ≥ 3 for a
// quorum that survives a node) on free ports and waits until it elected a
// meta leader and every node is current. The nodes are named n1, n2, ….
func StartNATSCluster(t testing.TB, n int) *NATSCluster {
	t.Helper()
	clientPorts, routePorts := make([]int, n), make([]int, n)
	for i := range n {
		clientPorts[i], routePorts[i] = FreePort(t), FreePort(t)
	}
	var routes []string
	for _, p := range routePorts {
		routes = append(routes, "nats-route://127.0.0.1:"+strconv.Itoa(p))
	}
	c := &NATSCluster{t: t}
	for i := range n {
		opts := natstest.DefaultTestOptions
		opts.ServerName = "n" + strconv.Itoa(i+1)
		opts.Port = clientPorts[i]
		opts.JetStream = true
		opts.StoreDir = t.TempDir()
		// Small limits: three servers share the test machine, and a
		// server reserves its limits against the others' accounts.
		opts.JetStreamMaxMemory = 64 << 20
		opts.JetStreamMaxStore = 1 << 30
		opts.Cluster.Name = "cost-test"
		opts.Cluster.Host = "127.0.0.1"
		opts.Cluster.Port = routePorts[i]
		opts.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		c.nodes = append(c.nodes, &NATSNode{t: t, opts: opts})
	}
	// Start every node before waiting for any: a node waits for its
	// routes before it answers JetStream.
	for _, nd := range c.nodes {
		nd.start()
	}
	t.Cleanup(c.Stop)
	c.WaitReady(60 * time.Second)
	return c
}

// URL is the client URL list of every node, comma separated (the nats.go
// convention that --nats-url takes).
func (c *NATSCluster) URL() string {
	var urls []string
	for _, nd := range c.nodes {
		urls = append(urls, nd.URL())
	}
	return strings.Join(urls, ",")
}

// Nodes returns the cluster's nodes in order (n1 first).
func (c *NATSCluster) Nodes() []*NATSNode { return c.nodes }

// Node returns the node named name (n1, n2, …), or nil.
func (c *NATSCluster) Node(name string) *NATSNode {
	for _, nd := range c.nodes {
		if nd.Name() == name {
			return nd
		}
	}
	return nil
}

// Stop shuts every node down (idempotent).
func (c *NATSCluster) Stop() {
	for _, nd := range c.nodes {
		nd.Stop()
	}
}

// WaitReady waits until a meta leader is elected and every running node
// is current with it, failing the test after within.
func (c *NATSCluster) WaitReady(within time.Duration) {
	c.t.Helper()
	Eventually(c.t, within, "nats cluster has a meta leader and every node is current", func() (bool, string) {
		if c.MetaLeader() == nil {
			return false, "no meta leader"
		}
		for _, nd := range c.nodes {
			if nd.srv != nil && !nd.srv.JetStreamIsCurrent() {
				return false, nd.Name() + " not current"
			}
		}
		return true, ""
	})
}

// MetaLeader returns the node that leads the JetStream meta group (it
// places streams and consumers), or nil while none does.
func (c *NATSCluster) MetaLeader() *NATSNode {
	for _, nd := range c.nodes {
		if nd.srv != nil && nd.srv.JetStreamIsLeader() {
			return nd
		}
	}
	return nil
}

// StreamLeader returns the running node that leads stream (it orders and
// acknowledges its publishes), or nil while none does.
func (c *NATSCluster) StreamLeader(stream string) *NATSNode {
	for _, nd := range c.nodes {
		if nd.srv != nil && nd.srv.JetStreamIsStreamLeader(globalAccount, stream) {
			return nd
		}
	}
	return nil
}

// WaitStreamLeader waits until stream has a leader and returns it.
func (c *NATSCluster) WaitStreamLeader(stream string, within time.Duration) *NATSNode {
	c.t.Helper()
	var leader *NATSNode
	Eventually(c.t, within, "stream "+stream+" has a leader", func() (bool, string) {
		leader = c.StreamLeader(stream)
		return leader != nil, "no leader"
	})
	return leader
}

// StreamPeers returns how many running nodes hold a replica of stream
// that is current with its leader.
func (c *NATSCluster) StreamPeers(stream string) int {
	n := 0
	for _, nd := range c.nodes {
		if nd.srv != nil && nd.srv.JetStreamIsStreamAssigned(globalAccount, stream) && nd.srv.JetStreamIsStreamCurrent(globalAccount, stream) {
			n++
		}
	}
	return n
}

// Name is the node's server name (n1, n2, …).
func (nd *NATSNode) Name() string { return nd.opts.ServerName }

// URL is the node's client URL (valid while it is stopped too).
func (nd *NATSNode) URL() string { return "nats://127.0.0.1:" + strconv.Itoa(nd.opts.Port) }

// Running reports whether the node runs.
func (nd *NATSNode) Running() bool { return nd.srv != nil }

// Server is the running server (nil while stopped).
func (nd *NATSNode) Server() *server.Server { return nd.srv }

// Stop shuts the node down cleanly (idempotent).
func (nd *NATSNode) Stop() {
	if nd.srv != nil {
		nd.srv.Shutdown()
		nd.srv.WaitForShutdown()
		nd.srv = nil
	}
}

// Start starts a stopped node again on its ports and store; it rejoins
// the cluster and catches its replicas up.
func (nd *NATSNode) Start() {
	nd.t.Helper()
	if nd.srv == nil {
		nd.start()
	}
}

func (nd *NATSNode) start() {
	nd.t.Helper()
	opts := nd.opts
	srv, err := server.NewServer(&opts)
	if err != nil {
		nd.t.Fatalf("nats node %s: %v", nd.Name(), err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(20 * time.Second) {
		srv.Shutdown()
		nd.t.Fatalf("nats node %s did not accept connections on %s", nd.Name(), net.JoinHostPort(opts.Host, strconv.Itoa(opts.Port)))
	}
	nd.srv = srv
}

// String names the node for test messages.
func (nd *NATSNode) String() string { return fmt.Sprintf("%s (%s)", nd.Name(), nd.URL()) }
