package kube

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	metricsv1beta1 "k8s.io/metrics/pkg/apis/metrics/v1beta1"

	"github.com/alauda/costmeter/collector"
)

// observation is what one scrape read from the cluster: the informers'
// caches, the pods whose deletion the watch delivered since the previous
// scrape, and the metrics API's answer. Reading it is the only I/O of a
// scrape; everything after it is computed from it.
type observation struct {
	at         time.Time
	namespaces []*corev1.Namespace
	pods       []*corev1.Pod
	deleted    map[types.UID]*corev1.Pod // last state the watch delivered
	quotas     []*corev1.ResourceQuota
	claims     []*corev1.PersistentVolumeClaim
	nodes      []*corev1.Node
	volumes    []*corev1.PersistentVolume
	// metrics is the metrics API's list; nil with metricsErr set when it
	// did not answer.
	metrics    []metricsv1beta1.PodMetrics
	metricsErr error
}

// history is what the snapshot builder carries from one scrape to the
// next.
type history struct {
	seen     map[types.UID]*corev1.Pod // pods running at the last scrape
	retired  map[types.UID]time.Time   // gone pods already accounted, by the scrape that did
	terminal map[types.UID]time.Time   // first scrape that saw a pod finished without finishedAt
	usage    map[string]usageSample    // namespace/pod → the metrics API's latest value
}

// usageSample is a pod's usage and the scrape that read it.
type usageSample struct {
	amounts
	at time.Time
}

func newHistory() history {
	return history{seen: map[types.UID]*corev1.Pod{}, retired: map[types.UID]time.Time{},
		terminal: map[types.UID]time.Time{}, usage: map[string]usageSample{}}
}

// snapshot is the cluster as one scrape sees it: what each slot of a
// window is accounted with.
type snapshot struct {
	at         time.Time
	projects   map[string]string            // existing namespaces → project
	labels     map[string]map[string]string // existing namespaces → allocation labels (nil: none)
	capacity   capacity
	pods       []podState
	podNames   map[string]bool // namespace/name of pods present
	quotas     map[string]quota
	claims     map[string][]claim
	claimNodes map[string]bool // nodes running pods that mount claims
	// badProjects are namespaces whose project label is not a valid
	// project name (namespace → label value): they get the default.
	badProjects map[string]string
	// staleUsage counts the pods whose last usage is older than the usage
	// horizon: they count usage 0.
	staleUsage int
}

type podState struct {
	pod        *corev1.Pod
	start, end time.Time // end zero: still running
	gone       bool
	req, use   amounts
}

// capacity is the cluster's: allocatable CPU (nanocores) and memory of
// its Ready, schedulable nodes, capacity of its bound volumes.
type capacity struct {
	cpu, mem, storage int64
}

type quota struct {
	cpu, mem, storage int64
}

type claim struct {
	name  string
	bytes int64
}

// snapshotBuilder turns observations into snapshots. It does no I/O and
// reads no clock: given the same observation and history it builds the
// same snapshot.
type snapshotBuilder struct {
	projectLabel   string
	defaultProject string
	labeler        *collector.Labeler
	// usageHorizon is how long a pod's last usage from the metrics API
	// stands for it when the API has nothing newer (the pod is missing from
	// its answer, or the API is unavailable): one window. After that the
	// pod's usage is 0 (so its effective value is its request) until the
	// API reports it again.
	usageHorizon time.Duration
}

// build computes the snapshot of obs and records in h what the next
// scrape needs (usage read, pods found finished).
func (b snapshotBuilder) build(obs observation, h *history) *snapshot {
	at := obs.at
	snap := &snapshot{at: at, projects: map[string]string{}, labels: map[string]map[string]string{}, podNames: map[string]bool{}, quotas: map[string]quota{},
		claims: map[string][]claim{}, claimNodes: map[string]bool{}, badProjects: map[string]string{}}
	for _, ns := range obs.namespaces {
		snap.projects[ns.Name] = b.project(ns, snap)
		if l := b.labeler.Labels(ns.Name, ns.Labels); l != nil {
			snap.labels[ns.Name] = l
		}
	}
	snap.capacity = clusterCapacity(obs.nodes, obs.volumes)
	b.recordUsage(obs, h)

	present := make(map[types.UID]bool, len(obs.pods))
	for _, p := range obs.pods {
		present[p.UID] = true
		snap.podNames[p.Namespace+"/"+p.Name] = true
		if st, ok := b.podState(p, false, at, h, snap); ok {
			snap.pods = append(snap.pods, st)
		}
		if p.Spec.NodeName != "" && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			for _, v := range p.Spec.Volumes {
				if v.PersistentVolumeClaim != nil {
					snap.claimNodes[p.Spec.NodeName] = true
				}
			}
		}
	}
	// Pods gone since the last scrape: the watch's last state if it came,
	// else what the last scrape saw. A relist after a broken watch
	// delivers deletions again: retired keeps them from counting twice.
	gone := map[types.UID]*corev1.Pod{}
	for uid, p := range h.seen {
		if !present[uid] {
			gone[uid] = p
		}
	}
	for uid, p := range obs.deleted {
		if _, done := h.retired[uid]; !present[uid] && !done {
			gone[uid] = p
		}
	}
	for _, p := range gone {
		if st, ok := b.podState(p, true, at, h, snap); ok {
			snap.pods = append(snap.pods, st)
		}
	}
	snap.quotas = mergeQuotas(obs.quotas)
	for _, c := range obs.claims {
		if c.Status.Phase != corev1.ClaimBound {
			continue
		}
		q, ok := c.Status.Capacity[corev1.ResourceStorage]
		if !ok {
			q = c.Spec.Resources.Requests[corev1.ResourceStorage]
		}
		snap.claims[c.Namespace] = append(snap.claims[c.Namespace], claim{name: c.Name, bytes: q.Value()})
	}
	return snap
}

// clusterCapacity sums the allocatable CPU and memory of the nodes that
// are Ready and schedulable (a cordoned node takes no new pods, so its
// room is not capacity anyone can use) and the capacity of the bound
// persistent volumes.
func clusterCapacity(nodes []*corev1.Node, volumes []*corev1.PersistentVolume) capacity {
	var c capacity
	for _, n := range nodes {
		if n.Spec.Unschedulable || !nodeReady(n) {
			continue
		}
		c.cpu += nanocores(n.Status.Allocatable[corev1.ResourceCPU])
		c.mem += n.Status.Allocatable.Memory().Value()
	}
	for _, v := range volumes {
		if v.Status.Phase != corev1.VolumeBound {
			continue
		}
		c.storage += v.Spec.Capacity.Storage().Value()
	}
	return c
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// recordUsage keeps the metrics API's latest usage of every pod it
// listed; pods it did not list keep their previous value.
func (b snapshotBuilder) recordUsage(obs observation, h *history) {
	if obs.metricsErr != nil {
		return
	}
	for i := range obs.metrics {
		pm := &obs.metrics[i]
		var u amounts
		for _, c := range pm.Containers {
			u = u.add(fromList(c.Usage))
		}
		h.usage[pm.Namespace+"/"+pm.Name] = usageSample{amounts: u, at: obs.at}
	}
}

// project is a namespace's project label, or the default when it is
// missing or not a valid project name (noted in snap.badProjects).
func (b snapshotBuilder) project(ns *corev1.Namespace, snap *snapshot) string {
	p, ok := ns.Labels[b.projectLabel]
	if !ok || p == "" {
		return b.defaultProject
	}
	if !validProject(p) {
		snap.badProjects[ns.Name] = p
		return b.defaultProject
	}
	return p
}

// podState computes when a pod ran and what it requested and used; ok is
// false for a pod that never started.
func (b snapshotBuilder) podState(p *corev1.Pod, gone bool, at time.Time, h *history, snap *snapshot) (podState, bool) {
	st := podState{pod: p, gone: gone}
	switch {
	case p.Status.StartTime != nil:
		st.start = p.Status.StartTime.Time
	case p.Status.Phase == corev1.PodRunning:
		st.start = p.CreationTimestamp.Time
	default:
		return st, false
	}
	finished := p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
	if last, all := lastFinish(p); all && (finished || gone) {
		st.end = last
	}
	if st.end.IsZero() && finished {
		t, ok := h.terminal[p.UID]
		if !ok {
			t = at
			h.terminal[p.UID] = at
		}
		st.end = t
	}
	if st.end.IsZero() && gone {
		st.end = at
		if p.DeletionTimestamp != nil && p.DeletionTimestamp.Time.Before(at) {
			st.end = p.DeletionTimestamp.Time
		}
	}
	st.req = podRequests(p)
	if u, ok := h.usage[p.Namespace+"/"+p.Name]; ok {
		if at.Sub(u.at) <= b.usageHorizon {
			st.use = u.amounts
		} else {
			snap.staleUsage++
		}
	}
	return st, true
}

// lastFinish is the latest finishedAt of the app containers; all is false
// unless every one of them terminated.
func lastFinish(p *corev1.Pod) (last time.Time, all bool) {
	if len(p.Status.ContainerStatuses) == 0 {
		return time.Time{}, false
	}
	for _, cs := range p.Status.ContainerStatuses {
		t := cs.State.Terminated
		if t == nil {
			return time.Time{}, false
		}
		if t.FinishedAt.After(last) {
			last = t.FinishedAt.Time
		}
	}
	return last, !last.IsZero()
}

// mergeQuotas is each namespace's quota: per resource, the smallest hard
// limit over its ResourceQuotas (status.hard, the one the quota controller
// enforces, else spec.hard); requests.cpu and requests.memory, else cpu
// and memory; requests.storage.
func mergeQuotas(quotas []*corev1.ResourceQuota) map[string]quota {
	out := map[string]quota{}
	set := map[string]map[string]bool{} // namespace → resources some quota limits
	for _, q := range quotas {
		cur := out[q.Namespace]
		limited := set[q.Namespace]
		if limited == nil {
			limited = map[string]bool{}
			set[q.Namespace] = limited
		}
		hard := q.Spec.Hard
		if len(q.Status.Hard) > 0 {
			hard = q.Status.Hard
		}
		merge := func(key string, v int64, ok bool, dst *int64) {
			if !ok {
				return
			}
			if !limited[key] || v < *dst {
				*dst = v
			}
			limited[key] = true
		}
		cpu, cok := hard[corev1.ResourceRequestsCPU]
		if !cok {
			cpu, cok = hard[corev1.ResourceCPU]
		}
		merge("cpu", nanocores(cpu), cok, &cur.cpu)
		mem, mok := hard[corev1.ResourceRequestsMemory]
		if !mok {
			mem, mok = hard[corev1.ResourceMemory]
		}
		merge("mem", mem.Value(), mok, &cur.mem)
		st, sok := hard[corev1.ResourceRequestsStorage]
		merge("storage", st.Value(), sok, &cur.storage)
		out[q.Namespace] = cur
	}
	return out
}

// advance moves the history past a snapshot: the pods running now are the
// ones the next scrape compares with, gone ones are retired (and forgotten
// after horizon), usage of pods no longer there is dropped.
func (h *history) advance(snap *snapshot, horizon time.Duration) {
	at := snap.at
	h.seen = make(map[types.UID]*corev1.Pod, len(snap.pods))
	for _, p := range snap.pods {
		if !p.gone {
			h.seen[p.pod.UID] = p.pod
		} else {
			h.retired[p.pod.UID] = at
			delete(h.terminal, p.pod.UID)
		}
	}
	for uid, t := range h.retired {
		if t.Before(at.Add(-horizon)) {
			delete(h.retired, uid)
		}
	}
	for k := range h.usage {
		if !snap.podNames[k] {
			delete(h.usage, k)
		}
	}
}
