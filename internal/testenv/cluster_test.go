package testenv_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/alauda/costmeter/internal/testenv"
)

// TestRedisCluster creates a 3+3 cluster, writes through a cluster
// client, kills the master of the key's slot and reads the key from the
// promoted replica, then restarts the killed node as a replica.
func TestRedisCluster(t *testing.T) {
	c := testenv.StartRedisCluster(t)
	if got := len(c.Masters()); got != 3 {
		t.Fatalf("%d masters, want 3", got)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	rdb := c.Client()
	if err := rdb.Set(ctx, "k{x}", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// The write must reach the replica before its master dies. WAIT covers
	// the writes of the connection it runs on, and the cluster client sends
	// a keyless command to a random node, so write again and WAIT on one
	// connection to the key's master, until its replica acknowledges (a
	// busy machine may take longer than one WAIT).
	master, err := rdb.MasterForKey(ctx, "k{x}")
	if err != nil {
		t.Fatal(err)
	}
	conn := master.Conn()
	defer conn.Close()
	testenv.Eventually(t, time.Minute, "the replica acknowledges the write", func() (bool, string) {
		if err := conn.Set(ctx, "k{x}", "v", 0).Err(); err != nil {
			return false, err.Error()
		}
		n, err := conn.Do(ctx, "WAIT", 1, 5000).Int()
		if err != nil {
			return false, err.Error()
		}
		return n >= 1, fmt.Sprintf("%d replicas acknowledged", n)
	})
	for _, k := range []string{"k{x}", "{user1000}.following", "bar{}x", "a{b}{c}", "c:{s3}:202611:cov:01"} {
		got, err := rdb.ClusterKeySlot(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if int(got) != testenv.KeySlot(k) {
			t.Errorf("KeySlot(%q) = %d, CLUSTER KEYSLOT says %d", k, testenv.KeySlot(k), got)
		}
	}
	old := c.MasterOf("k{x}")
	killed := c.KillMaster(testenv.KeySlot("k{x}"))
	if killed != old || killed.Running() {
		t.Fatalf("killed %s, the master was %s", killed.Addr(), old.Addr())
	}
	if now := c.MasterOf("k{x}"); now == old {
		t.Fatal("the test proves nothing: the slot did not move")
	}
	testenv.Eventually(t, 30*time.Second, "read after failover", func() (bool, string) {
		v, err := rdb.Get(ctx, "k{x}").Result()
		if err != nil {
			return false, err.Error()
		}
		return v == "v", v
	})
	c.Restart(killed)
	info, err := killed.Info(ctx, "replication")
	if err != nil {
		t.Fatal(err)
	}
	if info["role"] != "slave" {
		t.Fatalf("restarted node has role %s, want slave", info["role"])
	}
}

func TestKeySlot(t *testing.T) {
	// Values from the Redis Cluster specification.
	for key, want := range map[string]int{"123456789": 12739, "foo": 12182} {
		if got := testenv.KeySlot(key); got != want {
			t.Errorf("KeySlot(%q) = %d, want %d", key, got, want)
		}
	}
}
