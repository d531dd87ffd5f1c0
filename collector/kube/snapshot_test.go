package kube

import (
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	metricsv1beta1 "k8s.io/metrics/pkg/apis/metrics/v1beta1"
)

// The snapshot builder without any server: observations in, snapshots out.

var at0 = time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)

func testBuilder() snapshotBuilder {
	return snapshotBuilder{projectLabel: "cpaas.io/project", defaultProject: "unassigned", usageHorizon: time.Minute}
}

func resources(cpu, mem string) corev1.ResourceList {
	return corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem)}
}

func runningPod(name string, started time.Time) *corev1.Pod {
	st := metav1.NewTime(started)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID(name)},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Resources: corev1.ResourceRequirements{Requests: resources("1", "1Gi")}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, StartTime: &st,
			ContainerStatuses: []corev1.ContainerStatus{{Name: "app", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}},
	}
}

func terminated(p *corev1.Pod, phase corev1.PodPhase, finished time.Time) *corev1.Pod {
	p = p.DeepCopy()
	p.Status.Phase = phase
	var state corev1.ContainerState
	if !finished.IsZero() {
		state.Terminated = &corev1.ContainerStateTerminated{FinishedAt: metav1.NewTime(finished)}
	}
	p.Status.ContainerStatuses[0].State = state
	return p
}

func podsByName(snap *snapshot) map[string]podState {
	out := map[string]podState{}
	for _, p := range snap.pods {
		out[p.pod.Name] = p
	}
	return out
}

// TestSnapshotPodLifetimes: when each kind of pod starts and ends.
func TestSnapshotPodLifetimes(t *testing.T) {
	long := at0.Add(-time.Hour)
	pending := runningPod("pending", long)
	pending.Status = corev1.PodStatus{Phase: corev1.PodPending}
	noStart := runningPod("no-start", long)
	noStart.Status.StartTime = nil
	noStart.CreationTimestamp = metav1.NewTime(long.Add(time.Minute))
	graceful := runningPod("graceful", long)
	graceful.DeletionTimestamp = ptrTo(metav1.NewTime(at0.Add(-5 * time.Second)))
	lateDeadline := runningPod("late-deadline", long)
	lateDeadline.DeletionTimestamp = ptrTo(metav1.NewTime(at0.Add(time.Hour)))

	obs := observation{at: at0,
		pods: []*corev1.Pod{runningPod("running", long), pending, noStart,
			terminated(runningPod("done", long), corev1.PodSucceeded, at0.Add(-10*time.Second)),
			terminated(runningPod("failed-unknown", long), corev1.PodFailed, time.Time{})},
		deleted: map[types.UID]*corev1.Pod{"graceful": graceful, "late-deadline": lateDeadline},
	}
	h := newHistory()
	snap := testBuilder().build(obs, &h)
	got := podsByName(snap)
	want := map[string]struct{ start, end time.Time }{
		"running":  {long, time.Time{}},
		"no-start": {long.Add(time.Minute), time.Time{}}, // running without startTime: since created
		"done":     {long, at0.Add(-10 * time.Second)},
		// Finished without finishedAt: ends at the first scrape that saw it.
		"failed-unknown": {long, at0},
		// Gone: at its deletion deadline if that passed, else at the scrape.
		"graceful":      {long, at0.Add(-5 * time.Second)},
		"late-deadline": {long, at0},
	}
	if len(got) != len(want) {
		t.Fatalf("pods %v, want %d (pending excluded)", got, len(want))
	}
	for name, w := range want {
		g, ok := got[name]
		if !ok || !g.start.Equal(w.start) || !g.end.Equal(w.end) {
			t.Errorf("%s: %v..%v, want %v..%v", name, g.start, g.end, w.start, w.end)
		}
		if g.req != (amounts{cpu: 1e9, mem: 1 << 30}) {
			t.Errorf("%s: request %+v", name, g.req)
		}
	}

	// The next scrape: failed-unknown keeps its end; the deleted pods are
	// retired, and a relist that delivers their deletion again (the watch
	// was broken) does not count them twice.
	h.advance(snap, 2*time.Minute)
	next := observation{at: at0.Add(15 * time.Second), pods: obs.pods[:5], deleted: map[types.UID]*corev1.Pod{"graceful": graceful}}
	got = podsByName(testBuilder().build(next, &h))
	if g := got["failed-unknown"]; !g.end.Equal(at0) {
		t.Errorf("failed-unknown ends %v on the next scrape, want %v", g.end, at0)
	}
	if _, ok := got["graceful"]; ok {
		t.Error("a deletion delivered again by a relist counted the pod twice")
	}
}

// TestSnapshotUsage: a pod's usage is the metrics API's latest value for
// up to the usage horizon, whether the pod is missing from the answer or
// the API failed; then 0.
func TestSnapshotUsage(t *testing.T) {
	b := testBuilder()
	p := runningPod("p", at0.Add(-time.Hour))
	metrics := func(cpu string) []metricsv1beta1.PodMetrics {
		return []metricsv1beta1.PodMetrics{{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"},
			Containers: []metricsv1beta1.ContainerMetrics{{Name: "a", Usage: resources(cpu, "1Mi")}, {Name: "b", Usage: resources(cpu, "1Mi")}}}}
	}
	h := newHistory()
	steps := []struct {
		name    string
		after   time.Duration
		metrics []metricsv1beta1.PodMetrics
		err     error
		cpu     int64 // nanocores
		stale   int
	}{
		{"two containers", 0, metrics("250m"), nil, 500e6, 0},
		{"missing from the answer", 30 * time.Second, nil, nil, 500e6, 0},
		{"API unavailable, within the horizon", time.Minute, nil, errors.New("503"), 500e6, 0},
		{"API unavailable, beyond the horizon", 75 * time.Second, nil, errors.New("503"), 0, 1},
		{"back", 90 * time.Second, metrics("1"), nil, 2e9, 0},
	}
	for _, s := range steps {
		obs := observation{at: at0.Add(s.after), pods: []*corev1.Pod{p}, metrics: s.metrics, metricsErr: s.err}
		snap := b.build(obs, &h)
		if got := snap.pods[0].use.cpu; got != s.cpu || snap.staleUsage != s.stale {
			t.Errorf("%s: usage %d nanocores, %d stale; want %d, %d", s.name, got, snap.staleUsage, s.cpu, s.stale)
		}
		h.advance(snap, 2*time.Minute)
	}
}

// TestSnapshotQuotasClaimsProjects: quotas merge to the smallest limit,
// status before spec; only bound claims count; project labels.
func TestSnapshotQuotasClaimsProjects(t *testing.T) {
	q := func(ns string, spec, status corev1.ResourceList) *corev1.ResourceQuota {
		return &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Namespace: ns}, Spec: corev1.ResourceQuotaSpec{Hard: spec}, Status: corev1.ResourceQuotaStatus{Hard: status}}
	}
	rl := func(kv ...string) corev1.ResourceList {
		out := corev1.ResourceList{}
		for i := 0; i < len(kv); i += 2 {
			out[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
		}
		return out
	}
	newClaim := func(ns, name string, phase corev1.PersistentVolumeClaimPhase, request, capacity string) *corev1.PersistentVolumeClaim {
		c := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec:   corev1.PersistentVolumeClaimSpec{Resources: corev1.VolumeResourceRequirements{Requests: rl("storage", request)}},
			Status: corev1.PersistentVolumeClaimStatus{Phase: phase}}
		if capacity != "" {
			c.Status.Capacity = rl("storage", capacity)
		}
		return c
	}
	ns := func(name string, labels map[string]string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	}
	obs := observation{at: at0,
		namespaces: []*corev1.Namespace{ns("a", map[string]string{"cpaas.io/project": "shop"}), ns("b", nil),
			ns("c", map[string]string{"cpaas.io/project": "Not_A_Label"}), ns("d", map[string]string{"cpaas.io/project": ""})},
		quotas: []*corev1.ResourceQuota{
			q("a", rl("cpu", "4", "memory", "8Gi"), nil),                                        // spec only: not yet seen by the controller
			q("a", rl("requests.cpu", "2"), rl("requests.cpu", "3", "requests.storage", "1Ti")), // status wins over spec
			q("b", rl("requests.memory", "1Gi", "memory", "2Gi"), nil),                          // requests.memory before memory
			q("b", rl("limits.cpu", "8"), nil),                                                  // limits are no quota of requests
		},
		claims: []*corev1.PersistentVolumeClaim{
			newClaim("a", "bound", corev1.ClaimBound, "10Gi", "12Gi"), // capacity, not the request
			newClaim("a", "no-capacity", corev1.ClaimBound, "5Gi", ""),
			newClaim("a", "pending", corev1.ClaimPending, "100Gi", ""),
		},
	}
	h := newHistory()
	snap := testBuilder().build(obs, &h)
	wantQuotas := map[string]quota{"a": {cpu: 3e9, mem: 8 << 30, storage: 1 << 40}, "b": {mem: 1 << 30}}
	if len(snap.quotas) != len(wantQuotas) || snap.quotas["a"] != wantQuotas["a"] || snap.quotas["b"] != wantQuotas["b"] {
		t.Errorf("quotas %+v, want %+v", snap.quotas, wantQuotas)
	}
	wantClaims := []claim{{"bound", 12 << 30}, {"no-capacity", 5 << 30}}
	if got := snap.claims["a"]; len(got) != 2 || got[0] != wantClaims[0] || got[1] != wantClaims[1] || len(snap.claims) != 1 {
		t.Errorf("claims %+v, want a: %+v", snap.claims, wantClaims)
	}
	wantProjects := map[string]string{"a": "shop", "b": "unassigned", "c": "unassigned", "d": "unassigned"}
	for n, p := range wantProjects {
		if snap.projects[n] != p {
			t.Errorf("namespace %s: project %q, want %q", n, snap.projects[n], p)
		}
	}
	if len(snap.badProjects) != 1 || snap.badProjects["c"] != "Not_A_Label" {
		t.Errorf("bad project labels %v, want c: Not_A_Label", snap.badProjects)
	}
}

func ptrTo[T any](v T) *T { return &v }
