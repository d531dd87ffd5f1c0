package kube

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// amounts is a pod's or a namespace's CPU in nanocores and memory in
// bytes: integers, so that time-weighted sums of them stay exact.
type amounts struct {
	cpu int64 // nanocores
	mem int64 // bytes
}

func (a amounts) add(b amounts) amounts { return amounts{a.cpu + b.cpu, a.mem + b.mem} }

func (a amounts) max(b amounts) amounts { return amounts{max(a.cpu, b.cpu), max(a.mem, b.mem)} }

func nanocores(q resource.Quantity) int64 { return q.ScaledValue(resource.Nano) }

func fromList(l corev1.ResourceList) amounts {
	var a amounts
	if q, ok := l[corev1.ResourceCPU]; ok {
		a.cpu = nanocores(q)
	}
	if q, ok := l[corev1.ResourceMemory]; ok {
		a.mem = q.Value()
	}
	return a
}

// podRequests is what the scheduler reserves for a pod: the larger of the
// sum of its app containers and its largest init container, plus its
// overhead. Restartable init containers (sidecars) run alongside the app
// containers, so they add to the sum and to every init container started
// after them, as in Kubernetes' own resource helper. Pod-level requests
// (spec.resources), where set, replace the containers' for that resource.
func podRequests(p *corev1.Pod) amounts {
	var apps amounts
	for i := range p.Spec.Containers {
		apps = apps.add(fromList(p.Spec.Containers[i].Resources.Requests))
	}
	var sidecars, initMax amounts
	for i := range p.Spec.InitContainers {
		c := &p.Spec.InitContainers[i]
		r := fromList(c.Resources.Requests)
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			sidecars = sidecars.add(r)
			initMax = initMax.max(sidecars)
			continue
		}
		initMax = initMax.max(r.add(sidecars))
	}
	req := apps.add(sidecars).max(initMax)
	if p.Spec.Resources != nil {
		pl := p.Spec.Resources.Requests
		if q, ok := pl[corev1.ResourceCPU]; ok {
			req.cpu = nanocores(q)
		}
		if q, ok := pl[corev1.ResourceMemory]; ok {
			req.mem = q.Value()
		}
	}
	return req.add(fromList(p.Spec.Overhead))
}
