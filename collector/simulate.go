package collector

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"strings"
	"time"

	"github.com/alauda/costmeter/internal/sample"
)

// SimConfig describes synthetic clusters.
type SimConfig struct {
	// Clusters are the simulated cluster names.
	Clusters []string
	// Projects per cluster; namespaces are spread over them.
	Projects int
	// Namespaces per cluster.
	Namespaces int
	// Interval is the collection window.
	Interval time.Duration
	// Backfill is how far back the simulation starts; it then runs live.
	Backfill time.Duration
	// BackfillInterval is the window of backfilled samples (default
	// Interval): a collector catching up may send coarser windows.
	BackfillInterval time.Duration
	// Live keeps producing a window every Interval after the backfill.
	Live bool
	// ChunkSamples is how many samples are handed to emit at once.
	ChunkSamples int
	// Labeler attaches allocation labels: the simulated namespaces carry
	// teams (see SimLabels); nil attaches none.
	Labeler *Labeler
	// Capacity also sends one capacity sample per cluster and window (see
	// Simulator.Capacity).
	Capacity bool
}

// Validate reports every problem at once.
func (c SimConfig) Validate() error {
	var errs []error
	if len(c.Clusters) == 0 {
		errs = append(errs, errors.New("--sim-clusters: at least one cluster"))
	}
	for _, cl := range c.Clusters {
		s := sample.Sample{Cluster: cl, Project: "p", Namespace: "n", Start: time.Unix(0, 0), End: time.Unix(1, 0)}
		if err := s.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("--sim-clusters: %w", err))
		}
	}
	if c.Projects < 1 {
		errs = append(errs, fmt.Errorf("--sim-projects: %d is not positive", c.Projects))
	}
	if c.Namespaces < 1 {
		errs = append(errs, fmt.Errorf("--sim-namespaces: %d is not positive", c.Namespaces))
	}
	if c.Interval < time.Second || c.Interval > time.Hour || c.Interval%time.Second != 0 {
		errs = append(errs, fmt.Errorf("--interval: %s is not whole seconds within 1s..1h", c.Interval))
	}
	if c.Backfill < 0 {
		errs = append(errs, fmt.Errorf("--backfill: %s is negative", c.Backfill))
	}
	return errors.Join(errs...)
}

// Simulator produces realistic, deterministic usage for synthetic
// clusters: the same window always yields the same sample, so restarting a
// simulation re-sends duplicates, never new usage.
type Simulator struct {
	cfg      SimConfig
	now      func() time.Time
	capacity map[string]sample.Capacity // cluster → its constant capacity
	keys     []string                   // the allocation label keys
}

// NewSimulator returns a Simulator; now is the clock (time.Now if nil).
func NewSimulator(cfg SimConfig, now func() time.Time) (*Simulator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.ChunkSamples <= 0 {
		cfg.ChunkSamples = 20_000
	}
	if now == nil {
		now = time.Now
	}
	s := &Simulator{cfg: cfg, now: now, capacity: map[string]sample.Capacity{}, keys: cfg.Labeler.Keys()}
	for _, c := range cfg.Clusters {
		s.capacity[c] = s.clusterCapacity(c)
	}
	return s, nil
}

// Emit receives samples to publish.
type Emit func(ctx context.Context, samples []sample.Sample) error

// Run emits every window from now-Backfill (aligned to Interval) to now,
// then, if Live, one window per Interval until ctx ends.
func (s *Simulator) Run(ctx context.Context, emit Emit) error {
	iv := s.cfg.Interval
	biv := s.cfg.BackfillInterval
	if biv <= 0 {
		biv = iv
	}
	end := s.now().Truncate(biv)
	t := end.Add(-s.cfg.Backfill).Truncate(biv)
	chunk := make([]sample.Sample, 0, s.cfg.ChunkSamples)
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		err := emit(ctx, chunk)
		chunk = chunk[:0]
		return err
	}
	for ; t.Before(end); t = t.Add(biv) {
		for _, c := range s.cfg.Clusters {
			for n := 0; n < s.cfg.Namespaces; n++ {
				chunk = append(chunk, s.window(c, n, t, biv))
				if len(chunk) >= cap(chunk) {
					if err := flush(); err != nil {
						return err
					}
				}
			}
			if s.cfg.Capacity {
				chunk = append(chunk, s.capacitySample(c, t, biv))
				if len(chunk) >= cap(chunk) {
					if err := flush(); err != nil {
						return err
					}
				}
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	for s.cfg.Live {
		next := t.Add(iv)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Until(next)):
		}
		for _, c := range s.cfg.Clusters {
			for n := 0; n < s.cfg.Namespaces; n++ {
				chunk = append(chunk, s.window(c, n, t, iv))
			}
			if s.cfg.Capacity {
				chunk = append(chunk, s.capacitySample(c, t, iv))
			}
		}
		if err := flush(); err != nil {
			return err
		}
		t = next
	}
	return nil
}

// Sample returns namespace n of cluster c for the window of Interval
// starting at t.
func (s *Simulator) Sample(cluster string, n int, t time.Time) sample.Sample {
	return s.window(cluster, n, t, s.cfg.Interval)
}

// Capacity returns the capacity sample of cluster c for the window of
// Interval starting at t: constant per cluster, about 1.5 times what its
// namespaces request (their usage peaks at 1.17 times their CPU request
// and stays below their memory request), rounded up to whole 4-core,
// 16 GiB nodes and to 100 GiB of volumes, so idle capacity shows.
func (s *Simulator) Capacity(cluster string, t time.Time) sample.Sample {
	return s.capacitySample(cluster, t, s.cfg.Interval)
}

func (s *Simulator) capacitySample(cluster string, t time.Time, iv time.Duration) sample.Sample {
	c := s.capacity[cluster]
	return sample.Sample{Cluster: cluster, Start: t, End: t.Add(iv), Capacity: &c}
}

func (s *Simulator) clusterCapacity(cluster string) sample.Capacity {
	var cpu, mem, storage float64
	for n := 0; n < s.cfg.Namespaces; n++ {
		seed, size := simSeed(cluster, n)
		cpu += size
		mem += math.Round(size * 2 * (1 << 30))
		storage += float64(seed%50+10) * (1 << 30)
	}
	nodes := math.Max(math.Ceil(cpu*1.5/4), math.Ceil(mem*1.5/(16<<30)))
	return sample.Capacity{CPU: nodes * 4, Memory: nodes * (16 << 30), Storage: math.Ceil(storage*1.25/(100<<30)) * (100 << 30)}
}

// simTeams are the teams the simulated namespaces belong to.
var simTeams = [...]string{"payments", "search", "data", "web", "mobile", "platform"}

// SimLabels returns the labels simulated namespace n carries, for the
// allocation keys: every sixth namespace (n%6 == 5) carries none (it is
// unallocated unless the label map covers it); the others carry team (one
// of six teams, two neighbouring namespaces per team), cost-center
// (cc-100, cc-200 or cc-300, by team), a key whose name is env or
// environment (prod or staging), and any other key the value v<n%3>.
func SimLabels(n int, keys []string) map[string]string {
	if n%6 == 5 || len(keys) == 0 {
		return nil
	}
	team := (n / 2) % len(simTeams)
	out := make(map[string]string, len(keys))
	for _, k := range keys {
		name := k[strings.LastIndexByte(k, '/')+1:]
		switch name {
		case "team":
			out[k] = simTeams[team]
		case "cost-center", "cost_center", "costcenter":
			out[k] = fmt.Sprintf("cc-%d", 100*(team%3+1))
		case "env", "environment":
			out[k] = [...]string{"prod", "staging"}[n%2]
		default:
			out[k] = fmt.Sprintf("v%d", n%3)
		}
	}
	return out
}

func simSeed(cluster string, n int) (seed uint64, size float64) {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%d", cluster, n)
	seed = h.Sum64()
	return seed, 0.05 + float64(seed%1000)/250 // cores requested: 0.05..4
}

func (s *Simulator) window(cluster string, n int, t time.Time, iv time.Duration) sample.Sample {
	seed, size := simSeed(cluster, n)
	ns := fmt.Sprintf("ns-%d", n)
	// A day curve peaking mid-afternoon, plus per-window noise.
	hour := float64(t.UTC().Hour()) + float64(t.UTC().Minute())/60
	diurnal := 0.55 + 0.35*math.Sin((hour-9)/24*2*math.Pi)
	noise := float64((seed^uint64(t.Unix())*0x9E3779B97F4A7C15)>>40%1000) / 1000
	cpuUse := round3(size * diurnal * (0.7 + 0.6*noise))
	memReq := math.Round(size * 2 * (1 << 30))
	return sample.Sample{
		Cluster:   cluster,
		Project:   fmt.Sprintf("project-%d", n%s.cfg.Projects),
		Namespace: ns,
		Start:     t,
		End:       t.Add(iv),
		CPU:       sample.Resources{Usage: cpuUse, Request: round3(size), Quota: round3(size * 2)},
		Memory:    sample.Resources{Usage: math.Round(memReq * (0.5 + 0.5*noise)), Request: memReq, Quota: memReq * 2},
		Storage:   sample.Resources{Usage: float64(seed%50) * (1 << 30), Request: float64(seed%50+10) * (1 << 30), Quota: 100 * (1 << 30)},
		Labels:    s.cfg.Labeler.Labels(ns, SimLabels(n, s.keys)),
	}
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }
