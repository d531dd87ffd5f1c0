package aggregator_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/alauda/costmeter/aggregator"
	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/pipelinetest"
	"github.com/alauda/costmeter/internal/redisconn"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/testenv"
)

// TestRedisClusterMasterFailover: two aggregators ingest into a Redis
// Cluster of 3 masters and 3 replicas; a master is killed with SIGKILL in
// the middle of the ingest and its replica takes over. The totals end up
// exact, with no manual step: batches that failed are redelivered, and
// writes the replica had not received are found by the per-shard
// watermark and replayed.
func TestRedisClusterMasterFailover(t *testing.T) {
	n := testenv.StartNATS(t)
	c := testenv.StartRedisCluster(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	nc, js, err := natsconn.Connect(n.URL(), "test", log)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	rdb, err := redisconn.Dial(c.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	store, err := rollup.NewStore(rdb, time.UTC, testRetention, rollup.WithWaitReplicas(1, 2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := store.LoadScripts(ctx); err != nil {
		t.Fatal(err)
	}
	scfg := stream.DefaultConfig()
	scfg.AckWait = 2 * time.Second
	if err := stream.Ensure(ctx, js, scfg); err != nil {
		t.Fatal(err)
	}
	pub, err := collector.NewPublisher(js, collector.PublisherConfig{MaxBatch: 50}, log)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		cfg := aggregator.DefaultConfig()
		cfg.BatchSize = 10
		cfg.HealInterval = 200 * time.Millisecond
		cfg.Stream.AckWait = 2 * time.Second
		agg, err := aggregator.New(cfg, js, store, aggregator.WithLogger(log), aggregator.WithClock(func() time.Time { return testNow }))
		if err != nil {
			t.Fatal(err)
		}
		pipelinetest.Start(t, agg)
	}
	l := pipelinetest.NewLedger()
	first := gen("east", 40, time.Date(2025, 6, 5, 10, 0, 0, 0, time.UTC), 5, time.Minute)
	if err := pub.Publish(ctx, first); err != nil {
		t.Fatal(err)
	}
	l.Add(first...)
	pipelinetest.WaitExact(t, js, store, l, time.Minute)

	second := gen("east", 40, time.Date(2025, 6, 5, 12, 0, 0, 0, time.UTC), 120, time.Minute)
	if err := pub.Publish(ctx, second); err != nil {
		t.Fatal(err)
	}
	l.Add(second...)
	base, err := pipelinetest.ConsumerInfo(js)
	if err != nil {
		t.Fatal(err)
	}
	victim := c.MasterOfSlot(0)
	keys, err := victim.Info(ctx, "keyspace")
	if err != nil {
		t.Fatal(err)
	}
	if keys["db0"] == "" {
		t.Fatal("the test proves nothing: the master to kill holds no rollups")
	}
	c.KillMaster(0)
	info, err := pipelinetest.ConsumerInfo(js)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, stream.Samples)
	if err != nil {
		t.Fatal(err)
	}
	si, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.AckFloor.Stream >= si.State.LastSeq {
		t.Fatal("the test proves nothing: the ingest was over before the master died")
	}
	t.Logf("master %s killed with the ack floor at %d (from %d) of %d", victim.Addr(), info.AckFloor.Stream, base.AckFloor.Stream, si.State.LastSeq)
	pipelinetest.WaitExact(t, js, store, l, 2*time.Minute)
	if dl := pipelinetest.MustDeadLetters(t, js); len(dl) != 0 {
		t.Fatalf("dead letters: %v", dl)
	}
	if d := l.Diff(ctx, store); d != "" {
		t.Fatal(fmt.Sprint("after the failover: ", d))
	}
}
