package benchrun

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/alauda/costmeter/aggregator"
	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/stream"
)

// ledger is the exact sum the cluster rollups must hold, computed from the
// samples as they were published.
type ledger map[ledgerKey]rollup.Values

type ledgerKey struct {
	cluster string
	day     rollup.Day
}

func (l ledger) add(samples []sample.Sample) {
	for i := range samples {
		for _, p := range rollup.Split(&samples[i], time.UTC) {
			k := ledgerKey{samples[i].Cluster, p.Day}
			v := l[k]
			v.Add(&p.Values)
			l[k] = v
		}
	}
}

// verify compares every cluster-day rollup with the ledger.
func (l ledger) verify(ctx context.Context, store *rollup.Store) error {
	for k, want := range l {
		got, ok, err := store.DayValues(ctx, k.day, rollup.ScopeCluster, k.cluster)
		if err != nil {
			return err
		}
		if !ok || got != want {
			return fmt.Errorf("cluster %s day %s: redis holds %v, the published samples sum to %v", k.cluster, k.day, got, want)
		}
	}
	return nil
}

func clusters(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "sim-" + strconv.Itoa(i)
	}
	return out
}

// newStore is a rollup store on the bench Redis with the production
// retention, scripts loaded.
func newStore(ctx context.Context, srv *servers, retention time.Duration) (*rollup.Store, error) {
	store, err := rollup.NewStore(srv.rdb, time.UTC, retention)
	if err != nil {
		return nil, err
	}
	if err := store.CheckTimezone(ctx); err != nil {
		return nil, err
	}
	if err := store.LoadScripts(ctx); err != nil {
		return nil, err
	}
	return store, nil
}

// DefaultAggregatorBatch is the aggregator's --batch-size in the bench: its
// default, 128 messages of 500 samples (64,000 samples, ~21 MB per fetch).
// An earlier default of 256 messages overran nats.go's 64 MB pending limit
// of a subscription with two workers.
var DefaultAggregatorBatch = aggregator.DefaultConfig().BatchSize

// workers is the aggregator's --workers in the ingest phases.
func (c Config) workers() int {
	if c.AggregatorWorkers > 0 {
		return c.AggregatorWorkers
	}
	return aggregator.DefaultConfig().Workers
}

// maxBatch is the aggregator's --batch-max in the ingest phases.
func (c Config) maxBatch() int {
	if c.AggregatorMaxBatch > 0 {
		return c.AggregatorMaxBatch
	}
	return max(aggregator.DefaultConfig().MaxBatch, c.AggregatorBatch)
}

// startAggregator runs an in-process aggregator with the default
// configuration but bc's batch size and workers until the returned stop
// is called.
func startAggregator(ctx context.Context, srv *servers, store *rollup.Store, log *slog.Logger, reader *sdkmetric.ManualReader, bc Config) (stop func() error, err error) {
	cfg := aggregator.DefaultConfig()
	cfg.BatchSize = bc.AggregatorBatch
	cfg.MaxBatch = bc.maxBatch()
	cfg.Workers = bc.workers()
	meter := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("bench")
	agg, err := aggregator.New(cfg, srv.js, store, aggregator.WithLogger(log), aggregator.WithMeter(meter))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- agg.Run(ctx) }()
	var once sync.Once
	var runErr error
	return func() error {
		once.Do(func() {
			cancel()
			runErr = <-done
		})
		return runErr
	}, nil
}

func slowestRaw(rep *Report) (float64, string) {
	best, name := 0.0, ""
	for _, n := range []string{rawPublish, rawConsume, rawIncr} {
		if v := rep.value(secRaw, n); v > 0 && (best == 0 || v < best) {
			best, name = v, n
		}
	}
	return best, name
}

// ingestRows adds the rate, its ratio to the slowest raw stage and the
// phase's resources over seconds of wall time (the CPU rows).
func ingestRows(rep *Report, shape string, rate float64, seconds float64, target float64, w *memWatch, redisCPUSeconds float64, note string) {
	rep.add(Row{Section: secIngest, Name: shape + ": samples/s, first publish to last visible", Value: rate, Unit: "samples/s",
		Target: ">= " + commas(int64(target)), Met: met(rate >= target), Note: note})
	if slow, name := slowestRaw(rep); slow > 0 {
		r := rate / slow
		rep.add(Row{Section: secIngest, Name: shape + ": ratio to the slowest raw stage", Value: r, Unit: "×",
			Target: fmt.Sprintf(">= %.2f", TargetRawFraction), Met: met(r >= TargetRawFraction), Note: "slowest raw stage: " + name})
	}
	rss, heap, cpu := w.done()
	rep.add(Row{Section: secMemory, Name: shape + ": peak RSS, aggregator process", Value: float64(rss) / mib, Unit: "MiB", Note: w.note()})
	rep.add(Row{Section: secMemory, Name: shape + ": peak Go heap (objects), aggregator process", Value: float64(heap) / mib, Unit: "MiB"})
	rep.add(Row{Section: secIngest, Name: shape + ": CPU used, this process / redis-server", Value: cpu / seconds, Unit: "cores",
		Note: fmt.Sprintf("redis-server main thread busy %.0f%% of the wall time (%.1f s of %.1f s)", 100*redisCPUSeconds/seconds, redisCPUSeconds, seconds)})
}

func runSteady(ctx context.Context, srv *servers, cfg Config, rep *Report, log *slog.Logger) error {
	sz := cfg.Sizes
	store, err := newStore(ctx, srv, rollup.DefaultRetention)
	if err != nil {
		return err
	}
	if err := stream.Ensure(ctx, srv.js, stream.DefaultConfig()); err != nil {
		return err
	}
	pub, err := collector.NewPublisher(srv.js, collector.PublisherConfig{}, log)
	if err != nil {
		return err
	}
	perWindow := sz.SteadyClusters * sz.SteadyNamespaces
	// Each run's windows follow the last run's, ending now: new windows for
	// the same namespaces. Encoded ahead, window by window, so that the
	// timed part is the pipeline and not the simulation.
	span := time.Duration(sz.SteadyWindows) * time.Minute
	now := time.Now().Truncate(time.Minute)
	l := ledger{}
	runs := make([][][]collector.Message, sz.SteadyRuns)
	perRun, runBytes := 0, 0 // samples and encoded bytes of one run
	for r := range runs {
		end := now.Add(-time.Duration(sz.SteadyRuns-1-r) * span)
		sim, err := collector.NewSimulator(collector.SimConfig{Clusters: clusters(sz.SteadyClusters), Projects: 100, Namespaces: sz.SteadyNamespaces,
			Interval: time.Minute, Backfill: span, ChunkSamples: perWindow}, func() time.Time { return end })
		if err != nil {
			return err
		}
		perRun, runBytes = 0, 0
		if err := sim.Run(ctx, func(_ context.Context, s []sample.Sample) error {
			l.add(s)
			msgs := pub.Encode(s)
			for _, m := range msgs {
				runBytes += len(m.Data)
			}
			runs[r] = append(runs[r], msgs)
			perRun += len(s)
			return nil
		}); err != nil {
			return err
		}
	}
	reader := sdkmetric.NewManualReader()
	stop, err := startAggregator(ctx, srv, store, log, reader, cfg)
	if err != nil {
		return err
	}
	defer stop()
	// Wait until the aggregator created its consumer.
	for {
		if _, _, err := drained(ctx, srv.js); err == nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	stopProfile, err := startCPUProfile(cfg.SteadyCPUProfile)
	if err != nil {
		return err
	}
	defer stopProfile()
	w := watchMemory()
	w.also = fmt.Sprintf(" and the runs' encoded messages, held until published: %d MiB a run", runBytes>>20)
	rcpu := redisCPU(ctx, srv.rdb)
	phase := time.Now()
	rates := make([]float64, len(runs))
	var published, wall []float64
	for r, windows := range runs {
		t0 := time.Now()
		for _, msgs := range windows {
			if err := pub.PublishMessages(ctx, msgs); err != nil {
				return err
			}
		}
		published = append(published, time.Since(t0).Seconds())
		runs[r] = nil // the memory rows: only the runs still to come are held
		if err := waitDrained(ctx, srv.js, 8*time.Minute); err != nil {
			return err
		}
		el := time.Since(t0).Seconds()
		wall = append(wall, el)
		rates[r] = float64(perRun) / el
	}
	el := time.Since(phase).Seconds()
	stopProfile()
	total := perRun * len(runs)
	aggregatorRows(ctx, rep, "steady", reader, total, el)
	med := percentile(slices.Clone(rates), 0.5)
	var each []string
	for r := range rates {
		each = append(each, fmt.Sprintf("%s (%.1f s, publishing %.1f s)", commas(int64(rates[r])), wall[r], published[r]))
	}
	ingestRows(rep, "steady", med, el, TargetSteady, w, redisCPU(ctx, srv.rdb)-rcpu,
		fmt.Sprintf("%d namespaces × %d new one-minute windows = %d samples, %d runs in a row, median of: %s", perWindow, sz.SteadyWindows, perRun, len(runs), strings.Join(each, ", ")))
	if err := stop(); err != nil {
		return err
	}
	return l.verify(ctx, store)
}

func runCatchup(ctx context.Context, srv *servers, cfg Config, rep *Report, log *slog.Logger) error {
	sz := cfg.Sizes
	store, err := newStore(ctx, srv, rollup.DefaultRetention)
	if err != nil {
		return err
	}
	if err := stream.Ensure(ctx, srv.js, stream.DefaultConfig()); err != nil {
		return err
	}
	pub, err := collector.NewPublisher(srv.js, collector.PublisherConfig{}, log)
	if err != nil {
		return err
	}
	now := time.Now()
	sim, err := collector.NewSimulator(collector.SimConfig{Clusters: clusters(sz.CatchupClusters), Projects: 100, Namespaces: sz.CatchupNamespaces,
		Interval: time.Minute, Backfill: sz.CatchupBackfill}, func() time.Time { return now })
	if err != nil {
		return err
	}
	l := ledger{}
	total := 0
	t0 := time.Now()
	if err := sim.Run(ctx, func(ctx context.Context, s []sample.Sample) error {
		l.add(s)
		total += len(s)
		return pub.Publish(ctx, s)
	}); err != nil {
		return err
	}
	pubSecs := time.Since(t0).Seconds()
	rep.add(Row{Section: secIngest, Name: "catch-up: backlog published by the collector (simulate)", Value: float64(total) / pubSecs, Unit: "samples/s",
		Note: fmt.Sprintf("%d samples in %.1f s, simulation and encoding included; not part of the drain time", total, pubSecs)})
	log.Info("backlog published", "samples", total, "seconds", pubSecs)

	stopProfile, err := startCPUProfile(cfg.CPUProfile)
	if err != nil {
		return err
	}
	w := watchMemory()
	rcpu := redisCPU(ctx, srv.rdb)
	t0 = time.Now()
	reader := sdkmetric.NewManualReader()
	stop, err := startAggregator(ctx, srv, store, log, reader, cfg)
	if err != nil {
		return err
	}
	defer stop()
	err = waitDrained(ctx, srv.js, 9*time.Minute)
	el := time.Since(t0).Seconds()
	if cfg.HeapProfile != "" && err == nil {
		if herr := writeHeapProfile(cfg.HeapProfile); herr != nil {
			return herr
		}
	}
	stopProfile()
	if err != nil {
		return err
	}
	aggregatorRows(ctx, rep, "catch-up", reader, total, el)
	ingestRows(rep, "catch-up", float64(total)/el, el, TargetCatchup, w, redisCPU(ctx, srv.rdb)-rcpu,
		fmt.Sprintf("backlog of %s at 60 s for %d namespaces = %d samples, drained from aggregator start", sz.CatchupBackfill, sz.CatchupClusters*sz.CatchupNamespaces, total))
	if err := stop(); err != nil {
		return err
	}
	return l.verify(ctx, store)
}

// aggregatorRows reads the aggregator's own instruments: how much of the
// wall time its workers spent committing to Redis, and what else it did
// per sample (events, redeliveries).
func aggregatorRows(ctx context.Context, rep *Report, shape string, reader *sdkmetric.ManualReader, samples int, wall float64) {
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		return
	}
	var applySecs float64
	var batches uint64
	counters := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Histogram[float64]:
				if m.Name == "cost.aggregator.apply.duration" {
					for _, dp := range d.DataPoints {
						applySecs += dp.Sum
						batches += dp.Count
					}
				}
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					counters[m.Name] += dp.Value
				}
			}
		}
	}
	if batches == 0 {
		return
	}
	workers := float64(rep.AggregatorWorkers)
	rep.add(Row{Section: secIngest, Name: shape + ": aggregator workers' time in the redis commit", Value: 100 * applySecs / (workers * wall), Unit: "%",
		Note: fmt.Sprintf("%d batches, %.0f ms mean commit (Lua), %.1f s of %.0f worker-seconds; events published %d (%.2f per sample), duplicates %d, dead letters %d",
			batches, 1000*applySecs/float64(batches), applySecs, workers*wall, counters["cost.aggregator.events.published"],
			float64(counters["cost.aggregator.events.published"])/float64(samples), counters["cost.aggregator.samples.duplicates"], counters["cost.aggregator.samples.deadlettered"])})
}

// startCPUProfile starts a CPU profile of the process into path, when path
// is set; stop ends it and may be called more than once.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("create cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("start cpu profile: %w", err)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			pprof.StopCPUProfile()
			f.Close()
		})
	}, nil
}

// writeHeapProfile writes the live heap (after a collection) to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create heap profile: %w", err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		return fmt.Errorf("write heap profile: %w", err)
	}
	return nil
}
