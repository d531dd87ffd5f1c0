package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisCluster is a Redis Cluster of redis-server children: masters with
// one replica each, every node with its own temp directory, port and
// cluster bus port. Tests kill masters with SIGKILL and watch a replica
// take over, as in production.
type RedisCluster struct {
	t     testing.TB
	Nodes []*Redis
}

// ClusterNodeTimeout is the cluster-node-timeout of test clusters: a
// killed master is failed over about two timeouts later. At 1 s a node
// starved of CPU on a busy 2-core machine (a parallel build, a bench) was
// failed over by its peers in the middle of tests that kill nothing
// (CLUSTERDOWN); 3 s rides that out.
const ClusterNodeTimeout = 3000 * time.Millisecond

// StartRedisCluster starts 3 masters and 3 replicas (cluster-enabled,
// cluster-node-timeout ClusterNodeTimeout, AOF with appendfsync everysec
// unless opts say otherwise), creates the cluster with
// redis-cli --cluster create --cluster-replicas 1 and waits until every
// node reports cluster_state:ok and every replica is in sync. Each node's
// cluster bus listens on a port of its own (cluster-port), so no
// port+10000 needs to be free. It fails the test, saying how to install
// them, when redis-server or redis-cli is absent.
func StartRedisCluster(t testing.TB, opts ...RedisOption) *RedisCluster {
	t.Helper()
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Fatalf("redis-cli not found in PATH: install it (Debian/Ubuntu: apt-get install redis-tools; macOS: brew install redis)")
	}
	c := &RedisCluster{t: t}
	base := append([]RedisOption{WithAOF()}, opts...)
	for i := 0; i < 6; i++ {
		bus := FreePort(t)
		node := append(append([]RedisOption(nil), base...), WithArgs(
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", strconv.Itoa(int(ClusterNodeTimeout/time.Millisecond)),
			"--cluster-port", strconv.Itoa(bus),
			// A replica may take over however long it was cut off: tests
			// kill masters at will and expect a failover every time.
			"--cluster-replica-validity-factor", "0",
		))
		c.Nodes = append(c.Nodes, StartRedis(t, node...))
	}
	args := []string{"--cluster", "create"}
	for _, n := range c.Nodes {
		args = append(args, n.Addr())
	}
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	out, err := exec.Command("redis-cli", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c.WaitHealthy(60 * time.Second)
	return c
}

// URL is the cluster URL in go-redis's form,
// redis://host1:port1?addr=host2:port2&addr=…, listing every node.
func (c *RedisCluster) URL() string {
	var b strings.Builder
	b.WriteString("redis://" + c.Nodes[0].Addr())
	for i, n := range c.Nodes[1:] {
		if i == 0 {
			b.WriteString("?")
		} else {
			b.WriteString("&")
		}
		b.WriteString("addr=" + n.Addr())
	}
	return b.String()
}

// Addrs lists every node's host:port.
func (c *RedisCluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr()
	}
	return out
}

// Client returns a cluster client closed at the end of the test. It
// reloads the slot map every second: a client that only ever talks to a
// killed master gets no MOVED reply to learn of the failover from.
func (c *RedisCluster) Client() *redis.ClusterClient {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), ClusterStateReloadInterval: time.Second})
	c.t.Cleanup(func() { cc.Close() })
	return cc
}

// nodeClient is a plain client of one node, for CLUSTER and INFO commands.
func nodeClient(n *Redis) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: n.Addr(), DialTimeout: time.Second, ReadTimeout: 2 * time.Second, MaxRetries: -1})
}

// Running reports whether the node's process runs.
func (r *Redis) Running() bool { return r.cmd != nil }

// Port is the node's client port.
func (r *Redis) Port() int { return r.port }

// Info returns one INFO section of the node as key/value pairs.
func (r *Redis) Info(ctx context.Context, section string) (map[string]string, error) {
	nc := nodeClient(r)
	defer nc.Close()
	s, err := nc.Info(ctx, section).Result()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && !strings.HasPrefix(k, "#") {
			out[k] = v
		}
	}
	return out, nil
}

// health says why the cluster is not healthy yet, or "" when every
// running node reports cluster_state:ok, every slot has a master that
// runs, and every running replica's link to its master is up.
func (c *RedisCluster) health(ctx context.Context) string {
	masters := 0
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		ci, err := n.clusterInfo(ctx)
		if err != nil {
			return fmt.Sprintf("node %s: %v", n.Addr(), err)
		}
		if ci["cluster_state"] != "ok" {
			return fmt.Sprintf("node %s: cluster_state:%s", n.Addr(), ci["cluster_state"])
		}
		rep, err := n.Info(ctx, "replication")
		if err != nil {
			return fmt.Sprintf("node %s: %v", n.Addr(), err)
		}
		switch rep["role"] {
		case "master":
			masters++
		case "slave":
			if rep["master_link_status"] != "up" || rep["master_sync_in_progress"] != "0" {
				return fmt.Sprintf("replica %s: master link %s", n.Addr(), rep["master_link_status"])
			}
		}
	}
	if masters < 3 {
		return fmt.Sprintf("%d running masters", masters)
	}
	slots, err := c.slots(ctx)
	if err != nil {
		return err.Error()
	}
	covered := 0
	for _, s := range slots {
		m := c.node(s.Nodes[0].Addr)
		if m == nil || !m.Running() {
			return fmt.Sprintf("slots %d-%d: master %s is not running", s.Start, s.End, s.Nodes[0].Addr)
		}
		covered += int(s.End-s.Start) + 1
	}
	if covered != 16384 {
		return fmt.Sprintf("%d of 16384 slots covered", covered)
	}
	return ""
}

func (r *Redis) clusterInfo(ctx context.Context) (map[string]string, error) {
	nc := nodeClient(r)
	defer nc.Close()
	s, err := nc.ClusterInfo(ctx).Result()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			out[k] = v
		}
	}
	return out, nil
}

// slots is CLUSTER SLOTS as seen by the first running node.
func (c *RedisCluster) slots(ctx context.Context) ([]redis.ClusterSlot, error) {
	var last error
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		nc := nodeClient(n)
		//lint:ignore SA1019 CLUSTER SLOTS still answers in Redis 7 and gives the slot ranges this harness needs directly.
		s, err := nc.ClusterSlots(ctx).Result()
		nc.Close()
		if err == nil {
			return s, nil
		}
		last = err
	}
	return nil, fmt.Errorf("cluster slots: %v", last)
}

func (c *RedisCluster) node(addr string) *Redis {
	for _, n := range c.Nodes {
		if n.Addr() == addr {
			return n
		}
	}
	return nil
}

// WaitHealthy waits until every running node reports cluster_state:ok,
// every slot's master runs and every replica is in sync.
func (c *RedisCluster) WaitHealthy(within time.Duration) {
	c.t.Helper()
	Eventually(c.t, within, "redis cluster healthy", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		why := c.health(ctx)
		return why == "", why
	})
}

// Masters returns the nodes that serve slots now.
func (c *RedisCluster) Masters() []*Redis {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	slots, err := c.slots(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	seen := map[string]bool{}
	var out []*Redis
	for _, s := range slots {
		a := s.Nodes[0].Addr
		if !seen[a] {
			seen[a] = true
			if n := c.node(a); n != nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// MasterOfSlot returns the node serving slot now.
func (c *RedisCluster) MasterOfSlot(slot int) *Redis {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	slots, err := c.slots(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	for _, s := range slots {
		if int(s.Start) <= slot && slot <= int(s.End) {
			if n := c.node(s.Nodes[0].Addr); n != nil {
				return n
			}
		}
	}
	c.t.Fatalf("no master serves slot %d", slot)
	return nil
}

// MasterOf returns the node serving key's slot now.
func (c *RedisCluster) MasterOf(key string) *Redis {
	c.t.Helper()
	return c.MasterOfSlot(KeySlot(key))
}

// KillMaster kills the master of slot with SIGKILL, waits until a replica
// took its slots over and the cluster is healthy again, and returns the
// killed node (restart it with Restart; it comes back as a replica).
func (c *RedisCluster) KillMaster(slot int) *Redis {
	c.t.Helper()
	old := c.MasterOfSlot(slot)
	old.Kill()
	Eventually(c.t, 60*time.Second, "a replica takes over slot "+strconv.Itoa(slot), func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		slots, err := c.slots(ctx)
		if err != nil {
			return false, err.Error()
		}
		for _, s := range slots {
			if int(s.Start) <= slot && slot <= int(s.End) {
				if s.Nodes[0].Addr == old.Addr() {
					return false, "still served by the killed master " + old.Addr()
				}
				return true, ""
			}
		}
		return false, "slot not served"
	})
	c.WaitHealthy(60 * time.Second)
	return old
}

// Restart starts a stopped or killed node again on its ports and
// directory; it rejoins the cluster from its nodes.conf. It waits until
// the cluster is healthy.
func (c *RedisCluster) Restart(n *Redis) {
	c.t.Helper()
	n.Restart()
	c.WaitHealthy(60 * time.Second)
}

// KeySlot is the Redis Cluster slot of key: CRC16 (XMODEM) of the key,
// or of its hash tag when it has one, modulo 16384.
func KeySlot(key string) int {
	if s := strings.IndexByte(key, '{'); s >= 0 {
		if e := strings.IndexByte(key[s+1:], '}'); e > 0 {
			key = key[s+1 : s+1+e]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for j := 0; j < 8; j++ {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % 16384
}

// mainTB stands in for a test where a package's TestMain starts a server
// shared by all its tests: failures panic (StartRedisClusterForMain turns
// them into an error), cleanups run when the package's tests are done.
type mainTB struct {
	testing.TB
	dirs     []string
	cleanups []func()
}

func (m *mainTB) Helper()                           {}
func (m *mainTB) Logf(string, ...any)               {}
func (m *mainTB) Fatalf(format string, args ...any) { panic(mainFailure(fmt.Sprintf(format, args...))) }
func (m *mainTB) Fatal(args ...any)                 { panic(mainFailure(fmt.Sprint(args...))) }
func (m *mainTB) Cleanup(f func())                  { m.cleanups = append(m.cleanups, f) }
func (m *mainTB) TempDir() string {
	d, err := os.MkdirTemp("", "costmeter-cluster-")
	if err != nil {
		m.Fatal(err)
	}
	m.dirs = append(m.dirs, d)
	return d
}

type mainFailure string

func (m *mainTB) stop() {
	for i := len(m.cleanups) - 1; i >= 0; i-- {
		m.cleanups[i]()
	}
	for _, d := range m.dirs {
		os.RemoveAll(d)
	}
}

// StartRedisClusterForMain starts a cluster like StartRedisCluster for a
// whole test package, from its TestMain: one cluster for every test keeps
// the suite fast. Call stop after m.Run.
func StartRedisClusterForMain(opts ...RedisOption) (c *RedisCluster, stop func(), err error) {
	m := &mainTB{}
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(mainFailure)
			if !ok {
				panic(r)
			}
			m.stop()
			c, stop, err = nil, nil, errors.New(string(f))
		}
	}()
	c = StartRedisCluster(m, opts...)
	return c, m.stop, nil
}

// Flush empties every master of the cluster.
func (c *RedisCluster) Flush(ctx context.Context) error {
	for _, n := range c.Masters() {
		nc := nodeClient(n)
		err := nc.FlushAll(ctx).Err()
		nc.Close()
		if err != nil {
			return fmt.Errorf("flush %s: %w", n.Addr(), err)
		}
	}
	return nil
}
