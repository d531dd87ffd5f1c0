// Package benchrun measures the whole pipeline on the machine it runs on,
// in one run against fresh servers, so that every figure can be read
// beside the machine's own limits:
//
//  1. raw limits: JetStream publish and consume-with-ack of the pipeline's
//     own messages (sample.EncodeBatch batches of collector.DefaultMaxBatch
//     samples), and Redis pipelined BITFIELD INCRBY i64 on day-rollup keys;
//  2. ingest end to end (collector.Publisher -> JetStream ->
//     aggregator.Aggregator -> Redis), steady state and catch-up;
//  3. the API's queries over real HTTP with 10 concurrent clients at two
//     sizes;
//  4. under load, on a single Redis and on a Redis Cluster of 3 masters
//     and 3 replicas: the new-day burst (every namespace's first window of
//     a day), steady ingest at 100,000 namespaces, queries meanwhile, each
//     master's share of the rollup writes, the longest Redis command;
//  5. memory: the process's peak RSS per phase and Redis bytes per
//     namespace-day.
//
// Everything but redis-server runs in this process (the embedded NATS
// server too), so process memory figures include NATS; the report says so.
package benchrun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/alauda/costmeter/collector"
)

// The project's targets, from issue 6.
const (
	TargetSteady       = 100_000 // samples/s, steady-state ingest
	TargetCatchup      = 300_000 // samples/s, catch-up ingest
	TargetRawFraction  = 0.5     // ingest / slowest raw stage
	TargetQueryP95     = 25 * time.Millisecond
	TargetQueryScaling = 2.0 // p95 at the large size / p95 at the small size
	// TargetOrderByP95 is the p95 of the first page of orderBy=usage over
	// 31 days at 100,000 namespaces with 10 clients (the console's chart;
	// issue 11).
	TargetOrderByP95 = 300 * time.Millisecond
)

// Sizes are the amounts one run measures.
type Sizes struct {
	// RawMessages is how many batch messages the JetStream raw stages
	// publish and consume.
	RawMessages int
	// RawIncrements is how many BITFIELD commands the Redis raw stage
	// sends.
	RawIncrements int
	// SteadyClusters × SteadyNamespaces namespaces each send
	// SteadyWindows one-minute windows, SteadyRuns times in a row (the
	// rate is the runs' nearest-rank median: one run takes a few seconds, and whether
	// its backlog is applied in one batch or two moves it by a third).
	SteadyClusters, SteadyNamespaces, SteadyWindows, SteadyRuns int
	// CatchupClusters × CatchupNamespaces namespaces have a backlog of
	// CatchupBackfill in one-minute windows.
	CatchupClusters, CatchupNamespaces int
	CatchupBackfill                    time.Duration
	// QueryNamespaces are the sizes the queries run at (31 days, 200
	// projects, 3 clusters); the first is the reference of the ratio.
	QueryNamespaces []int
	// QueryRequests is how many requests each of the QueryClients sends
	// per query.
	QueryRequests, QueryClients int
	// LoadNamespaces namespaces (July 1-29 loaded first) send their first
	// window of a new day (the burst) and then LoadWindows more, on a
	// single Redis and on a Redis Cluster, with QueryClients querying
	// meanwhile.
	LoadNamespaces, LoadWindows int
	// The live phase: LiveNamespaces namespaces in LiveClusters clusters
	// (one collector each) publish LiveWindows one-minute windows, one at
	// each boundary, LiveMinute of real time apart; the windows from
	// LiveMidnight on are of a new day. LiveUsers dashboard users query
	// meanwhile, and LiveProbes namespaces a window are polled in the API
	// until the window shows.
	LiveNamespaces, LiveClusters, LiveWindows, LiveMidnight int
	LiveMinute                                              time.Duration
	LiveUsers, LiveProbes                                   int
}

// FullSizes are the sizes of `make bench`.
func FullSizes() Sizes {
	return Sizes{
		RawMessages: 1_000, RawIncrements: 1_000_000,
		SteadyClusters: 2, SteadyNamespaces: 5_000, SteadyWindows: 20, SteadyRuns: 5,
		CatchupClusters: 2, CatchupNamespaces: 1_000, CatchupBackfill: 24 * time.Hour,
		QueryNamespaces: []int{10_000, 100_000}, QueryRequests: 100, QueryClients: 10,
		LoadNamespaces: 100_000, LoadWindows: 3,
		LiveNamespaces: 100_000, LiveClusters: 30, LiveWindows: 11, LiveMidnight: 3, LiveMinute: time.Minute, LiveUsers: 20, LiveProbes: 4,
	}
}

// QuickSizes are small enough for a test under the race detector.
func QuickSizes() Sizes {
	return Sizes{
		RawMessages: 100, RawIncrements: 20_000,
		SteadyClusters: 2, SteadyNamespaces: 500, SteadyWindows: 3, SteadyRuns: 1,
		CatchupClusters: 2, CatchupNamespaces: 100, CatchupBackfill: time.Hour,
		QueryNamespaces: []int{300, 3_000}, QueryRequests: 5, QueryClients: 10,
		LoadNamespaces: 1_000, LoadWindows: 2,
		LiveNamespaces: 600, LiveClusters: 3, LiveWindows: 6, LiveMidnight: 2, LiveMinute: 5 * time.Second, LiveUsers: 5, LiveProbes: 2,
	}
}

// Config is one run.
type Config struct {
	Sizes Sizes
	// Quick is recorded in the report.
	Quick bool
	// AggregatorBatch is the aggregator's --batch-size (messages per
	// fetch) in the ingest phases, and the raw consumer's fetch.
	AggregatorBatch int
	// AggregatorMaxBatch is the aggregator's --batch-max (messages one
	// batch may gather while a backlog waits); 0: its default.
	AggregatorMaxBatch int
	// AggregatorWorkers is the aggregator's --workers (batches in flight)
	// in the ingest phases; 0 is its default.
	AggregatorWorkers int
	// CPUProfile, when set, receives a CPU profile of the process during
	// the catch-up drain (the aggregator applying the backlog).
	CPUProfile string
	// SteadyCPUProfile, when set, receives a CPU profile of the process
	// during the steady phase, from the first publish to the last sample
	// visible.
	SteadyCPUProfile string
	// HeapProfile, when set, receives the live heap at the end of the
	// catch-up drain.
	HeapProfile string
	// Skip names phases left out (see Phases).
	Skip []string
	// Phases, when not empty, names the only phases run: raw, steady,
	// catch-up, queries, backlog, load, live.
	Phases []string
	// LiveBackends are the Redis setups of the live phase: single,
	// cluster (empty: both).
	LiveBackends []string
	// ResultsDir receives the files beside the report (the live phase's
	// Redis latency reports); "" writes none.
	ResultsDir string
	// RedisNice, when not 0, is the nice value of every redis-server the
	// bench starts (negative: Redis first when the cores are contended,
	// as on a host of its own; needs root).
	RedisNice int
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	s := c.Sizes
	if s.RawMessages < 1 || s.RawIncrements < 1 {
		errs = append(errs, errors.New("raw sizes must be positive"))
	}
	if s.SteadyClusters < 1 || s.SteadyNamespaces < 1 || s.SteadyWindows < 1 || s.SteadyRuns < 1 {
		errs = append(errs, errors.New("steady sizes must be positive"))
	}
	if s.CatchupClusters < 1 || s.CatchupNamespaces < 1 || s.CatchupBackfill < time.Minute {
		errs = append(errs, errors.New("catch-up sizes must be positive (backfill at least a minute)"))
	}
	if c.RedisNice < -20 || c.RedisNice > 19 {
		errs = append(errs, fmt.Errorf("redis nice: %d is not within -20..19", c.RedisNice))
	}
	if c.AggregatorWorkers < 0 || c.AggregatorWorkers > 64 {
		errs = append(errs, fmt.Errorf("aggregator workers: %d is not within 0..64", c.AggregatorWorkers))
	}
	if c.AggregatorMaxBatch != 0 && (c.AggregatorMaxBatch < c.AggregatorBatch || c.AggregatorMaxBatch > 10_000) {
		errs = append(errs, fmt.Errorf("aggregator batch max: %d is not within the batch (%d)..10000", c.AggregatorMaxBatch, c.AggregatorBatch))
	}
	if c.AggregatorBatch < 1 || c.AggregatorBatch > 10_000 {
		errs = append(errs, fmt.Errorf("aggregator batch: %d is not within 1..10000", c.AggregatorBatch))
	}
	if len(s.QueryNamespaces) != 2 || s.QueryRequests < 1 || s.QueryClients < 1 {
		errs = append(errs, errors.New("queries need two sizes, requests and clients"))
	}
	if s.LoadNamespaces < 20 || s.LoadWindows < 1 {
		errs = append(errs, errors.New("under-load sizes: at least 20 namespaces and 1 window"))
	}
	if s.LiveClusters < 1 || s.LiveNamespaces < s.LiveClusters || s.LiveMidnight < 1 || s.LiveWindows <= s.LiveMidnight ||
		s.LiveMinute < time.Second || s.LiveUsers < 1 || s.LiveProbes < 1 || s.LiveProbes > s.LiveNamespaces {
		errs = append(errs, errors.New("live sizes: at least as many namespaces as clusters, a window before midnight and one after, a minute of at least 1 s, a user, a probe (and no more probes than namespaces)"))
	}
	for _, p := range append(slices.Clone(c.Skip), c.Phases...) {
		if !slices.Contains(phaseNames, p) {
			errs = append(errs, fmt.Errorf("phase %q: not one of %s", p, strings.Join(phaseNames, ", ")))
		}
	}
	for _, b := range c.LiveBackends {
		if b != "single" && b != "cluster" {
			errs = append(errs, fmt.Errorf("live backend %q: not single or cluster", b))
		}
	}
	return errors.Join(errs...)
}

// Row is one figure of the report.
type Row struct {
	Section string  `json:"section"`
	Name    string  `json:"name"`
	Value   float64 `json:"value"`
	Unit    string  `json:"unit"`
	// Target is the goal beside the figure ("" when there is none); Met
	// tells whether the figure reaches it.
	Target string `json:"target,omitempty"`
	Met    *bool  `json:"met,omitempty"`
	Note   string `json:"note,omitempty"`
}

// Report is the outcome of one run.
type Report struct {
	Started time.Time `json:"started"`
	Seconds float64   `json:"seconds"`
	Quick   bool      `json:"quick"`
	Sizes   Sizes     `json:"sizes"`
	// AggregatorBatch is the aggregator's --batch-size in the ingest phases.
	AggregatorBatch int `json:"aggregatorBatch"`
	// AggregatorMaxBatch is the aggregator's --batch-max in the ingest phases.
	AggregatorMaxBatch int `json:"aggregatorMaxBatch"`
	// AggregatorWorkers is the aggregator's --workers in the ingest phases.
	AggregatorWorkers int `json:"aggregatorWorkers"`
	// RedisNice is the redis-servers' nice value (0: as started).
	RedisNice int    `json:"redisNice"`
	Machine   string `json:"machine"`
	Versions  string `json:"versions"`
	Rows      []Row  `json:"rows"`
}

func (r *Report) add(row Row) { r.Rows = append(r.Rows, row) }

func (r *Report) value(section, name string) float64 {
	for _, row := range r.Rows {
		if row.Section == section && row.Name == name {
			return row.Value
		}
	}
	return 0
}

func met(ok bool) *bool { return &ok }

// phases are the parts of a run, in order.
var phases = []struct {
	name, short string
	run         func(context.Context, *servers, Config, *Report, *slog.Logger) error
}{
	{"raw limits", "raw", runRaw},
	{"ingest steady", "steady", runSteady},
	{"ingest catch-up", "catch-up", runCatchup},
	{"queries", "queries", runQueries},
	{"backlog (freshness rows under a load above ingest)", "backlog", runFreshness},
	{"under load, single redis and redis cluster", "load", runUnderLoad},
	{"live traffic, single redis and redis cluster", "live", runLive},
}

// phaseNames are the phases' short names, for Skip and Phases.
var phaseNames = func() []string {
	var out []string
	for _, p := range phases {
		out = append(out, p.short)
	}
	return out
}()

// wantsBackend tells whether the live phase runs on backend.
func (c Config) wantsBackend(backend string) bool {
	return len(c.LiveBackends) == 0 || slices.Contains(c.LiveBackends, backend)
}

// Run starts fresh servers and measures everything, logging progress to
// log. The report holds what was measured even when an error stops it.
func Run(ctx context.Context, cfg Config, log *slog.Logger) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rep := &Report{Started: time.Now().UTC(), Quick: cfg.Quick, Sizes: cfg.Sizes, AggregatorBatch: cfg.AggregatorBatch, AggregatorMaxBatch: cfg.maxBatch(), AggregatorWorkers: cfg.workers(), RedisNice: cfg.RedisNice,
		Machine: fmt.Sprintf("%s/%s, %d CPUs, GOMAXPROCS %d", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0))}
	srv, err := startServers(ctx, log, cfg.RedisNice)
	if err != nil {
		return rep, err
	}
	defer srv.close()
	redisVer, _ := srv.rdb.InfoMap(ctx, "server").Result()
	rep.Versions = fmt.Sprintf("%s, nats-server %s, redis %s", runtime.Version(), server.VERSION, redisVer["Server"]["redis_version"])
	for _, p := range phases {
		if slices.Contains(cfg.Skip, p.short) || len(cfg.Phases) > 0 && !slices.Contains(cfg.Phases, p.short) {
			log.Info("phase skipped", "name", p.name)
			continue
		}
		if err := srv.reset(ctx); err != nil {
			return rep, err
		}
		log.Info("phase", "name", p.name)
		t0 := time.Now()
		if err := p.run(ctx, srv, cfg, rep, log); err != nil {
			return rep, fmt.Errorf("%s: %w", p.name, err)
		}
		log.Info("phase done", "name", p.name, "seconds", time.Since(t0).Round(time.Millisecond).Seconds())
	}
	rep.Seconds = time.Since(rep.Started).Seconds()
	return rep, nil
}

// defaultBatch is the collector's message size, which the raw stages use.
const defaultBatch = collector.DefaultMaxBatch

// WriteTable prints the report as one aligned table.
func (r *Report) WriteTable(w io.Writer) error {
	var b strings.Builder
	mode := "full"
	if r.Quick {
		mode = "quick (BENCH_QUICK=1)"
	}
	fmt.Fprintf(&b, "costmeter bench, %s mode, %s; %s\n%s; aggregator --batch-size %d (messages of %d samples), --workers %d; redis-server nice %d\n\n", mode, r.Started.Format(time.RFC3339), r.Machine, r.Versions, r.AggregatorBatch, defaultBatch, r.AggregatorWorkers, r.RedisNice)
	fmt.Fprintf(&b, "%-9s %-58s %14s %-12s %-16s %s\n", "SECTION", "MEASURE", "VALUE", "UNIT", "TARGET", "MET")
	rows := slices.Clone(r.Rows)
	order := []string{secRaw, secIngest, secQuery, secLoad, secLive, secMemory}
	slices.SortStableFunc(rows, func(a, b Row) int { return slices.Index(order, a.Section) - slices.Index(order, b.Section) })
	section := ""
	for _, row := range rows {
		if row.Section != section && section != "" {
			b.WriteString("\n")
		}
		section = row.Section
		m := ""
		if row.Met != nil {
			m = "yes"
			if !*row.Met {
				m = "NO"
			}
		}
		fmt.Fprintf(&b, "%-9s %-58s %14s %-12s %-16s %s\n", row.Section, row.Name, formatValue(row.Value), row.Unit, row.Target, m)
		if row.Note != "" {
			fmt.Fprintf(&b, "%-9s   %s\n", "", row.Note)
		}
	}
	fmt.Fprintf(&b, "\ntotal %.0f s\n", r.Seconds)
	_, err := io.WriteString(w, b.String())
	return err
}

func formatValue(v float64) string {
	switch {
	case v >= 1000:
		return commas(int64(v + 0.5))
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func commas(n int64) string {
	s := fmt.Sprint(n)
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

// WriteJSON writes the report to path atomically (a .tmp file renamed).
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create results dir: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}
