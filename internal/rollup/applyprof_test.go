package rollup_test

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/testenv"
)

// TestApplyProfile is a scratch profile of the apply path (not committed).
func TestApplyProfile(t *testing.T) {
	if os.Getenv("APPLYPROF") == "" {
		t.Skip("scratch")
	}
	ctx := context.Background()
	r := testenv.StartRedis(t)
	rdb := r.Client()
	store, err := rollup.NewStore(rdb, time.UTC, rollup.DefaultRetention)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.LoadScripts(ctx); err != nil {
		t.Fatal(err)
	}
	nsN, _ := strconv.Atoi(os.Getenv("NS"))
	if nsN == 0 {
		nsN = 10000
	}
	windows := 6
	day := rollup.DayFromDate(2026, 7, 15)
	mk := func(w0 int) []rollup.Contribution {
		var cs []rollup.Contribution
		for w := w0; w < w0+windows; w++ {
			for i := 0; i < nsN; i++ {
				var v rollup.Values
				for f := range v {
					v[f] = int64(1000 + i + f)
				}
				cs = append(cs, rollup.Contribution{
					Entity: rollup.Entity{Project: fmt.Sprintf("p%03d", i%100), Cluster: fmt.Sprintf("c%d", i%2), Namespace: fmt.Sprintf("ns-%06d", i)},
					Piece:  rollup.Piece{Day: day, From: int32(36000 + 60*w), To: int32(36060 + 60*w), Values: v},
				})
			}
		}
		return cs
	}
	if os.Getenv("PROFWAIT") != "" {
		os.WriteFile("/tmp/profport", []byte(strings.TrimPrefix(r.Addr(), "127.0.0.1:")), 0o644)
		time.Sleep(3 * time.Second)
	}
	batches := 4
	if os.Getenv("BURST") != "" {
		windows = 1
		batches = 2
	}
	rdb.ConfigSet(ctx, "slowlog-log-slower-than", "0")
	rdb.ConfigSet(ctx, "slowlog-max-len", "100000")
	for b := 0; b < batches; b++ {
		cs := mk(b * windows)
		if os.Getenv("BURST") != "" {
			for i := range cs {
				cs[i].Day = day + rollup.Day(b)
			}
		}
		rdb.Do(ctx, "SLOWLOG", "RESET")
		cpu0 := redisCPUSecs(ctx, rdb)
		rdb.ConfigResetStat(ctx)
		t0 := time.Now()
		if _, err := store.Apply(ctx, cs, "S", []rollup.SeqRange{{First: uint64(b*10 + 1), Last: uint64(b*10 + 10)}}, true); err != nil {
			t.Fatal(err)
		}
		el := time.Since(t0)
		t.Logf("redis cpu %.3f s (%.1f us per sample)", redisCPUSecs(ctx, rdb)-cpu0, (redisCPUSecs(ctx, rdb)-cpu0)*1e6/float64(len(cs)))
		info := rdb.Info(ctx, "commandstats").Val()
		type st struct {
			name  string
			calls int64
			usec  int64
		}
		var sts []st
		for _, line := range strings.Split(info, "\n") {
			line = strings.TrimSpace(line)
			if !strings.HasPrefix(line, "cmdstat_") {
				continue
			}
			name, rest, _ := strings.Cut(strings.TrimPrefix(line, "cmdstat_"), ":")
			var s st
			s.name = name
			for _, kv := range strings.Split(rest, ",") {
				k, v, _ := strings.Cut(kv, "=")
				n, _ := strconv.ParseInt(v, 10, 64)
				switch k {
				case "calls":
					s.calls = n
				case "usec":
					s.usec = n
				}
			}
			sts = append(sts, s)
		}
		sort.Slice(sts, func(a, b int) bool { return sts[a].usec > sts[b].usec })
		t.Logf("batch %d: %d samples in %s (%.0f samples/s)", b, len(cs), el, float64(len(cs))/el.Seconds())
		logs, _ := rdb.SlowLogGet(ctx, 100000).Result()
		var maxd time.Duration
		var maxc string
		for _, l := range logs {
			if l.Duration > maxd {
				maxd = l.Duration
				if len(l.Args) > 0 {
					maxc = fmt.Sprint(l.Args[0])
					if len(l.Args) > 5 {
						maxc += fmt.Sprint(" ", l.Args[3], " ", l.Args[4], " ", l.Args[5])
					}
				}
			}
		}
		t.Logf("  longest command %s (%s) of %d", maxd, maxc, len(logs))
		for _, s := range sts {
			t.Logf("  %-12s calls=%7d usec=%8d per=%.2f", s.name, s.calls, s.usec, float64(s.usec)/float64(s.calls))
		}
	}
}

func redisCPUSecs(ctx context.Context, rdb interface {
	Info(context.Context, ...string) *redis.StringCmd
}) float64 {
	info := rdb.Info(ctx, "cpu").Val()
	tot := 0.0
	for _, line := range strings.Split(info, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		if k == "used_cpu_user_main_thread" || k == "used_cpu_sys_main_thread" {
			f, _ := strconv.ParseFloat(v, 64)
			tot += f
		}
	}
	return tot
}
