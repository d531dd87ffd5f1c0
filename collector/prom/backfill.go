package prom

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/internal/sample"
)

// Interval is [Start, End).
type Interval struct{ Start, End time.Time }

// Gaps tells which time of a cluster is already counted (--fill-gaps).
type Gaps interface {
	// Covered returns the merged, sorted intervals overlapping [from, to)
	// in which cluster has counted samples of any namespace.
	Covered(ctx context.Context, cluster string, from, to time.Time) ([]Interval, error)
}

// ErrConfig marks a problem with the configuration or with what Prometheus
// holds: the collector exits 2 before sending anything.
var ErrConfig = errors.New("prometheus source")

// metric is a series the source reads, and who exports it.
type metric struct {
	name, exporter string
	required       bool
}

var metrics = []metric{
	{"kube_namespace_labels", "kube-state-metrics", true},
	{"kube_pod_status_phase", "kube-state-metrics", true},
	{"kube_pod_container_resource_requests", "kube-state-metrics", true},
	{"container_cpu_usage_seconds_total", "cAdvisor (the kubelet's /metrics/cadvisor)", true},
	{"container_memory_working_set_bytes", "cAdvisor (the kubelet's /metrics/cadvisor)", true},
	{"kube_pod_init_container_resource_requests", "kube-state-metrics", false},
	{"kube_resourcequota", "kube-state-metrics", false},
	{"kube_persistentvolumeclaim_resource_requests_storage_bytes", "kube-state-metrics", false},
	{"kube_persistentvolumeclaim_status_phase", "kube-state-metrics", false},
	{"kubelet_volume_stats_used_bytes", "the kubelet's /metrics", false},
	{"kube_node_status_allocatable", "kube-state-metrics", false},
	{"kube_node_status_condition", "kube-state-metrics", false},
	{"kube_persistentvolume_capacity_bytes", "kube-state-metrics", false},
	{"kube_persistentvolume_status_phase", "kube-state-metrics", false},
}

// Check verifies, before anything is sent, that Prometheus answers and
// holds the series the source needs over the range it will read (the
// backfill's days, or the last hour when following live). Problems wrap
// ErrConfig and name what is missing; series that only some clusters have
// (quotas, claims, volume stats) are logged when absent.
func (s *Source) Check(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	info, err := s.api.Runtimeinfo(cctx)
	if err != nil {
		return fmt.Errorf("%w: prometheus at %s does not answer: %w", ErrConfig, s.cfg.URL, err)
	}
	from, to := s.now().Add(-s.cfg.Delay-time.Hour), s.now().Add(-s.cfg.Delay)
	if s.cfg.Backfill() {
		from, to, _ = s.cfg.Range()
		if lim := s.limit(); to.After(lim) {
			to = lim
		}
		if !to.After(from) {
			return fmt.Errorf("%w: --from %s: nothing to backfill before now − --prometheus-delay (%s)", ErrConfig, s.cfg.From, s.limit().Format(time.RFC3339))
		}
	}
	var errs []error
	for _, m := range metrics {
		ok, err := s.present(ctx, m.name, from, to)
		switch {
		case err != nil:
			return fmt.Errorf("%w: %w", ErrConfig, err)
		case !ok && m.required:
			errs = append(errs, fmt.Errorf("%w: prometheus has no %s{%s} between %s and %s (exported by %s)", ErrConfig, m.name, strings.TrimPrefix(s.sel, ","), from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339), m.exporter))
		case !ok:
			s.log.WarnContext(ctx, "series absent; its values are sent as 0 (node and volume capacity: no capacity samples)", "metric", m.name, "exporter", m.exporter)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if s.cfg.Backfill() {
		// The first day must have data: a --from past Prometheus's
		// retention would otherwise silently send nothing for it.
		first := from.AddDate(0, 0, 1)
		if first.After(to) {
			first = to
		}
		ok, err := s.present(ctx, "kube_pod_status_phase", from, first)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrConfig, err)
		}
		if !ok {
			return fmt.Errorf("%w: --from %s: prometheus has no data on that day (its retention is %s)", ErrConfig, s.cfg.From, info.StorageRetention)
		}
	}
	return nil
}

// present reports whether name{selector} has a sample in [from, to].
func (s *Source) present(ctx context.Context, name string, from, to time.Time) (bool, error) {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	rng := max(to.Sub(from), time.Second)
	expr := fmt.Sprintf("count(present_over_time(%s{%s}[%ds]))", name, strings.TrimPrefix(s.sel, ","), int(rng/time.Second))
	val, _, err := s.api.Query(cctx, expr, to, v1.WithTimeout(s.cfg.Timeout))
	if err != nil {
		return false, fmt.Errorf("query %s at %s: %w", expr, to.UTC().Format(time.RFC3339), err)
	}
	v, ok := val.(model.Vector)
	return ok && len(v) > 0 && v[0].Value > 0, nil
}

// limit is the end of the last window Prometheus should have whole.
func (s *Source) limit() time.Time { return s.now().Add(-s.cfg.Delay).Truncate(s.cfg.Interval) }

// Summary is what a backfill did.
type Summary struct {
	Days, Samples, Skipped int
}

// Backfill reads the days --from..--to (billing zone, inclusive) one at a
// time and emits their samples, writing one progress line per day to
// progress; with --fill-gaps it sends only windows that no sample of the
// cluster covers yet, so filling next to counted data never overlaps it.
// A day's windows are those starting in it; windows ending after
// now − --prometheus-delay are left out.
func (s *Source) Backfill(ctx context.Context, emit collector.Emit, progress io.Writer) (Summary, error) {
	var sum Summary
	from, to, err := s.cfg.Range()
	if err != nil {
		return sum, fmt.Errorf("%w: --from, --to: %w", ErrConfig, err)
	}
	lim := s.limit()
	days := 0
	for d := from; d.Before(to); d = d.AddDate(0, 0, 1) {
		days++
	}
	began := s.now()
	for d := from; d.Before(to); d = d.AddDate(0, 0, 1) {
		a, b := ceilTo(d, s.cfg.Interval), ceilTo(d.AddDate(0, 0, 1), s.cfg.Interval)
		if b.After(lim) {
			b = lim
		}
		var samples []sample.Sample
		if b.After(a) {
			samples, err = s.Collect(ctx, a, b)
			if err != nil {
				return sum, fmt.Errorf("read %s: %w", d.Format(DateLayout), err)
			}
		}
		if s.cfg.FillGaps && len(samples) > 0 {
			covered, err := s.gaps.Covered(ctx, s.cfg.Cluster, a, b)
			if err != nil {
				return sum, fmt.Errorf("read the coverage of %s: %w", d.Format(DateLayout), err)
			}
			kept := samples[:0]
			for _, smp := range samples {
				if overlaps(covered, smp.Start, smp.End) {
					sum.Skipped++
					continue
				}
				kept = append(kept, smp)
			}
			samples = kept
		}
		if len(samples) > 0 {
			if err := emit(ctx, samples); err != nil {
				return sum, fmt.Errorf("send %s: %w", d.Format(DateLayout), err)
			}
		}
		sum.Days++
		sum.Samples += len(samples)
		rate := float64(sum.Samples) / max(s.now().Sub(began).Seconds(), 1e-3)
		fmt.Fprintf(progress, "%s: %d of %d days done, %d samples sent (%d this day), %.0f samples/s\n",
			d.Format(DateLayout), sum.Days, days, sum.Samples, len(samples), rate)
	}
	return sum, nil
}

// overlaps reports whether [start, end) shares a second with any interval.
func overlaps(ivs []Interval, start, end time.Time) bool {
	for _, iv := range ivs {
		if iv.Start.Before(end) && start.Before(iv.End) {
			return true
		}
	}
	return false
}

// ceilTo rounds t up to a multiple of d since the epoch.
func ceilTo(t time.Time, d time.Duration) time.Time {
	f := t.Truncate(d)
	if f.Before(t) {
		return f.Add(d)
	}
	return f
}
