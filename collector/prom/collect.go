package prom

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strings"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/alauda/costmeter/internal/sample"
)

// Collect reads the windows that start in [from, to) (both on the
// --interval grid) and returns their samples, one per namespace and
// window, ordered by window then namespace.
func (s *Source) Collect(ctx context.Context, from, to time.Time) ([]sample.Sample, error) {
	iv, step := s.cfg.Interval, s.cfg.Step
	per := int(iv / step)
	chunk := max(MaxPoints/per, 1) * int(iv/time.Second) // seconds per query: whole windows, at most MaxPoints slots
	var out []sample.Sample
	for a := from; a.Before(to); {
		b := a.Add(time.Duration(chunk) * time.Second)
		if b.After(to) {
			b = to
		}
		got, err := s.collect(ctx, a, b)
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
		a = b
	}
	return out, nil
}

// seriesKey joins label values.
type seriesKey = string

// slots is one value per slot, NaN where the series is absent.
type slots []float64

func (v slots) at(k int) float64 {
	if v == nil || math.IsNaN(v[k]) {
		return 0
	}
	return v[k]
}

func (v slots) has(k int) bool { return v != nil && !math.IsNaN(v[k]) }

// query runs a range query at n slots from start and returns its series
// keyed by the values of labels (joined with "\x00"); series with the same
// key are added.
func (s *Source) query(ctx context.Context, expr string, start time.Time, n int, labels ...model.LabelName) (map[seriesKey]slots, error) {
	step := s.cfg.Step
	cctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	val, warns, err := s.api.QueryRange(cctx, expr, v1.Range{Start: start, End: start.Add(time.Duration(n-1) * step), Step: step})
	if err != nil {
		return nil, fmt.Errorf("query %s from %s: %w", expr, start.UTC().Format(time.RFC3339), err)
	}
	for _, w := range warns {
		s.log.WarnContext(ctx, "prometheus warning", "query", expr, "warning", w)
	}
	m, ok := val.(model.Matrix)
	if !ok {
		return nil, fmt.Errorf("query %s: got a %s, want a matrix", expr, val.Type())
	}
	out := map[seriesKey]slots{}
	parts := make([]string, len(labels))
	for _, ss := range m {
		for i, l := range labels {
			parts[i] = string(ss.Metric[l])
		}
		key := strings.Join(parts, "\x00")
		v := out[key]
		if v == nil {
			v = make(slots, n)
			for i := range v {
				v[i] = math.NaN()
			}
			out[key] = v
		}
		for _, p := range ss.Values {
			k := int(p.Timestamp.Time().Sub(start) / step)
			if k < 0 || k >= n || math.IsNaN(float64(p.Value)) {
				continue
			}
			if math.IsNaN(v[k]) {
				v[k] = 0
			}
			v[k] += float64(p.Value)
		}
	}
	return out, nil
}

// sums are one namespace's value × seconds in one window.
type sums struct {
	cpuUse, cpuReq, cpuEff, cpuQuota float64
	memUse, memReq, memEff, memQuota float64
	stUse, stReq, stQuota            float64
	project                          string
	projectAt                        int // slot of project, -1 if none
}

// collect reads [a, b) in one set of queries.
func (s *Source) collect(ctx context.Context, a, b time.Time) ([]sample.Sample, error) {
	step, iv := s.cfg.Step, s.cfg.Interval
	n := int(b.Sub(a) / step)
	per := int(iv / step)
	sel := s.sel
	projLabel := model.LabelName(labelName(s.cfg.ProjectLabel))
	type q struct {
		dst    *map[seriesKey]slots
		expr   string
		start  time.Time
		labels []model.LabelName
	}
	var nsLabels, running, reqCPU, reqMem, initCPU, initMem, memUse, cpuInc, quotas, pvcReq, pvcBound, pvcUsed map[seriesKey]slots
	byPod := []model.LabelName{"namespace", "pod"}
	byClaim := []model.LabelName{"namespace", "persistentvolumeclaim"}
	cadvisor := `container!="",container!="POD"` + sel
	queries := []q{
		{&nsLabels, `kube_namespace_labels{namespace!=""` + sel + `}`, a, []model.LabelName{"namespace", projLabel}},
		{&running, `kube_pod_status_phase{phase="Running"` + sel + `} == 1`, a, byPod},
		{&reqCPU, `sum by (namespace, pod) (kube_pod_container_resource_requests{resource="cpu"` + sel + `})`, a, byPod},
		{&reqMem, `sum by (namespace, pod) (kube_pod_container_resource_requests{resource="memory"` + sel + `})`, a, byPod},
		{&initCPU, `max by (namespace, pod) (kube_pod_init_container_resource_requests{resource="cpu"` + sel + `})`, a, byPod},
		{&initMem, `max by (namespace, pod) (kube_pod_init_container_resource_requests{resource="memory"` + sel + `})`, a, byPod},
		{&memUse, `sum by (namespace, pod) (container_memory_working_set_bytes{` + cadvisor + `})`, a, byPod},
		// The slot's increase, evaluated at its end: the value then minus
		// the value at its start; a reset or a new series counts 0.
		{&cpuInc, fmt.Sprintf(`sum by (namespace, pod) (clamp_min(container_cpu_usage_seconds_total{%s} - container_cpu_usage_seconds_total{%s} offset %ds, 0))`, cadvisor, cadvisor, int(step/time.Second)), a.Add(step), byPod},
		{&quotas, `kube_resourcequota{type="hard",resource=~"requests.cpu|cpu|requests.memory|memory|requests.storage"` + sel + `}`, a, []model.LabelName{"namespace", "resourcequota", "resource"}},
		{&pvcReq, `kube_persistentvolumeclaim_resource_requests_storage_bytes{namespace!=""` + sel + `}`, a, byClaim},
		{&pvcBound, `kube_persistentvolumeclaim_status_phase{phase="Bound"` + sel + `} == 1`, a, byClaim},
		{&pvcUsed, `max by (namespace, persistentvolumeclaim) (kubelet_volume_stats_used_bytes{namespace!=""` + sel + `})`, a, byClaim},
	}
	for _, qq := range queries {
		m, err := s.query(ctx, qq.expr, qq.start, n, qq.labels...)
		if err != nil {
			return nil, err
		}
		*qq.dst = m
	}

	windows := n / per
	win := make([]map[string]*sums, windows)
	for w := range win {
		win[w] = map[string]*sums{}
	}
	get := func(k int, ns string) *sums {
		m := win[k/per]
		a := m[ns]
		if a == nil {
			a = &sums{projectAt: -1}
			m[ns] = a
		}
		return a
	}
	secs := step.Seconds()

	exists := map[string][]bool{}
	for key, v := range nsLabels {
		ns, project, _ := strings.Cut(key, "\x00")
		for k := range n {
			if !v.has(k) {
				continue
			}
			if exists[ns] == nil {
				exists[ns] = make([]bool, n)
			}
			exists[ns][k] = true
			a := get(k, ns)
			if k > a.projectAt {
				a.project, a.projectAt = project, k
			}
		}
	}
	// Quotas: per quota requests.* else the plain resource; the smallest
	// over the namespace's quotas.
	type quotaKey struct{ ns, quota string }
	perQuota := map[quotaKey]map[string]slots{}
	for key, v := range quotas {
		parts := strings.Split(key, "\x00")
		qk := quotaKey{parts[0], parts[1]}
		if perQuota[qk] == nil {
			perQuota[qk] = map[string]slots{}
		}
		perQuota[qk][parts[2]] = v
	}
	for k := range n {
		type minimum struct {
			v   [3]float64
			set [3]bool
		}
		mins := map[string]*minimum{}
		for qk, res := range perQuota {
			m := mins[qk.ns]
			if m == nil {
				m = &minimum{}
				mins[qk.ns] = m
			}
			for i, names := range [3][2]string{{"requests.cpu", "cpu"}, {"requests.memory", "memory"}, {"requests.storage", ""}} {
				v, ok := 0.0, false
				for _, name := range names {
					if name != "" && res[name].has(k) {
						v, ok = res[name].at(k), true
						break
					}
				}
				if ok && (!m.set[i] || v < m.v[i]) {
					m.v[i], m.set[i] = v, true
				}
			}
		}
		for ns, m := range mins {
			if e := exists[ns]; e == nil || !e[k] {
				continue // quotas count while the namespace exists
			}
			a := get(k, ns)
			a.cpuQuota += m.v[0] * secs
			a.memQuota += m.v[1] * secs
			a.stQuota += m.v[2] * secs
		}
	}
	for key, run := range running {
		ns, _, _ := strings.Cut(key, "\x00")
		for k := range n {
			if run.at(k) != 1 {
				continue
			}
			a := get(k, ns)
			rc := max(reqCPU[key].at(k), initCPU[key].at(k))
			rm := max(reqMem[key].at(k), initMem[key].at(k))
			uc := cpuInc[key].at(k) / secs
			um := memUse[key].at(k)
			a.cpuReq += rc * secs
			a.cpuUse += uc * secs
			a.cpuEff += max(uc, rc) * secs
			a.memReq += rm * secs
			a.memUse += um * secs
			a.memEff += max(um, rm) * secs
		}
	}
	for key, bound := range pvcBound {
		ns, _, _ := strings.Cut(key, "\x00")
		for k := range n {
			if bound.at(k) != 1 {
				continue
			}
			a := get(k, ns)
			a.stReq += pvcReq[key].at(k) * secs
			a.stUse += pvcUsed[key].at(k) * secs
		}
	}

	var out []sample.Sample
	ivs := iv.Seconds()
	for w, m := range win {
		start := a.Add(time.Duration(w) * iv)
		names := make([]string, 0, len(m))
		for ns := range m {
			names = append(names, ns)
		}
		sort.Strings(names)
		for _, ns := range names {
			x := m[ns]
			project := x.project
			if project == "" || sample.CheckName(sample.NameProject, project) != nil {
				if project != "" {
					s.log.DebugContext(ctx, "project label is not a lowercase DNS label; using the default project", "namespace", ns, "value", project)
				}
				project = s.cfg.DefaultProject
			}
			cpuEff := bound(x.cpuEff/ivs, sample.MaxCores)
			memEff := bound(x.memEff/ivs, sample.MaxBytes)
			smp := sample.Sample{
				Cluster: s.cfg.Cluster, Project: project, Namespace: ns,
				Start: start, End: start.Add(iv),
				CPU: sample.Resources{Usage: bound(x.cpuUse/ivs, sample.MaxCores), Request: bound(x.cpuReq/ivs, sample.MaxCores),
					Quota: bound(x.cpuQuota/ivs, sample.MaxCores), Effective: &cpuEff},
				Memory: sample.Resources{Usage: bound(x.memUse/ivs, sample.MaxBytes), Request: bound(x.memReq/ivs, sample.MaxBytes),
					Quota: bound(x.memQuota/ivs, sample.MaxBytes), Effective: &memEff},
				Storage: sample.Resources{Usage: bound(x.stUse/ivs, sample.MaxBytes), Request: bound(x.stReq/ivs, sample.MaxBytes),
					Quota: bound(x.stQuota/ivs, sample.MaxBytes)},
			}
			if err := smp.Validate(); err != nil {
				s.log.WarnContext(ctx, "skip a namespace whose sample is invalid", "namespace", ns, "err", err)
				continue
			}
			out = append(out, smp)
		}
	}
	return out, nil
}

// bound clamps a value to the wire format's bound (a quota of exabytes
// means "unlimited").
func bound(v, limit float64) float64 { return min(v, limit) }

var invalidLabelChars = regexp.MustCompile(`[^a-zA-Z0-9_]`)

// labelName is the label kube-state-metrics gives a Kubernetes label on
// kube_namespace_labels.
func labelName(k8sLabel string) string {
	return "label_" + invalidLabelChars.ReplaceAllString(k8sLabel, "_")
}
