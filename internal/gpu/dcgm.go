package gpu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The DCGM exporter's metrics and labels that metering reads, as the
// exporter names them.
const (
	// MetricEngineActive is the ratio of time the graphics engine was
	// active (0..1), a profiling metric: the preferred measure of use.
	MetricEngineActive = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
	// MetricUtil is the GPU utilisation in percent (0..100), used where
	// profiling metrics are off.
	MetricUtil = "DCGM_FI_DEV_GPU_UTIL"

	labelGPU         = "gpu"
	labelUUID        = "UUID"
	labelModel       = "modelName"
	labelHostname    = "Hostname"
	labelMIGProfile  = "GPU_I_PROFILE"
	labelMIGInstance = "GPU_I_ID"
	labelNamespace   = "namespace"
	labelPod         = "pod"
	labelContainer   = "container"
)

// Reading is one device's activity in one scrape: a whole GPU, or a MIG
// instance of one, and the pod the exporter attributes it to, if any.
type Reading struct {
	Node, GPU, UUID, Model string
	// MIGProfile and MIGInstance are set for a MIG instance.
	MIGProfile, MIGInstance string
	// Namespace, Pod and Container are the pod holding the device; empty
	// when the exporter names none (a shared GPU, or an idle one).
	Namespace, Pod, Container string
	// Activity is the share of time the device was busy, 0..1.
	Activity float64
	// Metric is the metric Activity came from.
	Metric string
}

// Size is the fraction of its physical GPU the reading's device is: 1 for
// a whole GPU, the MIG instance's compute slices over the model's.
func (r *Reading) Size() (Fraction, error) {
	if r.MIGProfile == "" {
		return Whole, nil
	}
	c, err := MIGComputeSlices(r.MIGProfile)
	if err != nil {
		return Fraction{}, fmt.Errorf("GPU %s instance %s: %w", r.UUID, r.MIGInstance, err)
	}
	return reduce(Fraction{c, ComputeSlices(r.Model)}), nil
}

// Scrape reads one DCGM exporter's /metrics page. A failed request or a
// status other than 200 is an error naming the URL; see Parse for the rest.
func Scrape(ctx context.Context, client *http.Client, url string) ([]Reading, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("scrape DCGM exporter %s: %w", url, err)
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape DCGM exporter %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		return nil, fmt.Errorf("scrape DCGM exporter %s: %s", url, resp.Status)
	}
	rs, err := Parse(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return rs, fmt.Errorf("scrape DCGM exporter %s: %w", url, err)
	}
	return rs, nil
}

// Parse reads the exporter's exposition text with the Prometheus
// project's parser. Each device (node, GPU, MIG instance, pod, container)
// gets one reading: from MetricEngineActive when the exporter has it for
// that device, else MetricUtil / 100. Text that does not parse is an
// error and no readings; a series whose value is not within its range is
// left out and named in the returned error, the others are returned.
func Parse(r io.Reader) ([]Reading, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse DCGM exposition: %w", err)
	}
	type key struct{ node, gpu, uuid, inst, ns, pod, ctr string }
	byKey := map[key]*Reading{}
	var bad []error
	for _, src := range []struct {
		name  string
		scale float64
	}{{MetricEngineActive, 1}, {MetricUtil, 100}} {
		f := families[src.name]
		if f == nil {
			continue
		}
		for _, m := range f.GetMetric() {
			l := labelsOf(m)
			k := key{l[labelHostname], l[labelGPU], l[labelUUID], l[labelMIGInstance], l[labelNamespace], l[labelPod], l[labelContainer]}
			if _, ok := byKey[k]; ok {
				continue // the profiling metric came first
			}
			v := valueOf(m)
			if math.IsNaN(v) || v < 0 || v > src.scale {
				bad = append(bad, fmt.Errorf("%s{gpu=%q,UUID=%q,%s=%q}: %g is not within 0..%g", src.name, k.gpu, k.uuid, labelMIGInstance, k.inst, v, src.scale))
				continue
			}
			byKey[k] = &Reading{Node: k.node, GPU: k.gpu, UUID: k.uuid, Model: l[labelModel],
				MIGProfile: l[labelMIGProfile], MIGInstance: k.inst,
				Namespace: k.ns, Pod: k.pod, Container: k.ctr, Activity: v / src.scale, Metric: src.name}
		}
	}
	out := make([]Reading, 0, len(byKey))
	for _, r := range byKey {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].less(&out[j]) })
	return out, errors.Join(bad...)
}

func (r *Reading) less(o *Reading) bool {
	a := [...]string{r.Node, r.UUID, r.GPU, r.MIGInstance, r.Namespace, r.Pod, r.Container}
	b := [...]string{o.Node, o.UUID, o.GPU, o.MIGInstance, o.Namespace, o.Pod, o.Container}
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}

func labelsOf(m *dto.Metric) map[string]string {
	out := make(map[string]string, len(m.GetLabel()))
	for _, lp := range m.GetLabel() {
		out[lp.GetName()] = lp.GetValue()
	}
	return out
}

func valueOf(m *dto.Metric) float64 {
	switch {
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetUntyped() != nil:
		return m.GetUntyped().GetValue()
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	}
	return math.NaN()
}

// PodKey names a pod.
type PodKey struct{ Namespace, Pod string }

func (k PodKey) String() string { return k.Namespace + "/" + k.Pod }

// SharedHolding is a pod's hold on shared GPUs of a node (time-sliced or
// MPS replicas): the exporter names no pod for those, so their activity is
// split over the holders.
type SharedHolding struct {
	Pod  PodKey
	Node string
	// Share is the pod's fraction of a physical GPU (replicas held over
	// replicas per GPU).
	Share Fraction
}

// Usage is what Attribute makes of one scrape.
type Usage struct {
	// Pods holds each pod's usage in GPUs: busy fraction × the device's
	// size, summed over its devices.
	Pods map[PodKey]float64
	// Unattributed sums, in GPUs, the activity of devices no pod holds
	// (an idle GPU's is 0; a GPU used outside Kubernetes is not charged).
	Unattributed float64
}

// Attribute turns readings into usage per pod:
//   - a device the exporter names a pod for (a whole GPU, a MIG instance):
//     its activity × its size (Reading.Size) goes to that pod;
//   - the devices of a node it names no pod for: their activity is
//     pooled per node and split over the pods holding shared GPUs on that
//     node, in proportion to their shares. A shared GPU is never charged
//     as zero: whoever holds a share of the node's GPUs carries their use.
//
// A reading whose size cannot be read is an error naming it; the others
// are attributed.
func Attribute(readings []Reading, shared []SharedHolding) (Usage, error) {
	u := Usage{Pods: map[PodKey]float64{}}
	pool := map[string]float64{} // node -> unnamed activity, in GPUs
	var bad []error
	for i := range readings {
		r := &readings[i]
		size, err := r.Size()
		if err != nil {
			bad = append(bad, err)
			continue
		}
		busy := r.Activity * size.Float()
		if r.Pod != "" {
			u.Pods[PodKey{r.Namespace, r.Pod}] += busy
			continue
		}
		pool[r.Node] += busy
	}
	weights := map[string]Fraction{} // node -> total shares held
	for _, h := range shared {
		w, ok := weights[h.Node]
		if !ok {
			w = Fraction{0, 1}
		}
		weights[h.Node] = w.Add(h.Share)
	}
	for _, h := range shared {
		busy := pool[h.Node]
		total := weights[h.Node]
		if busy == 0 || total.Num == 0 {
			continue
		}
		// busy × share / total, with the fractions' integers kept apart.
		u.Pods[h.Pod] += busy * float64(h.Share.Num*total.Den) / float64(h.Share.Den*total.Num)
	}
	nodes := make([]string, 0, len(pool))
	for n := range pool {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	for _, n := range nodes {
		if w := weights[n]; w.Num == 0 {
			u.Unattributed += pool[n]
		}
	}
	return u, errors.Join(bad...)
}
