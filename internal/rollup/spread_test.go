package rollup_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/testenv"
)

// TestShardTags: every shard's hash tag lies in its own equal share of
// the slots, so masters with equal slot ranges get equal numbers of
// shards.
func TestShardTags(t *testing.T) {
	for i, tag := range rollup.ShardTags {
		slot := testenv.KeySlot("{" + tag + "}")
		lo, hi := i*16384/rollup.Shards, (i+1)*16384/rollup.Shards
		if slot < lo || slot >= hi {
			t.Errorf("shard %d tag %q has slot %d, outside [%d, %d)", i, tag, slot, lo, hi)
		}
	}
	// Namespaces spread evenly over the shards.
	n := make([]int, rollup.Shards)
	for c := 0; c < 3; c++ {
		for ns := 0; ns < 6000; ns++ {
			n[rollup.ShardOf("cluster-"+strconv.Itoa(c), "ns-"+strconv.Itoa(ns))]++
		}
	}
	for i, k := range n {
		if k < 18000/rollup.Shards*9/10 || k > 18000/rollup.Shards*11/10 {
			t.Errorf("shard %d has %d of 18000 namespaces: %v", i, k, n)
		}
	}
}

// writeCommands are the commands the store writes with, inner script
// calls included (INFO commandstats counts those too).
var writeCommands = []string{"evalsha", "eval", "bitfield", "hset", "zadd", "expireat", "incr", "set", "del", "zrem"}

func writeCalls(t *testing.T, n *testenv.Redis) int64 {
	t.Helper()
	info, err := n.Info(context.Background(), "commandstats")
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, c := range writeCommands {
		v := info["cmdstat_"+c]
		calls, _, _ := strings.Cut(strings.TrimPrefix(v, "calls="), ",")
		k, _ := strconv.ParseInt(calls, 10, 64)
		sum += k
	}
	return sum
}

// testSpread applies windows of 3,000 namespaces on the cluster and checks
// that, once every namespace is indexed on the day (its first window
// writes the month's index, in one slot), no master takes more than half
// of the write commands; and that the totals are exact.
func testSpread(t *testing.T, c *testenv.RedisCluster) {
	ctx := context.Background()
	store, err := rollup.NewStore(c.Client(), time.UTC, 20*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.LoadScripts(ctx); err != nil {
		t.Fatal(err)
	}
	masters := c.Masters()
	before := map[string]int64{}
	snap := func() {
		for _, m := range masters {
			before[m.Addr()] = writeCalls(t, m)
		}
	}
	d := rollup.DayFromDate(2025, 6, 10)
	var want int64
	const windows = 6
	for w := 0; w < windows; w++ {
		if w == 1 {
			var first []string
			for _, m := range masters {
				first = append(first, fmt.Sprintf("%s %d", m.Addr(), writeCalls(t, m)-before[m.Addr()]))
			}
			t.Logf("first window (index writes) per master: %v", first)
			snap()
		} else if w == 0 {
			snap()
		}
		var cs []rollup.Contribution
		for n := 0; n < 3000; n++ {
			var v rollup.Values
			v[rollup.Field(rollup.Cpu, rollup.Usage)] = int64(n+1) * rollup.Scale
			want += int64(n+1) * rollup.Scale
			cs = append(cs, rollup.Contribution{
				Entity: rollup.Entity{Project: "p" + strconv.Itoa(n%20), Cluster: "c" + strconv.Itoa(n%3), Namespace: "ns-" + strconv.Itoa(n)},
				Piece:  rollup.Piece{Day: d, From: int32(w * 60), To: int32(w*60 + 60), Values: v},
			})
		}
		if _, err := store.Apply(ctx, cs, "S", []rollup.SeqRange{{First: uint64(w + 1), Last: uint64(w + 1)}}, true); err != nil {
			t.Fatal(err)
		}
	}
	var total int64
	share := map[string]int64{}
	for _, m := range masters {
		share[m.Addr()] = writeCalls(t, m) - before[m.Addr()]
		total += share[m.Addr()]
	}
	desc := fmt.Sprint(share)
	for a, k := range share {
		if k*2 > total {
			t.Errorf("master %s took %d of %d write commands: %s", a, k, total, desc)
		}
	}
	t.Logf("write commands per master, later windows: %s", desc)
	var sum int64
	for cl := 0; cl < 3; cl++ {
		v, ok, err := store.DayValues(ctx, d, rollup.ScopeCluster, "c"+strconv.Itoa(cl))
		if err != nil || !ok {
			t.Fatalf("cluster c%d: %v %v", cl, ok, err)
		}
		sum += v[rollup.Field(rollup.Cpu, rollup.Usage)]
	}
	if sum != want {
		t.Fatalf("cluster sums add to %d, want %d", sum, want)
	}
	if low, err := store.Applied(ctx, "S", 1); err != nil || low != windows {
		t.Fatalf("watermark %d %v, want %d", low, err, windows)
	}
}
