// Command bench measures costmeter on this machine against the machine's
// own limits, in one run against fresh servers, prints one table and writes
// it as JSON (see bench/benchrun). BENCH_QUICK=1 runs the small sizes.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/gin-gonic/gin"

	"github.com/alauda/costmeter/bench/benchrun"
)

func main() { os.Exit(run()) }

func run() int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	quick := fs.Bool("quick", os.Getenv("BENCH_QUICK") == "1", "small sizes, under a minute (BENCH_QUICK=1)")
	out := fs.String("out", "", "JSON report file (default bench/results/latest.json, or quick.json in quick mode)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the catch-up drain to this file")
	steadyProfile := fs.String("steady-cpuprofile", "", "write a CPU profile of the steady phase (first publish to last visible) to this file")
	batch := fs.Int("aggregator-batch", benchrun.DefaultAggregatorBatch, "the aggregator's --batch-size (messages per fetch) in the ingest phases")
	maxBatch := fs.Int("aggregator-batch-max", 0, "the aggregator's --batch-max (messages one batch may gather while a backlog waits) in the ingest phases (default: its default)")
	workers := fs.Int("aggregator-workers", 0, "the aggregator's --workers (batches in flight) in the ingest phases (default: its default)")
	redisNice := fs.Int("redis-nice", 0, "nice value of the redis-servers the bench starts (-10: Redis first on contended cores, as on a host of its own; needs root)")
	heapProfile := fs.String("heapprofile", "", "write the live heap at the end of the catch-up drain to this file")
	verbose := fs.Bool("v", false, "log the servers and the aggregator at debug level")
	loadNS := fs.Int("load-namespaces", 0, "namespaces of the under-load phase (default: the mode's size, 100,000 in full mode)")
	skip := fs.String("skip", "", "comma-separated phases to leave out (raw, steady, catch-up, queries, backlog, load, live)")
	only := fs.String("phases", "", "comma-separated phases to run, the others left out (default: all)")
	liveNS := fs.Int("live-namespaces", 0, "namespaces of the live phase (default: the mode's size, 100,000 in 30 clusters in full mode)")
	liveBackends := fs.String("live-backends", "single,cluster", "the live phase's Redis setups: single, cluster or both")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	cfg := benchrun.Config{Sizes: benchrun.FullSizes(), Quick: *quick, CPUProfile: *cpuProfile, SteadyCPUProfile: *steadyProfile, HeapProfile: *heapProfile, AggregatorBatch: *batch, AggregatorMaxBatch: *maxBatch, AggregatorWorkers: *workers, RedisNice: *redisNice}
	if *quick {
		cfg.Sizes = benchrun.QuickSizes()
	}
	if *loadNS > 0 {
		cfg.Sizes.LoadNamespaces = *loadNS
	}
	if *liveNS > 0 {
		cfg.Sizes.LiveNamespaces = *liveNS
	}
	if *skip != "" {
		cfg.Skip = strings.Split(*skip, ",")
	}
	if *only != "" {
		cfg.Phases = strings.Split(*only, ",")
	}
	cfg.LiveBackends = strings.Split(*liveBackends, ",")
	if *out == "" {
		*out = "bench/results/latest.json"
		if *quick {
			*out = "bench/results/quick.json"
		}
	}
	cfg.ResultsDir = filepath.Dir(*out)
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "bench: invalid configuration:\n%v\n", err)
		return 2
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	gin.SetMode(gin.ReleaseMode)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := benchrun.Run(ctx, cfg, log)
	if rep != nil && len(rep.Rows) > 0 {
		_ = rep.WriteTable(os.Stdout)
	}
	if err == nil {
		if werr := rep.WriteJSON(*out); werr != nil {
			fmt.Fprintln(os.Stderr, "bench:", werr)
			return 1
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	return 0
}
