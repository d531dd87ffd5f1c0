package benchrun

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/alauda/costmeter/internal/redischild"
	"github.com/alauda/costmeter/internal/rollup"
)

// redisCluster is a Redis Cluster of 3 masters and 3 replicas as
// redis-server children (AOF with appendfsync everysec, as production).
type redisCluster struct {
	nodes []*redischild.Child
	rdb   redis.UniversalClient
}

// startCluster starts the six nodes under dir and creates the cluster
// with redis-cli --cluster create --cluster-replicas 1.
func startCluster(ctx context.Context, dir string, nice int) (*redisCluster, error) {
	if _, err := exec.LookPath("redis-cli"); err != nil {
		return nil, fmt.Errorf("redis-cli not found in PATH (install it: apt-get install redis-tools)")
	}
	c := &redisCluster{}
	args := []string{"--cluster", "create"}
	for i := 0; i < 6; i++ {
		port, err := freePort()
		if err != nil {
			c.close()
			return nil, err
		}
		bus, err := freePort()
		if err != nil {
			c.close()
			return nil, err
		}
		n, err := redischild.Start(ctx, filepath.Join(dir, "cluster-"+strconv.Itoa(i)), port,
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
			"--cluster-port", strconv.Itoa(bus))
		if err != nil {
			c.close()
			return nil, fmt.Errorf("start cluster node: %w", err)
		}
		c.nodes = append(c.nodes, n)
		if nice != 0 {
			if err := n.Renice(nice); err != nil {
				c.close()
				return nil, err
			}
		}
		args = append(args, n.Addr())
	}
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		c.close()
		return nil, fmt.Errorf("redis-cli --cluster create: %v: %s", err, out)
	}
	url := "redis://" + c.nodes[0].Addr()
	for i, n := range c.nodes[1:] {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		url += sep + "addr=" + n.Addr()
	}
	rdb, err := rollup.Dial(url)
	if err != nil {
		c.close()
		return nil, err
	}
	c.rdb = rdb
	deadline := time.Now().Add(time.Minute)
	for {
		ok, why := c.healthy(ctx)
		if ok {
			return c, nil
		}
		if time.Now().After(deadline) {
			c.close()
			return nil, fmt.Errorf("redis cluster not healthy within a minute: %s", why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// healthy reports whether every node says cluster_state:ok and three
// masters have an in-sync replica each.
func (c *redisCluster) healthy(ctx context.Context) (bool, string) {
	synced := 0
	for _, n := range c.nodes {
		nc := redis.NewClient(&redis.Options{Addr: n.Addr()})
		ci, err := nc.ClusterInfo(ctx).Result()
		rep, err2 := nc.Info(ctx, "replication").Result()
		nc.Close()
		if err != nil || err2 != nil {
			return false, fmt.Sprint(err, err2)
		}
		if !strings.Contains(ci, "cluster_state:ok") {
			return false, n.Addr() + " not ok"
		}
		if strings.Contains(rep, "role:slave") && strings.Contains(rep, "master_link_status:up") {
			synced++
		}
	}
	if synced < 3 {
		return false, fmt.Sprintf("%d replicas in sync", synced)
	}
	return true, ""
}

// masters returns a plain client of each master, for INFO and SLOWLOG.
func (c *redisCluster) masters(ctx context.Context) ([]*redis.Client, error) {
	cc := c.rdb.(*redis.ClusterClient)
	var out []*redis.Client
	for _, n := range c.nodes {
		nc := redis.NewClient(&redis.Options{Addr: n.Addr()})
		rep, err := nc.Info(ctx, "replication").Result()
		if err != nil {
			nc.Close()
			return nil, err
		}
		if strings.Contains(rep, "role:master") {
			out = append(out, nc)
		} else {
			nc.Close()
		}
	}
	_ = cc
	return out, nil
}

func (c *redisCluster) close() {
	if c.rdb != nil {
		c.rdb.Close()
	}
	for _, n := range c.nodes {
		n.Stop()
	}
}

// writeCommands are the commands the store writes with; INFO
// commandstats counts a script's inner calls too.
var writeCommands = []string{"evalsha", "eval", "bitfield", "hset", "zadd", "zrem", "expireat", "expire", "incr", "set", "del", "unlink", "rename", "renamenx"}

// writeCalls is the number of write commands node has run so far.
func writeCalls(ctx context.Context, node *redis.Client) (int64, error) {
	txt, err := node.Info(ctx, "commandstats").Result()
	if err != nil {
		return 0, fmt.Errorf("redis info commandstats: %w", err)
	}
	var sum int64
	for _, line := range strings.Split(txt, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		name = strings.TrimPrefix(name, "cmdstat_")
		for _, w := range writeCommands {
			if name == w {
				calls, _, _ := strings.Cut(strings.TrimPrefix(rest, "calls="), ",")
				n, _ := strconv.ParseInt(calls, 10, 64)
				sum += n
			}
		}
	}
	return sum, nil
}

// slowest arms SLOWLOG (every command of 1 ms or more) and the latency
// monitor on nodes; the returned function reports the longest command
// since, with its name, and the longest latency event.
func slowest(ctx context.Context, nodes []*redis.Client) func() (time.Duration, string, time.Duration) {
	for _, n := range nodes {
		n.ConfigSet(ctx, "slowlog-log-slower-than", "1000")
		n.ConfigSet(ctx, "slowlog-max-len", "4096")
		n.ConfigSet(ctx, "latency-monitor-threshold", "1")
		n.SlowLogReset(ctx)
		n.Do(ctx, "LATENCY", "RESET")
	}
	return func() (time.Duration, string, time.Duration) {
		var worst time.Duration
		var what string
		var lat time.Duration
		for _, n := range nodes {
			logs, err := n.SlowLogGet(ctx, 4096).Result()
			if err == nil {
				for _, l := range logs {
					if l.Duration > worst {
						worst = l.Duration
						what = strings.Join(trimArgs(l.Args), " ")
					}
				}
			}
			if res, err := n.Do(ctx, "LATENCY", "LATEST").Slice(); err == nil {
				for _, ev := range res {
					if e, ok := ev.([]any); ok && len(e) >= 4 {
						if ms, ok := e[3].(int64); ok && time.Duration(ms)*time.Millisecond > lat {
							lat = time.Duration(ms) * time.Millisecond
						}
					}
				}
			}
		}
		return worst, what, lat
	}
}

func trimArgs(args []string) []string {
	if len(args) > 3 {
		args = args[:3]
	}
	out := make([]string, len(args))
	for i, a := range args {
		if len(a) > 40 {
			a = a[:40] + "…"
		}
		out[i] = a
	}
	return out
}
