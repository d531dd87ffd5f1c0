package kube_test

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/internal/sample"
)

// labeler is the allocation labels every source of the cluster tests
// attaches: team and example.com/env, with a label map for the
// namespaces of TestClusterLabelsAndCapacity ("lbl-…").
func labeler(t *testing.T) *collector.Labeler {
	t.Helper()
	file := filepath.Join(t.TempDir(), "labels.yaml")
	const doc = `namespaces:
  - namespace: lbl-bare
    labels: {team: platform, example.com/env: dev}
  - namespace: "lbl-*"
    labels: {example.com/env: shared}
`
	if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := collector.NewLabeler([]string{"team", "example.com/env"}, file)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// setNode creates or updates a Node with its status as its kubelet would
// write it, and waits until the source's cache has it.
func (e *live) setNode(name string, ready, cordoned bool, cpu, mem string) {
	e.t.Helper()
	nodes := e.admin.CoreV1().Nodes()
	n, err := nodes.Get(e.ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		n, err = nodes.Create(e.ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		e.t.Cleanup(func() { _ = e.admin.CoreV1().Nodes().Delete(e.ctx, name, metav1.DeleteOptions{}) })
	}
	if err != nil {
		e.t.Fatal(err)
	}
	if n.Spec.Unschedulable != cordoned {
		n.Spec.Unschedulable = cordoned
		if n, err = nodes.Update(e.ctx, n, metav1.UpdateOptions{}); err != nil {
			e.t.Fatal(err)
		}
	}
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	n.Status.Allocatable = list(cpu, mem)
	n.Status.Capacity = list(cpu, mem)
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: status, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
	if _, err := nodes.UpdateStatus(e.ctx, n, metav1.UpdateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	e.eventually("node "+name, func() (bool, string) {
		got, err := e.factory.Core().V1().Nodes().Lister().Get(name)
		if err != nil {
			return false, err.Error()
		}
		return got.Spec.Unschedulable == cordoned && len(got.Status.Conditions) == 1 && got.Status.Conditions[0].Status == status &&
			got.Status.Allocatable.Cpu().Cmp(resource.MustParse(cpu)) == 0, "not yet"
	})
}

func (e *live) deleteNode(name string) {
	e.t.Helper()
	if err := e.admin.CoreV1().Nodes().Delete(e.ctx, name, metav1.DeleteOptions{}); err != nil {
		e.t.Fatal(err)
	}
	e.eventually("node "+name+" gone", func() (bool, string) {
		_, err := e.factory.Core().V1().Nodes().Lister().Get(name)
		return apierrors.IsNotFound(err), "still there"
	})
}

// setVolume creates a PersistentVolume of size in phase (as the volume
// binder would set it), or moves it to phase.
func (e *live) setVolume(name, size string, phase corev1.PersistentVolumePhase) {
	e.t.Helper()
	pvs := e.admin.CoreV1().PersistentVolumes()
	pv, err := pvs.Get(e.ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		pv, err = pvs.Create(e.ctx, &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PersistentVolumeSpec{
			Capacity:               corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)},
			AccessModes:            []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/data/" + name}},
		}}, metav1.CreateOptions{})
		e.t.Cleanup(func() { _ = e.admin.CoreV1().PersistentVolumes().Delete(e.ctx, name, metav1.DeleteOptions{}) })
	}
	if err != nil {
		e.t.Fatal(err)
	}
	pv.Status.Phase = phase
	if _, err := pvs.UpdateStatus(e.ctx, pv, metav1.UpdateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	e.eventually("volume "+name+" "+string(phase), func() (bool, string) {
		got, err := e.factory.Core().V1().PersistentVolumes().Lister().Get(name)
		return err == nil && got.Status.Phase == phase, fmt.Sprint(err)
	})
}

// capacityOf is the one capacity sample among ss.
func capacityOf(t *testing.T, ss []sample.Sample) sample.Sample {
	t.Helper()
	var out []sample.Sample
	for _, s := range ss {
		if s.IsCapacity() {
			if err := s.Validate(); err != nil {
				t.Errorf("invalid capacity sample %s: %v", show(s), err)
			}
			out = append(out, s)
		}
	}
	if len(out) != 1 {
		t.Fatalf("%d capacity samples in a window, want 1", len(out))
	}
	return out[0]
}

func wantCapacity(w time.Time, cpu, mem, storage float64) sample.Sample {
	return sample.Sample{Cluster: "prod-east", Start: w, End: w.Add(time.Minute), Capacity: &sample.Capacity{CPU: cpu, Memory: mem, Storage: storage}}
}

// labelsOf is each test namespace's labels.
func labelsOf(ss []sample.Sample) map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, s := range ss {
		out[s.Namespace] = s.Labels
	}
	return out
}

// TestClusterLabelsAndCapacity, as the collector's ServiceAccount under
// the shipped ClusterRole: each window's samples carry the allocation
// labels their namespace has when the window closes (its own, else the
// label map's), so a namespace relabelled mid-way sends the old value
// before and the new one after; the capacity sample follows nodes added,
// cordoned, removed or not Ready and volumes bound, time-weighted.
func TestClusterLabelsAndCapacity(t *testing.T) {
	e := startLive(t, "lbl-", t0.Add(-time.Second))
	// node-1 (of the other tests) has no Ready condition: it never counts.
	e.namespace("lbl-shop", map[string]string{"team": "a", "example.com/env": "prod"})
	e.namespace("lbl-bare", nil)
	e.namespace("lbl-mixed", map[string]string{"team": "b", "other": "x"})
	e.setNode("cap-n1", true, false, "4", "16Gi")
	e.setVolume("cap-pv1", "100Gi", corev1.VolumeAvailable)
	e.scrapeAt(t0)

	w1 := e.windowAll(t0, nil)
	wantLabels := map[string]map[string]string{
		"lbl-shop":  {"team": "a", "example.com/env": "prod"},
		"lbl-bare":  {"team": "platform", "example.com/env": "dev"},
		"lbl-mixed": {"team": "b", "example.com/env": "shared"},
	}
	if got := labelsOf(e.mine(w1)); !reflect.DeepEqual(got, wantLabels) {
		t.Fatalf("window 1 labels %v, want %v", got, wantLabels)
	}
	check1 := capacityOf(t, w1)
	if w := wantCapacity(t0, 4, 16*gi, 0); !reflect.DeepEqual(check1, w) {
		t.Fatalf("window 1 capacity\n got %s\nwant %s", show(check1), show(w))
	}

	// Window 2: cap-n2 (8 cores, 32Gi) joins before the scrape at :15
	// (counts 60 s); shop moves to team c and cap-n1 is cordoned before
	// :30 (it counts 15 s); cap-pv1 is bound before :45 (30 s).
	w2start := t0.Add(time.Minute)
	w2 := e.windowAll(w2start, map[int]func(){
		15: func() { e.setNode("cap-n2", true, false, "8", "32Gi") },
		30: func() {
			e.relabel("lbl-shop", map[string]string{"team": "c", "example.com/env": "prod"})
			e.setNode("cap-n1", true, true, "4", "16Gi")
		},
		45: func() { e.setVolume("cap-pv1", "100Gi", corev1.VolumeBound) },
	})
	wantLabels["lbl-shop"] = map[string]string{"team": "c", "example.com/env": "prod"}
	if got := labelsOf(e.mine(w2)); !reflect.DeepEqual(got, wantLabels) {
		t.Fatalf("window 2 labels %v, want %v", got, wantLabels)
	}
	if got, w := capacityOf(t, w2), wantCapacity(w2start, (4*15+8*60)/60.0, (16*15+32*60)*gi/60.0, 100*gi*30/60.0); !reflect.DeepEqual(got, w) {
		t.Fatalf("window 2 capacity\n got %s\nwant %s", show(got), show(w))
	}

	// Window 3: cap-n2 is removed before :30 (15 s), cap-n3 joins not
	// Ready, cap-n1 stays cordoned; the label map's value of bare's team
	// gives way to its own label.
	w3start := t0.Add(2 * time.Minute)
	w3 := e.windowAll(w3start, map[int]func(){
		30: func() {
			e.deleteNode("cap-n2")
			e.setNode("cap-n3", false, false, "8", "32Gi")
			e.relabel("lbl-bare", map[string]string{"team": "ops"})
		},
	})
	wantLabels["lbl-bare"] = map[string]string{"team": "ops", "example.com/env": "dev"}
	if got := labelsOf(e.mine(w3)); !reflect.DeepEqual(got, wantLabels) {
		t.Fatalf("window 3 labels %v, want %v", got, wantLabels)
	}
	if got, w := capacityOf(t, w3), wantCapacity(w3start, 8*15/60.0, 32*gi*15/60.0, 100*gi); !reflect.DeepEqual(got, w) {
		t.Fatalf("window 3 capacity\n got %s\nwant %s", show(got), show(w))
	}
}
