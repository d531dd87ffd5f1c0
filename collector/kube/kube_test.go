package kube_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"go.uber.org/goleak"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	metricsv1beta1 "k8s.io/metrics/pkg/apis/metrics/v1beta1"
	metricsfake "k8s.io/metrics/pkg/client/clientset/versioned/fake"

	"github.com/alauda/costmeter/collector/kube"
	"github.com/alauda/costmeter/internal/kubetest"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/testenv"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.ReleaseMode) // the end-to-end test's API
	goleak.VerifyTestMain(stopPlaneAfter{m}, kubetest.GoleakOptions()...)
}

// stopPlaneAfter stops the shared control plane after the tests, before
// goleak looks for leaks.
type stopPlaneAfter struct{ m *testing.M }

func (s stopPlaneAfter) Run() int { defer plane.Stop(); return s.m.Run() }

const gi = 1 << 30
const mi = 1 << 20

var (
	t0         = time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	podMetrics = metricsv1beta1.SchemeGroupVersion.WithResource("pods")
)

// clock is the injected clock; tests move it by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// volumes is a kubelet volume stats reader with fixed answers.
type volumes struct {
	mu    sync.Mutex
	used  map[string]int64
	err   error
	nodes [][]string
}

func (v *volumes) PVCUsage(_ context.Context, nodes []string) (map[string]int64, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.nodes = append(v.nodes, nodes)
	return v.used, v.err
}

type env struct {
	t       *testing.T
	ctx     context.Context
	kc      *fake.Clientset
	mc      *metricsfake.Clientset
	factory informers.SharedInformerFactory
	src     *kube.Source
	clock   *clock
	vols    *volumes
	logs    *testenv.LockedBuffer
}

func config() kube.Config {
	return kube.Config{Cluster: "prod-east", ProjectLabel: kube.DefaultProjectLabel, DefaultProject: kube.DefaultProject,
		Interval: time.Minute, ScrapeInterval: 15 * time.Second, VolumeStats: true, Timeout: 5 * time.Second}
}

// start builds a source over fake clientsets holding objs, with the clock
// at start, and waits for its caches.
func start(t *testing.T, startAt time.Time, objs ...runtime.Object) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e := &env{t: t, ctx: ctx, kc: allowAll(fake.NewClientset(objs...)), mc: metricsfake.NewSimpleClientset(), clock: &clock{t: startAt}, vols: &volumes{used: map[string]int64{}}, logs: &testenv.LockedBuffer{}}
	e.factory = informers.NewSharedInformerFactory(e.kc, 0)
	src, err := kube.New(config(), e.kc, e.mc, kube.WithClock(e.clock.Now), kube.WithInformerFactory(e.factory),
		kube.WithVolumeStats(e.vols), kube.WithLogger(slog.New(slog.NewTextHandler(e.logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	e.src = src
	t.Cleanup(func() { cancel(); src.Wait() })
	if err := src.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return e
}

// scrapeAt moves the clock to t and scrapes.
func (e *env) scrapeAt(t time.Time) []sample.Sample {
	e.t.Helper()
	e.clock.Set(t)
	out, err := e.src.Scrape(e.ctx)
	if err != nil {
		e.t.Fatalf("scrape at %s: %v", t.Format(time.TimeOnly), err)
	}
	return out
}

// window scrapes every 15 s through the window starting at w (the scrape
// at w itself excluded) and returns what the last scrape emitted; before
// lets a test change the cluster before a given scrape.
func (e *env) window(w time.Time, before map[int]func()) []sample.Sample {
	e.t.Helper()
	var out []sample.Sample
	for k := 1; k <= 4; k++ {
		if f := before[k*15]; f != nil {
			f()
		}
		out = e.scrapeAt(w.Add(time.Duration(k) * 15 * time.Second))
		if k < 4 && len(out) > 0 {
			e.t.Fatalf("scrape %d of the window emitted %d samples before it closed", k, len(out))
		}
	}
	// A fake clientset has no nodes or volumes: the capacity is 0.
	if len(out) == 0 || !reflect.DeepEqual(out[len(out)-1], sample.Sample{Cluster: "prod-east", Start: w, End: w.Add(time.Minute), Capacity: &sample.Capacity{}}) {
		e.t.Fatalf("the window's samples do not end with its capacity sample (0 without nodes and volumes): %v", out)
	}
	return out
}

// eventually waits until the informers' caches satisfy cond.
func (e *env) eventually(what string, cond func() bool) {
	e.t.Helper()
	testenv.Eventually(e.t, 10*time.Second, what, func() (bool, string) { return cond(), "cache not there yet" })
}

func (e *env) setMetrics(ns, name, cpu, mem string) {
	e.t.Helper()
	pm := &metricsv1beta1.PodMetrics{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Containers: []metricsv1beta1.ContainerMetrics{{Name: "app", Usage: list(cpu, mem)}}}
	err := e.mc.Tracker().Create(podMetrics, pm, ns)
	if err != nil {
		err = e.mc.Tracker().Update(podMetrics, pm, ns)
	}
	if err != nil {
		e.t.Fatal(err)
	}
}

func list(cpu, mem string) corev1.ResourceList {
	l := corev1.ResourceList{}
	if cpu != "" {
		l[corev1.ResourceCPU] = resource.MustParse(cpu)
	}
	if mem != "" {
		l[corev1.ResourceMemory] = resource.MustParse(mem)
	}
	return l
}

func container(name, cpu, mem string) corev1.Container {
	return corev1.Container{Name: name, Resources: corev1.ResourceRequirements{Requests: list(cpu, mem)}}
}

func namespace(name string, lbls map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("ns-" + name), Labels: lbls}}
}

// pod is a running pod started at started with one app container per
// request pair.
func pod(ns, name string, started time.Time, containers ...corev1.Container) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(ns + "/" + name), CreationTimestamp: metav1.NewTime(started.Add(-time.Second))},
		Spec:       corev1.PodSpec{NodeName: "node-1", Containers: containers},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, StartTime: ptr(metav1.NewTime(started))},
	}
	for _, c := range containers {
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{Name: c.Name, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(started)}}})
	}
	return p
}

func quota(ns, name string, hard corev1.ResourceList) *corev1.ResourceQuota {
	return &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(ns + "/q/" + name)}, Spec: corev1.ResourceQuotaSpec{Hard: hard}}
}

func claim(ns, name string, size string, phase corev1.PersistentVolumeClaimPhase) *corev1.PersistentVolumeClaim {
	c := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(ns + "/pvc/" + name)},
		Spec:   corev1.PersistentVolumeClaimSpec{Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}}},
		Status: corev1.PersistentVolumeClaimStatus{Phase: phase}}
	if phase == corev1.ClaimBound {
		c.Status.Capacity = corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}
	}
	return c
}

func ptr[T any](v T) *T { return &v }

// allowAll makes the fake clientset answer every access review with
// "allowed": a fake has no RBAC.
func allowAll(kc *fake.Clientset) *fake.Clientset {
	kc.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		r := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview).DeepCopy()
		r.Status.Allowed = true
		return true, r, nil
	})
	return kc
}

// want builds an expected sample of window [w, w+1m).
func want(project, ns string, w time.Time, cpu, mem, storage sample.Resources) sample.Sample {
	return sample.Sample{Cluster: "prod-east", Project: project, Namespace: ns, Start: w, End: w.Add(time.Minute), CPU: cpu, Memory: mem, Storage: storage}
}

func res(usage, request, quota, effective float64) sample.Resources {
	return sample.Resources{Usage: usage, Request: request, Quota: quota, Effective: &effective}
}

func storage(usage, request, quota float64) sample.Resources {
	return sample.Resources{Usage: usage, Request: request, Quota: quota}
}

func show(s sample.Sample) string { return string(sample.AppendJSON(nil, &s)) }

// usageOnly drops the capacity sample that ends a window's samples (the
// tests of capacity run on a real API server, capacity_test.go), checking
// that there is at most one, last (env.window checks there is one).
func usageOnly(t *testing.T, ss []sample.Sample) []sample.Sample {
	t.Helper()
	var out []sample.Sample
	for i, s := range ss {
		if s.IsCapacity() && i != len(ss)-1 {
			t.Fatalf("sample %d of %d is a capacity sample: want at most one, last", i, len(ss))
		}
		if !s.IsCapacity() {
			out = append(out, s)
		}
	}
	return out
}

// check compares samples field by field, exactly; the window's capacity
// sample is left out on both sides.
func check(t *testing.T, got, want []sample.Sample) {
	t.Helper()
	for i := range got {
		if err := got[i].Validate(); err != nil {
			t.Errorf("sample %d is not valid: %v", i, err)
		}
	}
	got = usageOnly(t, got)
	var w []sample.Sample
	for _, s := range want {
		if !s.IsCapacity() {
			w = append(w, s)
		}
	}
	want = w
	if len(got) != len(want) {
		var b strings.Builder
		for _, g := range got {
			b.WriteString(show(g) + "\n")
		}
		t.Fatalf("got %d samples, want %d:\n%s", len(got), len(want), b.String())
	}
	for i := range want {
		g, w := got[i], want[i]
		if !reflect.DeepEqual(g, w) {
			t.Errorf("sample %s:\n got %s\nwant %s", w.Namespace, show(g), show(w))
		}
	}
}

// TestWindowRequestsQuotasClaims: init containers, sidecars, overhead, a
// pod without metrics, two quotas, bound and pending claims, the project
// label and its default, and the first window after a start.
func TestWindowRequestsQuotasClaims(t *testing.T) {
	long := t0.Add(-time.Hour)
	withInit := pod("payments-api", "web", long, container("app", "500m", "512Mi"), container("log", "250m", "512Mi"))
	withInit.Spec.InitContainers = []corev1.Container{container("migrate", "2", "1Gi")}
	withInit.Spec.Overhead = list("100m", "64Mi")
	withSidecar := pod("payments-api", "worker", long, container("app", "300m", "200Mi"))
	always := corev1.ContainerRestartPolicyAlways
	sidecar := container("proxy", "200m", "100Mi")
	sidecar.RestartPolicy = &always
	withSidecar.Spec.InitContainers = []corev1.Container{sidecar, container("setup", "1", "50Mi")}
	withSidecar.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}}}
	pending := pod("payments-api", "unscheduled", long, container("app", "8", "8Gi"))
	pending.Spec.NodeName, pending.Status.Phase, pending.Status.StartTime = "", corev1.PodPending, nil

	e := start(t, t0.Add(20*time.Second),
		namespace("payments-api", map[string]string{"cpaas.io/project": "payments"}),
		namespace("scratch", nil),
		withInit, withSidecar, pending,
		quota("payments-api", "compute", list("4", "8Gi")),
		quota("payments-api", "tight", corev1.ResourceList{corev1.ResourceRequestsCPU: resource.MustParse("2"), corev1.ResourceRequestsStorage: resource.MustParse("100Gi")}),
		claim("payments-api", "data", "10Gi", corev1.ClaimBound),
		claim("payments-api", "later", "5Gi", corev1.ClaimPending),
	)
	e.vols.used["payments-api/data"] = 4 * gi
	e.setMetrics("payments-api", "web", "3", "512Mi")
	// The metrics API has nothing for worker yet.

	// Started at 10:00:20: the first scrape (10:00:30) covers 10:00:00
	// onwards, and 10:01:00 closes the window.
	if out := e.scrapeAt(t0.Add(30 * time.Second)); len(out) != 0 {
		t.Fatalf("first scrape emitted %d samples", len(out))
	}
	e.scrapeAt(t0.Add(45 * time.Second))
	got := e.scrapeAt(t0.Add(time.Minute))

	// web: max(2 init, 0.75 app) + 0.1 overhead = 2.1 cores; memory
	// max(1Gi, 1Gi) + 64Mi. worker: app 0.3 + sidecar 0.2 = 0.5 against
	// init 1 + sidecar 0.2 = 1.2 → 1.2 cores; memory 200+100 = 300Mi
	// against 50+100 → 300Mi.
	webMem, workerMem := float64(gi+64*mi), float64(300*mi)
	check(t, got, []sample.Sample{
		want("payments", "payments-api", t0,
			res(3, 2.1+1.2, 2, 3+1.2),
			res(512*mi, webMem+workerMem, 8*gi, webMem+workerMem),
			storage(4*gi, 10*gi, 100*gi)),
		want("unassigned", "scratch", t0, res(0, 0, 0, 0), res(0, 0, 0, 0), storage(0, 0, 0)),
	})
	e.vols.mu.Lock()
	defer e.vols.mu.Unlock()
	if len(e.vols.nodes) != 1 || !reflect.DeepEqual(e.vols.nodes[0], []string{"node-1"}) {
		t.Fatalf("volume stats asked for nodes %v, want [[node-1]] once", e.vols.nodes)
	}
}

// TestNamespacesQuotasClaimsChange: a namespace moves to another project,
// a quota changes, claims are bound and released, a namespace appears and
// one is deleted.
func TestNamespacesQuotasClaimsChange(t *testing.T) {
	// A pod without requests mounts b: the kubelets report only mounted
	// volumes.
	db := pod("shop", "db", t0.Add(-time.Hour), corev1.Container{Name: "app"})
	db.Spec.Volumes = []corev1.Volume{{Name: "b", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "b"}}}}
	e := start(t, t0, db,
		namespace("shop", map[string]string{"cpaas.io/project": "retail"}),
		namespace("old", map[string]string{"cpaas.io/project": "legacy"}),
		quota("shop", "q", corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("4Gi"), corev1.ResourceRequestsStorage: resource.MustParse("50Gi")}),
		claim("shop", "a", "10Gi", corev1.ClaimBound),
		claim("shop", "b", "20Gi", corev1.ClaimPending),
	)
	e.vols.used["shop/a"] = 3 * gi
	e.vols.used["shop/b"] = 6 * gi
	e.scrapeAt(t0)

	claims := e.factory.Core().V1().PersistentVolumeClaims().Lister()
	quotas := e.factory.Core().V1().ResourceQuotas().Lister()
	nss := e.factory.Core().V1().Namespaces().Lister()
	got := e.window(t0, map[int]func(){
		// b is bound before the scrape at 10:00:30: it counts from 10:00:15.
		30: func() {
			if _, err := e.kc.CoreV1().PersistentVolumeClaims("shop").UpdateStatus(e.ctx, claim("shop", "b", "20Gi", corev1.ClaimBound), metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			e.eventually("claim b bound", func() bool {
				c, err := claims.PersistentVolumeClaims("shop").Get("b")
				return err == nil && c.Status.Phase == corev1.ClaimBound
			})
		},
		// The quota doubles before the scrape at 10:00:45 and a is
		// released (deleted): from 10:00:30 on.
		45: func() {
			q := quota("shop", "q", corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("8Gi"), corev1.ResourceRequestsStorage: resource.MustParse("50Gi")})
			if _, err := e.kc.CoreV1().ResourceQuotas("shop").Update(e.ctx, q, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := e.kc.CoreV1().PersistentVolumeClaims("shop").Delete(e.ctx, "a", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			e.vols.mu.Lock()
			delete(e.vols.used, "shop/a") // no longer mounted anywhere
			e.vols.mu.Unlock()
			e.eventually("quota changed, claim a gone", func() bool {
				q, err := quotas.ResourceQuotas("shop").Get("q")
				_, gone := claims.PersistentVolumeClaims("shop").Get("a")
				return err == nil && q.Spec.Hard.Cpu().Cmp(resource.MustParse("4")) == 0 && gone != nil
			})
		},
		// Before the window closes shop moves to project "stores", "new"
		// appears and "old" is deleted.
		60: func() {
			if _, err := e.kc.CoreV1().Namespaces().Update(e.ctx, namespace("shop", map[string]string{"cpaas.io/project": "stores"}), metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			if _, err := e.kc.CoreV1().Namespaces().Create(e.ctx, namespace("new", map[string]string{"cpaas.io/project": "Not_A_Label"}), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := e.kc.CoreV1().Namespaces().Delete(e.ctx, "old", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			e.eventually("namespaces changed", func() bool {
				shop, err := nss.Get("shop")
				_, errNew := nss.Get("new")
				_, errOld := nss.Get("old")
				return err == nil && shop.Labels["cpaas.io/project"] == "stores" && errNew == nil && errOld != nil
			})
		},
	})
	// Quota: 2 cores for 30 s, 4 for 30 s → 3; memory 4Gi then 8Gi → 6Gi.
	// Claims: a 10Gi for 30 s, b 20Gi for 45 s → 5Gi + 15Gi = 20Gi.
	// Storage usage: only b is still there at the close: 6Gi × 45/60.
	// new (invalid project label) → default project, counted from 10:00:45.
	check(t, got, []sample.Sample{
		want("unassigned", "new", t0, res(0, 0, 0, 0), res(0, 0, 0, 0), storage(0, 0, 0)),
		want("legacy", "old", t0, res(0, 0, 0, 0), res(0, 0, 0, 0), storage(0, 0, 0)),
		want("stores", "shop", t0, res(0, 0, 3, 0), res(0, 0, 6*gi, 0), storage(6*gi*45/60.0, 20*gi, 50*gi)),
	})
	if !strings.Contains(e.logs.String(), "project label is not a lowercase DNS label") {
		t.Errorf("no log about the invalid project label:\n%s", e.logs.String())
	}

	// Next window: old is gone for good, shop keeps its new project.
	got = e.window(t0.Add(time.Minute), nil)
	check(t, got, []sample.Sample{
		want("unassigned", "new", t0.Add(time.Minute), res(0, 0, 0, 0), res(0, 0, 0, 0), storage(0, 0, 0)),
		want("stores", "shop", t0.Add(time.Minute), res(0, 0, 4, 0), res(0, 0, 8*gi, 0), storage(6*gi, 20*gi, 50*gi)),
	})
}

// TestVolumeStatsUnavailable: storage usage is 0 and the log says so once.
func TestVolumeStatsUnavailable(t *testing.T) {
	p := pod("db", "pg", t0.Add(-time.Hour), container("app", "1", "1Gi"))
	p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}}}
	e := start(t, t0, namespace("db", nil), p, claim("db", "data", "1Gi", corev1.ClaimBound))
	e.vols.err = errors.New(`nodes "node-1" is forbidden: cannot get resource "nodes/proxy"`)
	e.scrapeAt(t0)
	for w := range 3 {
		got := e.window(t0.Add(time.Duration(w)*time.Minute), nil)
		check(t, got, []sample.Sample{
			want("unassigned", "db", t0.Add(time.Duration(w)*time.Minute), res(0, 1, 0, 1), res(0, gi, 0, gi), storage(0, gi, 0)),
		})
	}
	if n := strings.Count(e.logs.String(), "storage usage unavailable"); n != 1 {
		t.Fatalf("said %d times that storage usage is unavailable, want once:\n%s", n, e.logs.String())
	}
}

// TestRestartSameWindows: a second source over the same cluster, started
// mid-window, emits the same window bounds and the same values for a
// steady cluster.
func TestRestartSameWindows(t *testing.T) {
	objs := []runtime.Object{namespace("app", nil), pod("app", "p", t0.Add(-time.Hour), container("app", "250m", "128Mi"))}
	a := start(t, t0.Add(-time.Second), objs...)
	a.setMetrics("app", "p", "100m", "64Mi")
	a.scrapeAt(t0)
	first := a.window(t0, nil)

	b := start(t, t0.Add(37*time.Second), objs...)
	b.setMetrics("app", "p", "100m", "64Mi")
	b.scrapeAt(t0.Add(45 * time.Second))
	again := b.scrapeAt(t0.Add(time.Minute))
	check(t, again, first)
	check(t, first, []sample.Sample{want("unassigned", "app", t0, res(0.1, 0.25, 0, 0.25), res(64*mi, 128*mi, 0, 128*mi), storage(0, 0, 0))})
}

// TestRun drives the source with the real clock: windows of one second
// come out aligned and back to back.
func TestRun(t *testing.T) {
	cfg := config()
	cfg.Interval, cfg.ScrapeInterval = time.Second, time.Second
	kc := allowAll(fake.NewClientset(namespace("app", nil)))
	src, err := kube.New(cfg, kc, metricsfake.NewSimpleClientset(), kube.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))), kube.WithVolumeStats(&volumes{}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu   sync.Mutex
		got  []sample.Sample
		done = make(chan error, 1)
	)
	go func() {
		done <- src.Run(ctx, func(_ context.Context, ss []sample.Sample) error {
			mu.Lock()
			for _, s := range ss {
				if !s.IsCapacity() {
					got = append(got, s)
				}
			}
			mu.Unlock()
			return nil
		})
	}()
	testenv.Eventually(t, 10*time.Second, "three windows", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= 3, fmt.Sprintf("%d samples", len(got))
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i, s := range got {
		if s.Start.Nanosecond() != 0 || s.End.Sub(s.Start) != time.Second {
			t.Fatalf("window %d is %s..%s", i, s.Start, s.End)
		}
		if i > 0 && !s.Start.Equal(got[i-1].End) {
			t.Fatalf("window %d starts %s, previous ended %s", i, s.Start, got[i-1].End)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*kube.Config)
		want   []string
	}{
		{"defaults", func(*kube.Config) {}, nil},
		{"no cluster", func(c *kube.Config) { c.Cluster = "" }, []string{"--cluster: required"}},
		{"bad cluster", func(c *kube.Config) { c.Cluster = "Prod_East" }, []string{"--cluster"}},
		{"bad label", func(c *kube.Config) { c.ProjectLabel = "a b" }, []string{"--project-label"}},
		{"bad default project", func(c *kube.Config) { c.DefaultProject = "Nope" }, []string{"--default-project"}},
		{"scrape does not divide", func(c *kube.Config) { c.ScrapeInterval = 7 * time.Second }, []string{"--scrape-interval"}},
		{"interval", func(c *kube.Config) { c.Interval = 1500 * time.Millisecond; c.ScrapeInterval = time.Second }, []string{"--interval", "--scrape-interval"}},
		{"all at once", func(c *kube.Config) { c.Cluster = ""; c.Timeout = 0 }, []string{"--cluster", "--kube-timeout"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := config()
			tt.change(&c)
			err := c.Validate()
			if (err != nil) != (len(tt.want) > 0) {
				t.Fatalf("err = %v", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestGapLongerThanWindow: after a suspension the windows in between are
// skipped, not invented, and the log says so.
func TestGapLongerThanWindow(t *testing.T) {
	e := start(t, t0, namespace("app", nil), pod("app", "p", t0.Add(-time.Hour), container("app", "1", "1Gi")))
	e.scrapeAt(t0)
	e.scrapeAt(t0.Add(15 * time.Second))
	got := e.scrapeAt(t0.Add(3*time.Minute + 15*time.Second))
	if len(got) != 0 {
		t.Fatalf("a scrape after a gap emitted %d samples", len(got))
	}
	if !strings.Contains(e.logs.String(), "no scrape for longer than a window") {
		t.Fatalf("the gap is not in the log:\n%s", e.logs.String())
	}
	e.scrapeAt(t0.Add(3*time.Minute + 30*time.Second))
	e.scrapeAt(t0.Add(3*time.Minute + 45*time.Second))
	got = e.scrapeAt(t0.Add(4 * time.Minute))
	w := t0.Add(3 * time.Minute)
	check(t, got, []sample.Sample{want("unassigned", "app", w, res(0, 1, 0, 1), res(0, gi, 0, gi), storage(0, 0, 0))})
}
