package benchrun

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/alauda/costmeter/internal/redischild"
	"github.com/alauda/costmeter/internal/redisconn"
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
	rdb, err := redisconn.Dial(url)
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

// slowCommands is what slowest reports: the longest command with its
// name, the longest latency event, how many commands took 10 ms or more
// and 5 ms or more, and the worst node's evalsha percentiles (INFO
// latencystats, since the reset).
type slowCommands struct {
	worst, latency    time.Duration
	what              string
	over10, over5     int
	scriptPercentiles string
	// err: a node's SLOWLOG could not be read (worst is then not known).
	err error
}

// slowest arms SLOWLOG (every command of 1 ms or more), the latency
// monitor and the latency statistics on nodes; the returned function
// reports on the commands since.
func slowest(ctx context.Context, nodes []*redis.Client) func() slowCommands {
	for _, n := range nodes {
		n.ConfigSet(ctx, "slowlog-log-slower-than", "1000")
		n.ConfigSet(ctx, "slowlog-max-len", "100000")
		n.ConfigSet(ctx, "latency-monitor-threshold", "1")
		n.SlowLogReset(ctx)
		n.Do(ctx, "LATENCY", "RESET")
		n.ConfigResetStat(ctx)
	}
	return func() slowCommands {
		var out slowCommands
		var worstP99 float64
		for _, n := range nodes {
			logs, err := n.SlowLogGet(ctx, 100000).Result()
			if err != nil {
				out.err = errors.Join(out.err, fmt.Errorf("read the slow log of %s: %w", n.Options().Addr, err))
			}
			if err == nil {
				for _, l := range logs {
					if l.Duration >= 10*time.Millisecond {
						out.over10++
					}
					if l.Duration >= 5*time.Millisecond {
						out.over5++
					}
					if l.Duration > out.worst {
						out.worst = l.Duration
						out.what = strings.Join(trimArgs(l.Args), " ")
					}
				}
			}
			if res, err := n.Do(ctx, "LATENCY", "LATEST").Slice(); err == nil {
				for _, ev := range res {
					if e, ok := ev.([]any); ok && len(e) >= 4 {
						if ms, ok := e[3].(int64); ok && time.Duration(ms)*time.Millisecond > out.latency {
							out.latency = time.Duration(ms) * time.Millisecond
						}
					}
				}
			}
			info, err := n.Info(ctx, "latencystats").Result()
			if err != nil {
				continue
			}
			for _, line := range strings.Split(info, "\n") {
				v, ok := strings.CutPrefix(strings.TrimSpace(line), "latency_percentiles_usec_evalsha:")
				if !ok {
					continue
				}
				// p50=1.003,p99=5.023,p99.9=12.031
				for _, kv := range strings.Split(v, ",") {
					if q, ok := strings.CutPrefix(kv, "p99="); ok {
						if f, err := strconv.ParseFloat(q, 64); err == nil && f >= worstP99 {
							worstP99 = f
							out.scriptPercentiles = strings.ReplaceAll(v, ",", " ")
						}
					}
				}
			}
		}
		return out
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
