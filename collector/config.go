package collector

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/alauda/costmeter/collector/spool"
	"github.com/alauda/costmeter/internal/config"
)

// Sources.
const (
	SourceFile       = "file"
	SourceSimulate   = "simulate"
	SourceKubernetes = "kubernetes"
	SourcePrometheus = "prometheus"
)

// DefaultSpoolMaxBytes bounds the spool by default: about 12 hours of a
// 1000-namespace cluster at one-minute windows (~330 bytes per sample).
const DefaultSpoolMaxBytes = 256 << 20

// Config is the collector's configuration.
type Config struct {
	Source   string
	File     string
	MaxBatch int
	// Spool is where the kubernetes and simulate sources keep batches
	// until JetStream acknowledged them.
	Spool spool.Config
	// Listen is the address of /healthz, /readyz and /metrics (empty:
	// none) for the long-running sources.
	Listen string
	// Sim configures --source simulate; Interval is shared with the
	// Kubernetes source.
	Sim              SimConfig
	simClusters      string
	BackfillInterval time.Duration
	// AllocationLabels (--allocation-labels) and AllocationLabelMap
	// (--allocation-label-map) configure the allocation labels every
	// source but file attaches; Validate builds Labeler from them.
	AllocationLabels   string
	AllocationLabelMap string
	Labeler            *Labeler
}

// RegisterFlags registers the collector's flags.
func (c *Config) RegisterFlags(f *config.Flags) {
	f.String(&c.Source, "source", "COLLECTOR_SOURCE", SourceSimulate, "where samples come from: file, simulate, kubernetes or prometheus")
	f.String(&c.File, "file", "COLLECTOR_FILE", "", "NDJSON file to import with --source file ('-' for stdin)")
	f.String(&c.Spool.Dir, "spool-dir", "COLLECTOR_SPOOL_DIR", "data/spool", "directory of the on-disk spool of unpublished batches (kubernetes and simulate sources)")
	f.Int64(&c.Spool.MaxBytes, "spool-max-bytes", "COLLECTOR_SPOOL_MAX_BYTES", DefaultSpoolMaxBytes, "bound of the spool; when full the oldest batches are dropped (logged and counted)")
	f.String(&c.Listen, "listen", "COLLECTOR_LISTEN", ":9090", "address of /healthz, /readyz and /metrics for the kubernetes and simulate sources (empty: none)")
	f.String(&c.AllocationLabels, "allocation-labels", "COST_ALLOCATION_LABELS", "", "namespace label keys each sample carries the values of, comma separated, verbatim (e.g. team,cost-center,example.com/env; at most 8)")
	f.String(&c.AllocationLabelMap, "allocation-label-map", "COLLECTOR_ALLOCATION_LABEL_MAP", "", "YAML file mapping namespace globs to values of the --allocation-labels keys, for namespaces without their own (first match wins)")
	c.RegisterSimFlags(f)
}

// RegisterSimFlags registers only the simulation's flags (costd embeds a
// simulated collector and nothing else of it). The backfill flags default to
// what c already holds, so that costd can give its own defaults and the
// environment (SIM_BACKFILL, SIM_BACKFILL_INTERVAL) still overrides them.
func (c *Config) RegisterSimFlags(f *config.Flags) {
	f.Int(&c.MaxBatch, "max-batch", "COLLECTOR_MAX_BATCH", DefaultMaxBatch, "samples per NATS message")
	f.String(&c.simClusters, "sim-clusters", "SIM_CLUSTERS", "sim-east,sim-west,sim-edge", "simulated cluster names, comma separated")
	f.Int(&c.Sim.Projects, "sim-projects", "SIM_PROJECTS", 4, "simulated projects per cluster")
	f.Int(&c.Sim.Namespaces, "sim-namespaces", "SIM_NAMESPACES", 12, "simulated namespaces per cluster")
	f.Duration(&c.Sim.Interval, "interval", "COLLECTOR_INTERVAL", time.Minute, "collection window")
	f.Duration(&c.Sim.Backfill, "backfill", "SIM_BACKFILL", c.Sim.Backfill, "how far back the simulation starts before running live")
	f.Bool(&c.Sim.Capacity, "sim-capacity", "SIM_CAPACITY", c.Sim.Capacity, "also send each simulated cluster's capacity (allocatable CPU and memory, bound volumes) per window")
	f.Duration(&c.BackfillInterval, "backfill-interval", "SIM_BACKFILL_INTERVAL", c.BackfillInterval, "window of the backfilled samples (default: --interval)")
}

// Finish derives the fields flags cannot set directly; call after parsing.
func (c *Config) Finish() {
	c.Sim.Clusters = nil
	for _, s := range strings.Split(c.simClusters, ",") {
		if s = strings.TrimSpace(s); s != "" {
			c.Sim.Clusters = append(c.Sim.Clusters, s)
		}
	}
	c.Sim.Live = true
	c.Sim.BackfillInterval = c.BackfillInterval
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	switch c.Source {
	case SourceFile:
		if c.File == "" {
			errs = append(errs, errors.New("--file: required with --source file"))
		}
	case SourceSimulate:
		errs = append(errs, c.Sim.Validate(), c.Spool.Validate())
		if c.BackfillInterval != 0 && (c.BackfillInterval < c.Sim.Interval || c.BackfillInterval > 24*time.Hour || c.BackfillInterval%c.Sim.Interval != 0) {
			errs = append(errs, fmt.Errorf("--backfill-interval: %s is not a multiple of --interval up to 24h", c.BackfillInterval))
		}
	case SourceKubernetes:
		// The source's own flags (--cluster, --interval, …) are validated
		// by collector/kube, which this package does not import.
		errs = append(errs, c.Spool.Validate())
	case SourcePrometheus:
		// Its flags are validated by collector/prom; a backfill publishes
		// directly, following live uses the spool.
		errs = append(errs, c.Spool.Validate())
	default:
		errs = append(errs, fmt.Errorf("--source: %q is not file, simulate, kubernetes or prometheus", c.Source))
	}
	keys, err := ParseLabelKeys(c.AllocationLabels)
	if err != nil {
		errs = append(errs, fmt.Errorf("--allocation-labels: %w", err))
	} else if c.Labeler, err = NewLabeler(keys, c.AllocationLabelMap); err != nil {
		errs = append(errs, fmt.Errorf("--allocation-label-map: %w", err))
	}
	c.Sim.Labeler = c.Labeler
	if c.MaxBatch < 1 || c.MaxBatch > 2000 {
		errs = append(errs, fmt.Errorf("--max-batch: %d is not within 1..2000", c.MaxBatch))
	}
	return errors.Join(errs...)
}
