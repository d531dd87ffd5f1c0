package rollup_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/alauda/costmeter/internal/testenv"
)

// TestBackends runs the store's tests on a single Redis and on a Redis
// Cluster of 3 masters and 3 replicas (one of each for the package; every
// test starts from empty servers).
func TestBackends(t *testing.T) {
	single := testenv.StartRedis(t)
	cluster := testenv.StartRedisCluster(t)
	backends := []struct {
		name string
		rdb  redis.UniversalClient
	}{
		{"single", single.Client()},
		{"cluster", cluster.Client()},
	}
	tests := []struct {
		name string
		run  func(t *testing.T, rdb redis.UniversalClient)
	}{
		{"ApplyExactlyOnce", testApplyExactlyOnce},
		{"ApplyLargeBatch", testApplyLargeBatch},
		{"RangeIndex", testRangeIndex},
		{"ClusterCoverage", testClusterCoverage},
		{"KeyLayout", testKeyLayout},
		{"Groups", testGroups},
		{"Capacity", testCapacity},
	}
	for _, b := range backends {
		for _, tt := range tests {
			t.Run(b.name+"/"+tt.name, func(t *testing.T) {
				flushAll(t, b.rdb)
				tt.run(t, b.rdb)
			})
		}
	}
	t.Run("cluster/Dial", func(t *testing.T) {
		flushAll(t, cluster.Client())
		testDialCluster(t, cluster)
	})
	t.Run("cluster/Spread", func(t *testing.T) {
		flushAll(t, cluster.Client())
		testSpread(t, cluster)
	})
}

// flushAll empties every master.
func flushAll(t *testing.T, rdb redis.UniversalClient) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return c.FlushAll(ctx).Err() })
	} else {
		err = rdb.FlushAll(ctx).Err()
	}
	if err != nil {
		t.Fatal(err)
	}
}
