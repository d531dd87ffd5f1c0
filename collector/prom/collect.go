package prom

import (
	"context"
	"errors"
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
	labels                           []string // values of the allocation keys ("" absent), at projectAt
	projectAt                        int      // slot of project, -1 if none
}

// capSums are the cluster's capacity × seconds in one window; seen tells
// whether Prometheus had any node or volume capacity series in it.
type capSums struct {
	cpu, mem, storage float64
	seen              bool
}

// collect reads [a, b) in one set of queries.
func (s *Source) collect(ctx context.Context, a, b time.Time) ([]sample.Sample, error) {
	step, iv := s.cfg.Step, s.cfg.Interval
	n := int(b.Sub(a) / step)
	per := int(iv / step)
	sel := s.sel
	projLabel := model.LabelName(labelName(s.cfg.ProjectLabel))
	keys := s.cfg.Labeler.Keys()
	nsBy := []model.LabelName{"namespace", projLabel}
	for _, k := range keys {
		nsBy = append(nsBy, model.LabelName(labelName(k)))
	}
	type q struct {
		dst    *map[seriesKey]slots
		expr   string
		start  time.Time
		labels []model.LabelName
	}
	var nsLabels, running, reqCPU, reqMem, initCPU, initMem, memUse, cpuInc, quotas, pvcReq, pvcBound, pvcUsed map[seriesKey]slots
	var allocCPU, allocMem, nodeReady, nodeCordoned, pvCap, pvBound map[seriesKey]slots
	byNode := []model.LabelName{"node"}
	byPV := []model.LabelName{"persistentvolume"}
	byPod := []model.LabelName{"namespace", "pod"}
	byClaim := []model.LabelName{"namespace", "persistentvolumeclaim"}
	cadvisor := `container!="",container!="POD"` + sel
	queries := []q{
		{&nsLabels, `kube_namespace_labels{namespace!=""` + sel + `}`, a, nsBy},
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
		// The cluster's capacity.
		{&allocCPU, `kube_node_status_allocatable{resource="cpu"` + sel + `}`, a, byNode},
		{&allocMem, `kube_node_status_allocatable{resource="memory"` + sel + `}`, a, byNode},
		{&nodeReady, `kube_node_status_condition{condition="Ready",status="true"` + sel + `} == 1`, a, byNode},
		{&nodeCordoned, `kube_node_spec_unschedulable{node!=""` + sel + `} == 1`, a, byNode},
		{&pvCap, `kube_persistentvolume_capacity_bytes{persistentvolume!=""` + sel + `}`, a, byPV},
		{&pvBound, `kube_persistentvolume_status_phase{phase="Bound"` + sel + `} == 1`, a, byPV},
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
		parts := strings.Split(key, "\x00")
		ns, project, values := parts[0], parts[1], parts[2:]
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
				a.project, a.labels, a.projectAt = project, values, k
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

	caps := make([]capSums, windows)
	for node, alloc := range allocCPU {
		for k := range n {
			if alloc.has(k) || allocMem[node].has(k) {
				caps[k/per].seen = true
			}
			if nodeReady[node].at(k) != 1 || nodeCordoned[node].at(k) == 1 {
				continue // not Ready, or cordoned: no room for new pods
			}
			caps[k/per].cpu += alloc.at(k) * secs
		}
	}
	for node, alloc := range allocMem {
		for k := range n {
			if alloc.has(k) {
				caps[k/per].seen = true
			}
			if nodeReady[node].at(k) != 1 || nodeCordoned[node].at(k) == 1 {
				continue
			}
			caps[k/per].mem += alloc.at(k) * secs
		}
	}
	for pv, c := range pvCap {
		for k := range n {
			if c.has(k) {
				caps[k/per].seen = true
			}
			if pvBound[pv].at(k) == 1 {
				caps[k/per].storage += c.at(k) * secs
			}
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
				Labels: s.cfg.Labeler.Labels(ns, ownLabels(keys, x.labels)),
			}
			if err := smp.Validate(); err != nil {
				s.log.WarnContext(ctx, "skip a namespace whose sample is invalid", "namespace", ns, "err", err)
				continue
			}
			out = append(out, smp)
		}
		if c := caps[w]; c.seen {
			// No capacity series in the window: no capacity sample (the
			// cluster's idle is unknown, not zero).
			out = append(out, sample.Sample{Cluster: s.cfg.Cluster, Start: start, End: start.Add(iv), Capacity: &sample.Capacity{
				CPU: bound(c.cpu/ivs, sample.MaxCapacityCores), Memory: bound(c.mem/ivs, sample.MaxCapacityBytes),
				Storage: bound(c.storage/ivs, sample.MaxCapacityBytes)}})
		}
	}
	return out, nil
}

// ownLabels pairs the allocation keys with a namespace's values ("" is
// absent).
func ownLabels(keys, values []string) map[string]string {
	if len(values) != len(keys) {
		return nil
	}
	var out map[string]string
	for i, v := range values {
		if v == "" {
			continue
		}
		if out == nil {
			out = make(map[string]string, len(keys))
		}
		out[keys[i]] = v
	}
	return out
}

// bound clamps a value to the wire format's bound (a quota of exabytes
// means "unlimited").
func bound(v, limit float64) float64 { return min(v, limit) }

var invalidLabelChars = regexp.MustCompile(`[^a-zA-Z0-9_]`)

// labelName is the label kube-state-metrics gives a Kubernetes label on
// kube_namespace_labels: "label_" and the key with every character other
// than a-z, A-Z, 0-9 and '_' (so '.', '/' and '-') replaced by '_':
// example.com/env is label_example_com_env.
func labelName(k8sLabel string) string {
	return "label_" + invalidLabelChars.ReplaceAllString(k8sLabel, "_")
}

// CheckLabelKeys refuses allocation label keys that kube-state-metrics
// exports under the same Prometheus label as another of them or as the
// project label (team-a and team.a are both label_team_a): the source
// could not tell their values apart.
func CheckLabelKeys(projectLabel string, keys []string) error {
	seen := map[string]string{labelName(projectLabel): projectLabel}
	var errs []error
	for _, k := range keys {
		n := labelName(k)
		if other, ok := seen[n]; ok && other != k {
			errs = append(errs, fmt.Errorf("%q and %q are both %s on kube_namespace_labels (kube-state-metrics turns '.', '/' and '-' into '_'), so they cannot be told apart", other, k, n))
			continue
		}
		seen[n] = k
	}
	return errors.Join(errs...)
}
