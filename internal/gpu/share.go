// Package gpu knows how much of a physical GPU a Kubernetes resource hands
// a pod (a whole GPU, a MIG slice, a time-sliced or MPS share, a device of
// a DRA ResourceClaim), and what NVIDIA's DCGM exporter says each GPU, MIG
// instance and pod did: the two halves of GPU metering (docs/gpu.md).
// Shares are exact fractions, so a GPU-hour is never lost to rounding
// before the rollups round each sample once.
package gpu

import (
	"fmt"
	"strconv"
	"strings"
)

// The extended resources and node labels of NVIDIA's device plugin and
// GPU feature discovery.
const (
	// ResourceGPU is a whole GPU, or a time-sliced or MPS replica of one
	// when the node's LabelReplicas is above 1 and the plugin does not
	// rename shared GPUs.
	ResourceGPU = "nvidia.com/gpu"
	// ResourceShared is a replica of a shared GPU when the plugin renames
	// them (renameByDefault).
	ResourceShared = "nvidia.com/gpu.shared"
	// ResourceMIGPrefix starts a MIG slice's resource:
	// nvidia.com/mig-<g>g.<mem>gb, or nvidia.com/mig-<c>c.<g>g.<mem>gb
	// for a compute instance within a GPU instance.
	ResourceMIGPrefix = "nvidia.com/mig-"
	// LabelProduct is the node label naming its GPUs' model.
	LabelProduct = "nvidia.com/gpu.product"
	// LabelReplicas is the node label giving how many replicas each GPU
	// is shared into (time-slicing or MPS).
	LabelReplicas = "nvidia.com/gpu.replicas"
	// QuotaResource is the ResourceQuota entry of GPUs (ProjectQuota).
	QuotaResource = "requests.nvidia.com/gpu"
)

// Fraction is an exact share of one physical GPU: Num/Den, Den > 0.
type Fraction struct{ Num, Den int64 }

// Whole is one physical GPU.
var Whole = Fraction{1, 1}

// Float is the fraction as a float64 (for time-weighting, which rounds
// once per sample anyway).
func (f Fraction) Float() float64 { return float64(f.Num) / float64(f.Den) }

// Mul is f × n units of a resource.
func (f Fraction) Mul(n int64) Fraction { return reduce(Fraction{f.Num * n, f.Den}) }

// Add is f + g.
func (f Fraction) Add(g Fraction) Fraction {
	return reduce(Fraction{f.Num*g.Den + g.Num*f.Den, f.Den * g.Den})
}

func (f Fraction) String() string {
	if f.Den == 1 {
		return strconv.FormatInt(f.Num, 10)
	}
	return strconv.FormatInt(f.Num, 10) + "/" + strconv.FormatInt(f.Den, 10)
}

func reduce(f Fraction) Fraction {
	a, b := f.Num, f.Den
	if a < 0 {
		a = -a
	}
	for b != 0 {
		a, b = b, a%b
	}
	if a <= 1 {
		return f
	}
	return Fraction{f.Num / a, f.Den / a}
}

// ComputeSlices is how many compute slices a MIG-capable GPU model has:
// 7 for A100, H100, H200, GH200, B200 and the others of their lines, 4 for
// A30. The model is matched by substring of the node's LabelProduct
// (NVIDIA-A30, NVIDIA-A100-SXM4-40GB, NVIDIA-H100-80GB-HBM3). An unknown
// model counts 7, the number of every MIG-capable line but A30's.
func ComputeSlices(model string) int64 {
	if strings.Contains(strings.ToUpper(model), "A30") {
		return 4
	}
	return 7
}

// Node is what a node says about its GPUs.
type Node struct {
	// Model is LabelProduct ("" when the node has none).
	Model string
	// Replicas is LabelReplicas (0 when absent: not shared).
	Replicas int64
}

// NodeOf reads a node's GPU labels. A replicas label that is not a
// positive integer is an error naming it.
func NodeOf(labels map[string]string) (Node, error) {
	n := Node{Model: labels[LabelProduct]}
	if v, ok := labels[LabelReplicas]; ok {
		r, err := strconv.ParseInt(v, 10, 64)
		if err != nil || r < 1 {
			return Node{}, fmt.Errorf("node label %s: %q is not a positive integer", LabelReplicas, v)
		}
		n.Replicas = r
	}
	return n, nil
}

// IsGPUResource tells whether an extended resource is one of NVIDIA's GPU
// resources (whole, shared or MIG).
func IsGPUResource(name string) bool {
	return name == ResourceGPU || name == ResourceShared || strings.HasPrefix(name, ResourceMIGPrefix)
}

// Share is the fraction of a physical GPU that one unit of resource hands
// a pod on node n:
//   - ResourceGPU: 1, or 1/replicas on a node that shares its GPUs;
//   - ResourceShared: 1/replicas (the node must say how many);
//   - a MIG slice: its compute slices over the GPU model's (ComputeSlices):
//     mig-3g.40gb is 3/7 on an H100, mig-2g.12gb 2/4 on an A30, and a
//     compute instance mig-1c.3g.40gb 1/7.
//
// Another resource, or a malformed MIG name, is an error naming it.
func Share(resource string, n Node) (Fraction, error) {
	switch {
	case resource == ResourceGPU:
		if n.Replicas > 1 {
			return Fraction{1, n.Replicas}, nil
		}
		return Whole, nil
	case resource == ResourceShared:
		if n.Replicas < 1 {
			return Fraction{}, fmt.Errorf("%s: the node has no %s label, so the share of a GPU is unknown", resource, LabelReplicas)
		}
		return Fraction{1, n.Replicas}, nil
	case strings.HasPrefix(resource, ResourceMIGPrefix):
		c, err := MIGComputeSlices(strings.TrimPrefix(resource, ResourceMIGPrefix))
		if err != nil {
			return Fraction{}, fmt.Errorf("%s: %w", resource, err)
		}
		total := ComputeSlices(n.Model)
		if c > total {
			return Fraction{}, fmt.Errorf("%s: %d compute slices, more than the %d of a %q GPU", resource, c, total, n.Model)
		}
		return reduce(Fraction{c, total}), nil
	}
	return Fraction{}, fmt.Errorf("%s: not a GPU resource", resource)
}

// MIGComputeSlices reads the compute slices of a MIG profile as NVIDIA
// names them, with or without the resource prefix's "mig-": "3g.40gb"
// (a GPU instance: 3), "1c.3g.40gb" (a compute instance: 1), with an
// optional "+me" (media extensions) or other "+" suffix.
func MIGComputeSlices(profile string) (int64, error) {
	p := strings.TrimPrefix(profile, "mig-")
	if i := strings.IndexByte(p, '+'); i >= 0 {
		p = p[:i]
	}
	parts := strings.Split(p, ".")
	num := func(s, unit string) (int64, bool) {
		v, ok := strings.CutSuffix(s, unit)
		if !ok || v == "" {
			return 0, false
		}
		n, err := strconv.ParseInt(v, 10, 64)
		return n, err == nil && n >= 1
	}
	switch len(parts) {
	case 2:
		g, ok1 := num(parts[0], "g")
		_, ok2 := num(parts[1], "gb")
		if ok1 && ok2 {
			return g, nil
		}
	case 3:
		c, ok1 := num(parts[0], "c")
		g, ok2 := num(parts[1], "g")
		_, ok3 := num(parts[2], "gb")
		if ok1 && ok2 && ok3 && c <= g {
			return c, nil
		}
	}
	return 0, fmt.Errorf("MIG profile %q is not <g>g.<mem>gb or <c>c.<g>g.<mem>gb", profile)
}
