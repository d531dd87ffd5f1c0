package kube_test

// Tests of the source against a real control plane (internal/kubetest):
// kube-apiserver with RBAC, etcd, and a fake metrics-server behind the
// aggregator; the harness writes quota status and default service accounts
// as the controller manager would. There are no kubelets: the test plays the kubelet, binding
// pods to a Node object and writing their status. The source runs as the
// ServiceAccount of deploy/kubernetes/collector-rbac.yaml, with the
// ClusterRole applied from that file.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	metricsclient "k8s.io/metrics/pkg/client/clientset/versioned"

	"github.com/alauda/costmeter/collector/kube"
	"github.com/alauda/costmeter/internal/kubetest"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/testenv"
)

// plane is the control plane all tests of the package share.
var plane kubetest.Shared

const (
	rbacManifest = "../../deploy/kubernetes/collector-rbac.yaml"
	nodeName     = "node-1"
	runtimeClass = "with-overhead"
)

// requestCounter counts the requests a client sent that the API server
// answered 200, by path, lists (plain or streaming) and watches apart.
type requestCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (rc *requestCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return counting{rt: rt, count: func(r *http.Request, resp *http.Response) {
		if resp.StatusCode != http.StatusOK {
			return
		}
		// A watch that asks for the initial events is a list (client-go's
		// streaming lists).
		q := r.URL.Query()
		key := "list " + r.URL.Path
		if w := q.Get("watch"); (w == "true" || w == "1") && q.Get("sendInitialEvents") != "true" {
			key = "watch " + r.URL.Path
		}
		rc.mu.Lock()
		rc.n[key]++
		rc.mu.Unlock()
	}}
}

func (rc *requestCounter) count(key string) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.n[key]
}

// counting is the wrapping transport; it exposes the wrapped one so that
// client-go can cancel requests through it.
type counting struct {
	rt    http.RoundTripper
	count func(*http.Request, *http.Response)
}

func (c counting) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.rt.RoundTrip(r)
	if err == nil {
		c.count(r, resp)
	}
	return resp, err
}

func (c counting) WrappedRoundTripper() http.RoundTripper { return c.rt }

// live is one test's source on the shared control plane.
type live struct {
	t        *testing.T
	ctx      context.Context
	c        *kubetest.Cluster
	admin    kubernetes.Interface
	src      *kube.Source
	factory  informers.SharedInformerFactory
	clock    *clock
	logs     *testenv.LockedBuffer
	prefix   string
	requests *requestCounter
}

// clusterFixtures are created once per control plane: the collector's RBAC
// from the manifest, a Node for pods to be bound to, a RuntimeClass with a
// pod overhead.
var clusterFixtures sync.Once

func setUpCluster(t *testing.T, c *kubetest.Cluster) {
	t.Helper()
	var err error
	clusterFixtures.Do(func() {
		ctx := context.Background()
		objs, rerr := kubetest.ReadManifest(rbacManifest)
		if rerr != nil {
			err = rerr
			return
		}
		if err = c.Apply(ctx, objs...); err != nil {
			return
		}
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}}
		if _, err = c.Admin.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return
		}
		rcl := &nodev1.RuntimeClass{ObjectMeta: metav1.ObjectMeta{Name: runtimeClass}, Handler: "runc",
			Overhead: &nodev1.Overhead{PodFixed: list("100m", "64Mi")}}
		if _, err = c.Admin.NodeV1().RuntimeClasses().Create(ctx, rcl, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
			err = nil
		}
	})
	if err != nil {
		t.Fatalf("set up the cluster: %v", err)
	}
	// The authorizer learns of new bindings through its own informers.
	waitAllowed(t, c, "cost-collector", []string{"/api/v1/pods", "/apis/metrics.k8s.io/v1beta1/pods"})
}

// waitAllowed waits until the ServiceAccount cost-system/sa may GET each
// path: RBAC changes reach the authorizer a moment after they are written.
func waitAllowed(t *testing.T, c *kubetest.Cluster, sa string, paths []string) {
	t.Helper()
	ctx := context.Background()
	rc, err := c.ServiceAccountConfig(ctx, "cost-system", sa)
	if err != nil {
		t.Fatal(err)
	}
	kc, _, err := clients(rc)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		testenv.Eventually(t, time.Minute, sa+" may get "+p, func() (bool, string) {
			err := kc.CoreV1().RESTClient().Get().AbsPath(p).Do(ctx).Error()
			return err == nil, fmt.Sprint(err)
		})
	}
}

// startLive starts a source as the collector's ServiceAccount (or as sa,
// in namespace cost-system, when given) with its clock at at. The test's
// namespaces start with prefix.
func startLive(t *testing.T, prefix string, at time.Time) *live {
	t.Helper()
	c := plane.Cluster(t)
	setUpCluster(t, c)
	ctx, cancel := context.WithCancel(context.Background())
	e := &live{t: t, ctx: ctx, c: c, admin: c.Admin, clock: &clock{t: at}, logs: &testenv.LockedBuffer{}, prefix: prefix,
		requests: &requestCounter{n: map[string]int{}}}
	src, factory, err := e.newSource(ctx, "cost-collector")
	if err != nil {
		t.Fatal(err)
	}
	e.src, e.factory = src, factory
	t.Cleanup(func() { cancel(); src.Wait() })
	if err := src.Start(ctx); err != nil {
		t.Fatalf("start as the collector's service account: %v", err)
	}
	return e
}

// newSource builds a source whose clients authenticate as the
// ServiceAccount cost-system/sa.
func (e *live) newSource(ctx context.Context, sa string) (*kube.Source, informers.SharedInformerFactory, error) {
	rc, err := e.c.ServiceAccountConfig(ctx, "cost-system", sa)
	if err != nil {
		return nil, nil, err
	}
	rc.Wrap(e.requests.wrap)
	kc, mc, err := clients(rc)
	if err != nil {
		return nil, nil, err
	}
	cfg := config()
	// As deploy/kubernetes runs it: no nodes/proxy, no volume stats.
	cfg.VolumeStats = false
	factory := informers.NewSharedInformerFactory(kc, 0)
	src, err := kube.New(cfg, kc, mc, kube.WithClock(e.clock.Now), kube.WithInformerFactory(factory),
		kube.WithLogger(slog.New(slog.NewTextHandler(e.logs, nil))), kube.WithLabeler(labeler(e.t)))
	return src, factory, err
}

func clients(rc *rest.Config) (kubernetes.Interface, metricsclient.Interface, error) {
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, nil, err
	}
	mc, err := metricsclient.NewForConfig(rc)
	return kc, mc, err
}

func (e *live) scrapeAt(at time.Time) []sample.Sample {
	e.t.Helper()
	e.clock.Set(at)
	out, err := e.src.Scrape(e.ctx)
	if err != nil {
		e.t.Fatalf("scrape at %s: %v", at.Format(time.TimeOnly), err)
	}
	return out
}

// window scrapes every 15 s through the window starting at w and returns
// the samples of the test's namespaces that the last scrape emitted;
// before[s] runs before the scrape at w+s.
func (e *live) window(w time.Time, before map[int]func()) []sample.Sample {
	e.t.Helper()
	return e.mine(e.windowAll(w, before))
}

// windowAll is window with every sample the last scrape emitted, the
// cluster's capacity sample included.
func (e *live) windowAll(w time.Time, before map[int]func()) []sample.Sample {
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
	if len(out) == 0 {
		e.t.Fatalf("the window %s did not close", w.Format(time.TimeOnly))
	}
	return out
}

// mine keeps the samples of the test's namespaces; every sample must be
// valid and of one window.
func (e *live) mine(ss []sample.Sample) []sample.Sample {
	e.t.Helper()
	var out []sample.Sample
	for _, s := range ss {
		if err := s.Validate(); err != nil {
			e.t.Errorf("invalid sample %s: %v", show(s), err)
		}
		if !s.End.Equal(ss[0].End) {
			e.t.Errorf("samples of two windows in one batch: %s and %s", show(ss[0]), show(s))
		}
		if strings.HasPrefix(s.Namespace, e.prefix) {
			out = append(out, s)
		}
	}
	return out
}

// eventually waits until the source's caches satisfy cond.
func (e *live) eventually(what string, cond func() (bool, string)) {
	e.t.Helper()
	testenv.Eventually(e.t, time.Minute, what, cond)
}

// namespace creates a namespace of the test and waits until pods can be
// created in it (its default ServiceAccount exists) and the source sees it.
func (e *live) namespace(name string, labels map[string]string) {
	e.t.Helper()
	if err := e.c.EnsureNamespace(e.ctx, name, labels); err != nil {
		e.t.Fatal(err)
	}
	e.eventually("namespace "+name+" ready", func() (bool, string) {
		_, err := e.admin.CoreV1().ServiceAccounts(name).Get(e.ctx, "default", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		_, err = e.factory.Core().V1().Namespaces().Lister().Get(name)
		return err == nil, fmt.Sprint(err)
	})
}

func (e *live) relabel(name string, labels map[string]string) {
	e.t.Helper()
	ns, err := e.admin.CoreV1().Namespaces().Get(e.ctx, name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	ns.Labels = labels
	if _, err := e.admin.CoreV1().Namespaces().Update(e.ctx, ns, metav1.UpdateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	e.eventually("namespace "+name+" relabelled", func() (bool, string) {
		got, err := e.factory.Core().V1().Namespaces().Lister().Get(name)
		if err != nil {
			return false, err.Error()
		}
		for k, v := range labels {
			if got.Labels[k] != v {
				return false, fmt.Sprintf("labels %v", got.Labels)
			}
		}
		return true, ""
	})
}

// runPod creates p bound to the node and, as its kubelet would, marks it
// running since started (its init containers completed, sidecars running).
func (e *live) runPod(p *corev1.Pod, started time.Time) {
	e.t.Helper()
	p = p.DeepCopy()
	p.Spec.NodeName = nodeName
	created, err := e.admin.CoreV1().Pods(p.Namespace).Create(e.ctx, p, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatalf("create pod %s/%s: %v", p.Namespace, p.Name, err)
	}
	st := metav1.NewTime(started)
	created.Status = corev1.PodStatus{Phase: corev1.PodRunning, StartTime: &st}
	for _, c := range created.Spec.InitContainers {
		state := corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{StartedAt: st, FinishedAt: st, Reason: "Completed"}}
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			state = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: st}}
		}
		created.Status.InitContainerStatuses = append(created.Status.InitContainerStatuses, corev1.ContainerStatus{Name: c.Name, Image: c.Image, State: state})
	}
	for _, c := range created.Spec.Containers {
		created.Status.ContainerStatuses = append(created.Status.ContainerStatuses, corev1.ContainerStatus{Name: c.Name, Image: c.Image,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: st}}, Ready: true, Started: ptr(true)})
	}
	if _, err := e.admin.CoreV1().Pods(p.Namespace).UpdateStatus(e.ctx, created, metav1.UpdateOptions{}); err != nil {
		e.t.Fatalf("mark pod %s/%s running: %v", p.Namespace, p.Name, err)
	}
	e.podIs(p.Namespace, p.Name, func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
}

// createPod creates p as it is (not bound: it stays Pending).
func (e *live) createPod(p *corev1.Pod) {
	e.t.Helper()
	if _, err := e.admin.CoreV1().Pods(p.Namespace).Create(e.ctx, p, metav1.CreateOptions{}); err != nil {
		e.t.Fatalf("create pod %s/%s: %v", p.Namespace, p.Name, err)
	}
	e.podIs(p.Namespace, p.Name, func(*corev1.Pod) bool { return true })
}

// finishPod marks the pod's containers terminated at at, phase Succeeded.
func (e *live) finishPod(ns, name string, at time.Time) {
	e.t.Helper()
	p, err := e.admin.CoreV1().Pods(ns).Get(e.ctx, name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	p.Status.Phase = corev1.PodSucceeded
	for i := range p.Status.ContainerStatuses {
		cs := &p.Status.ContainerStatuses[i]
		cs.Ready, cs.Started = false, ptr(false)
		cs.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{StartedAt: p.Status.StartTime.Rfc3339Copy(), FinishedAt: metav1.NewTime(at), Reason: "Completed"}}
	}
	if _, err := e.admin.CoreV1().Pods(ns).UpdateStatus(e.ctx, p, metav1.UpdateOptions{}); err != nil {
		e.t.Fatalf("finish pod %s/%s: %v", ns, name, err)
	}
	e.podIs(ns, name, func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodSucceeded })
}

// deletePod deletes the pod at once (as the kubelet confirms a deletion)
// and waits until the source's watch delivered it.
func (e *live) deletePod(ns, name string) {
	e.t.Helper()
	p, err := e.admin.CoreV1().Pods(ns).Get(e.ctx, name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.admin.CoreV1().Pods(ns).Delete(e.ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}); err != nil {
		e.t.Fatal(err)
	}
	e.eventually("deletion of pod "+ns+"/"+name+" delivered", func() (bool, string) {
		return kube.DeletePending(e.src, p.UID), "not delivered"
	})
}

func (e *live) podIs(ns, name string, cond func(*corev1.Pod) bool) {
	e.t.Helper()
	e.eventually("pod "+ns+"/"+name, func() (bool, string) {
		p, err := e.factory.Core().V1().Pods().Lister().Pods(ns).Get(name)
		return err == nil && cond(p), fmt.Sprint(err)
	})
}

// bindClaim sets a claim's status as the volume binder would.
func (e *live) bindClaim(ns, name, size string) {
	e.t.Helper()
	c, err := e.admin.CoreV1().PersistentVolumeClaims(ns).Get(e.ctx, name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	c.Status.Phase = corev1.ClaimBound
	c.Status.AccessModes = c.Spec.AccessModes
	c.Status.Capacity = corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}
	if _, err := e.admin.CoreV1().PersistentVolumeClaims(ns).UpdateStatus(e.ctx, c, metav1.UpdateOptions{}); err != nil {
		e.t.Fatalf("bind claim %s/%s: %v", ns, name, err)
	}
	e.eventually("claim "+ns+"/"+name+" bound", func() (bool, string) {
		got, err := e.factory.Core().V1().PersistentVolumeClaims().Lister().PersistentVolumeClaims(ns).Get(name)
		return err == nil && got.Status.Phase == corev1.ClaimBound, fmt.Sprint(err)
	})
}

func (e *live) createClaim(ns, name, size string) {
	e.t.Helper()
	c := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}}}}
	if _, err := e.admin.CoreV1().PersistentVolumeClaims(ns).Create(e.ctx, c, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// setQuota creates or updates a ResourceQuota, has the harness write its
// status as the quota controller would, and waits until the source sees
// that status.
func (e *live) setQuota(ns, name string, hard corev1.ResourceList) {
	e.t.Helper()
	if _, err := e.c.SetQuota(e.ctx, ns, name, hard); err != nil {
		e.t.Fatalf("set quota %s/%s: %v", ns, name, err)
	}
	e.eventually("status of quota "+ns+"/"+name, func() (bool, string) {
		got, err := e.factory.Core().V1().ResourceQuotas().Lister().ResourceQuotas(ns).Get(name)
		if err != nil {
			return false, err.Error()
		}
		for r, v := range hard {
			if s, ok := got.Status.Hard[r]; !ok || s.Cmp(v) != 0 {
				return false, fmt.Sprintf("status.hard %v", got.Status.Hard)
			}
		}
		return len(got.Status.Used) > 0, "no status.used yet"
	})
}

func (e *live) setMetrics(ns, name, cpu, mem string) {
	e.c.Metrics.SetPod(ns, name, map[string]corev1.ResourceList{"app": list(cpu, mem)})
}

// podSpec is a pod of ns with app containers (requests only; a quota
// needs requests on every container).
func podSpec(ns, name string, containers ...corev1.Container) *corev1.Pod {
	for i := range containers {
		containers[i].Image = "registry.invalid/app:1"
	}
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.PodSpec{Containers: containers}}
}

// TestClusterRBAC: the collector runs as the ServiceAccount bound to the
// ClusterRole of deploy/kubernetes; the same role with any one rule
// removed makes Start fail, naming exactly what is forbidden.
func TestClusterRBAC(t *testing.T) {
	e := startLive(t, "rbac-", t0)
	ctx := e.ctx
	// The shipped role lists pod metrics through the aggregator.
	before := e.c.Metrics.Lists()
	e.scrapeAt(t0)
	if e.c.Metrics.Lists() == before || strings.Contains(e.logs.String(), "pod metrics") {
		t.Fatalf("the shipped role did not list pod metrics (lists %d → %d):\n%s", before, e.c.Metrics.Lists(), e.logs.String())
	}

	objs, err := kubetest.ReadManifest(rbacManifest)
	if err != nil {
		t.Fatal(err)
	}
	var role *rbacv1.ClusterRole
	for _, o := range objs {
		if r, ok := o.(*rbacv1.ClusterRole); ok {
			role = r
		}
	}
	if role == nil || len(role.Rules) < 2 {
		t.Fatalf("no ClusterRole with rules in %s", rbacManifest)
	}
	for i, dropped := range role.Rules {
		t.Run(fmt.Sprintf("without rule %d", i), func(t *testing.T) {
			name := fmt.Sprintf("cost-collector-without-%d", i)
			r := role.DeepCopy()
			r.ObjectMeta = metav1.ObjectMeta{Name: name}
			r.Rules = slices.Delete(slices.Clone(r.Rules), i, i+1)
			b := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
				RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
				Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "cost-system", Name: name}}}
			if err := e.c.Apply(ctx, r, b); err != nil {
				t.Fatal(err)
			}
			// What the source needs of the dropped rule: list and watch of
			// the core kinds, list of pod metrics.
			var want []string
			for _, res := range dropped.Resources {
				for _, verb := range dropped.Verbs {
					if verb == "list" || (verb == "watch" && dropped.APIGroups[0] == "") {
						name := res
						if g := dropped.APIGroups[0]; g != "" {
							name += "." + g
						}
						want = append(want, verb+" "+name)
					}
				}
			}
			var kept []string
			for j, r := range role.Rules {
				if j != i {
					kept = append(kept, apiPath(r.APIGroups[0], r.Resources[0]))
				}
			}
			waitAllowed(t, e.c, name, kept)
			src, _, err := e.newSource(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			// The fault is real: the API server refuses the account.
			rc, err := e.c.ServiceAccountConfig(ctx, "cost-system", name)
			if err != nil {
				t.Fatal(err)
			}
			kc, _, err := clients(rc)
			if err != nil {
				t.Fatal(err)
			}
			err = kc.CoreV1().RESTClient().Get().AbsPath(apiPath(dropped.APIGroups[0], dropped.Resources[0])).Do(ctx).Error()
			if !apierrors.IsForbidden(err) {
				t.Fatalf("without rule %d the account may still list %s (err %v): the test proves nothing", i, dropped.Resources[0], err)
			}

			sctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			err = src.Start(sctx)
			src.Wait()
			if !errors.Is(err, kube.ErrForbidden) {
				t.Fatalf("Start = %v, want ErrForbidden", err)
			}
			_, named, _ := strings.Cut(err.Error(), kube.ErrForbidden.Error()+": ")
			named, _, _ = strings.Cut(named, " (cluster-wide)")
			got := strings.Split(named, ", ")
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("Start names %q as forbidden, want %q\n(error: %v)", got, want, err)
			}
		})
	}
}

func apiPath(group, resource string) string {
	if group == "" {
		return "/api/v1/" + resource
	}
	return "/apis/" + group + "/v1beta1/" + resource
}

// TestClusterWindow: one window with everything a real API server does
// differently from a fake: admission adds the RuntimeClass overhead, the
// quota controller fills status.hard, watches deliver deletions with their
// final state, the metrics come through the aggregator.
func TestClusterWindow(t *testing.T) {
	e := startLive(t, "win-", t0.Add(-time.Second))
	const shop, plain = "win-shop", "win-plain"
	e.namespace(shop, map[string]string{"cpaas.io/project": "retail"})
	e.namespace(plain, nil)
	long := t0.Add(-time.Hour)

	// shop: an init container larger than the app containers, a
	// RuntimeClass overhead, a sidecar, a pod missing from the metrics, a
	// pod never scheduled; two quotas (the smaller limit counts); a bound
	// claim and one bound mid-window.
	always := corev1.ContainerRestartPolicyAlways
	web := podSpec(shop, "web", container("app", "500m", "512Mi"), container("log", "250m", "512Mi"))
	web.Spec.InitContainers = []corev1.Container{container("migrate", "2", "1Gi")}
	web.Spec.InitContainers[0].Image = "registry.invalid/migrate:1"
	web.Spec.RuntimeClassName = ptr(runtimeClass)
	worker := podSpec(shop, "worker", container("app", "300m", "200Mi"))
	sidecar := container("proxy", "200m", "100Mi")
	sidecar.RestartPolicy, sidecar.Image = &always, "registry.invalid/proxy:1"
	setup := container("setup", "1", "50Mi")
	setup.Image = "registry.invalid/setup:1"
	worker.Spec.InitContainers = []corev1.Container{sidecar, setup}
	e.setQuota(shop, "compute", corev1.ResourceList{corev1.ResourceRequestsCPU: resource.MustParse("20"),
		corev1.ResourceRequestsMemory: resource.MustParse("40Gi"), corev1.ResourceRequestsStorage: resource.MustParse("100Gi")})
	e.setQuota(shop, "tight", corev1.ResourceList{corev1.ResourceRequestsCPU: resource.MustParse("16"), corev1.ResourceRequestsStorage: resource.MustParse("50Gi")})
	e.runPod(web, long)
	e.runPod(worker, long)
	e.createPod(podSpec(shop, "unscheduled", container("app", "8", "8Gi")))
	e.createClaim(shop, "data", "10Gi")
	e.bindClaim(shop, "data", "10Gi")
	e.createClaim(shop, "later", "5Gi")
	got, err := e.admin.CoreV1().Pods(shop).Get(e.ctx, "web", metav1.GetOptions{})
	if err != nil || got.Spec.Overhead.Cpu().MilliValue() != 100 {
		t.Fatalf("admission did not set the RuntimeClass overhead on web: %v %v", err, got.Spec.Overhead)
	}
	e.setMetrics(shop, "web", "3", "512Mi")

	// plain: pods that end, come and go, start late.
	for _, name := range []string{"job", "gone"} {
		e.runPod(podSpec(plain, name, container("app", "1", "1Gi")), long)
	}
	e.setMetrics(plain, "job", "500m", "256Mi")
	e.setMetrics(plain, "gone", "1500m", "2Gi")
	e.scrapeAt(t0) // the window before, backfilled from this one look

	got1 := e.window(t0, map[int]func(){
		// late started at 10:00:10; no metrics for it until 10:00:30.
		15: func() { e.runPod(podSpec(plain, "late", container("app", "1", "1Gi")), t0.Add(10*time.Second)) },
		// gone is deleted between 10:00:15 and 10:00:30: it counts until
		// the scrape that finds it gone. short runs 10:00:16–10:00:26,
		// between two scrapes. The claim later is bound.
		30: func() {
			e.setMetrics(plain, "late", "2", "512Mi")
			e.c.Metrics.DeletePod(plain, "gone")
			e.deletePod(plain, "gone")
			e.runPod(podSpec(plain, "short", container("app", "2", "2Gi")), t0.Add(16*time.Second))
			e.finishPod(plain, "short", t0.Add(26*time.Second))
			e.deletePod(plain, "short")
			e.bindClaim(shop, "later", "5Gi")
		},
		// job's containers finished at 10:00:40; the compute quota shrinks
		// below tight; shop moves to another project.
		45: func() {
			e.finishPod(plain, "job", t0.Add(40*time.Second))
			e.setQuota(shop, "compute", corev1.ResourceList{corev1.ResourceRequestsCPU: resource.MustParse("12"),
				corev1.ResourceRequestsMemory: resource.MustParse("40Gi"), corev1.ResourceRequestsStorage: resource.MustParse("100Gi")})
			e.relabel(shop, map[string]string{"cpaas.io/project": "stores"})
		},
	})
	// shop. web: max(2 init, 0.75 app) + 0.1 overhead = 2.1 cores, memory
	// max(1Gi, 1Gi) + 64Mi; worker: max(0.3 + 0.2 sidecar, 1 + 0.2) = 1.2
	// cores, memory max(300Mi, 150Mi). Usage: web 3 cores, 512Mi; worker
	// none (missing from the metrics). Quota cpu min(20, 16) for 30 s, then
	// min(12, 16); memory 40Gi; storage min(100Gi, 50Gi). Claims: data 10Gi,
	// later 5Gi for 45 s. The project is the one at the window's close.
	webMem, workerMem := float64(gi+64*mi), float64(300*mi)
	shopWant := want("stores", shop, t0,
		res(3, 2.1+1.2, (16*30+12*30)/60.0, 3+1.2),
		res(512*mi, webMem+workerMem, 40*gi, webMem+workerMem),
		storage(0, 10*gi+5*gi*45/60.0, 50*gi))
	// plain. Seconds ran: job 40, gone 30, late 50, short 10. Usage: job
	// 0.5 for 40 s; gone 1.5 for 30 s; late 0 for 5 s then 2 for 45 s.
	plainWant := want("unassigned", plain, t0,
		res((0.5*40+1.5*30+2*45)/60.0, (40+30+50+2*10)/60.0, 0, (40+1.5*30+(5+2*45)+2*10)/60.0),
		res((256*mi*40+2*gi*30+512*mi*45)/60.0, float64(gi)*(40+30+50+2*10)/60, 0, (gi*40+2*gi*30+gi*50+2*gi*10)/60.0),
		storage(0, 0, 0))
	check(t, got1, []sample.Sample{plainWant, shopWant})

	// The next window: shop unchanged with the new quota; in plain only
	// late runs.
	got2 := e.window(t0.Add(time.Minute), nil)
	check(t, got2, []sample.Sample{
		want("unassigned", plain, t0.Add(time.Minute), res(2, 1, 0, 2), res(512*mi, gi, 0, gi), storage(0, 0, 0)),
		want("stores", shop, t0.Add(time.Minute), res(3, 3.3, 12, 4.2), res(512*mi, webMem+workerMem, 40*gi, webMem+workerMem), storage(0, 15*gi, 50*gi)),
	})
}

// TestClusterMetricsUnavailable: while the metrics API answers 503, each
// pod's last usage stands for up to one window, then counts 0 (so its
// effective value is its request) until the API answers again; the log
// says so once, and once that it is back.
func TestClusterMetricsUnavailable(t *testing.T) {
	e := startLive(t, "metrics-", t0.Add(-time.Second))
	const ns = "metrics-down"
	e.namespace(ns, nil)
	e.runPod(podSpec(ns, "a", container("app", "1", "1Gi")), t0.Add(-time.Hour))
	e.setMetrics(ns, "a", "3", "2Gi")
	e.scrapeAt(t0)
	check(t, e.window(t0, nil), []sample.Sample{want("unassigned", ns, t0, res(3, 1, 0, 3), res(2*gi, gi, 0, 2*gi), storage(0, 0, 0))})

	// Unavailable for the scrapes 10:01:15 … 10:02:30; usage last read at
	// 10:01:00 stands until 10:02:00.
	refused := e.c.Metrics.Refused()
	w2 := t0.Add(time.Minute)
	down := func() { e.c.Metrics.SetUnavailable(true) }
	t.Cleanup(func() { e.c.Metrics.SetUnavailable(false) })
	check(t, e.window(w2, map[int]func(){15: down}), []sample.Sample{
		want("unassigned", ns, w2, res(3, 1, 0, 3), res(2*gi, gi, 0, 2*gi), storage(0, 0, 0)),
	})
	w3 := t0.Add(2 * time.Minute)
	check(t, e.window(w3, map[int]func(){45: func() { e.c.Metrics.SetUnavailable(false) }}), []sample.Sample{
		want("unassigned", ns, w3, res(3*30/60.0, 1, 0, (1*30+3*30)/60.0), res(2*gi*30/60.0, gi, 0, (gi*30+2*gi*30)/60.0), storage(0, 0, 0)),
	})
	if n := e.c.Metrics.Refused() - refused; n != 6 {
		t.Fatalf("the metrics API refused %d requests, want 6 (scrapes 10:01:15 to 10:02:30): the test proves nothing", n)
	}
	logs := e.logs.String()
	if strings.Count(logs, "pod metrics unavailable") != 1 || strings.Count(logs, "pod metrics available again") != 1 {
		t.Fatalf("want one warning and one recovery in the log:\n%s", logs)
	}
}

// TestClusterAPIServerRestart: the API server goes away mid-window and
// comes back; the source scrapes from its caches meanwhile, its informers
// watch (and list) again, a pod deleted right after the restart is
// counted once, and every window comes out exactly once.
func TestClusterAPIServerRestart(t *testing.T) {
	e := startLive(t, "restart-", t0.Add(-time.Second))
	const ns = "restart-app"
	e.namespace(ns, nil)
	e.runPod(podSpec(ns, "a", container("app", "1", "1Gi")), t0.Add(-time.Hour))
	e.runPod(podSpec(ns, "b", container("app", "2", "2Gi")), t0.Add(-time.Hour))
	e.setMetrics(ns, "a", "500m", "512Mi")
	if out := e.mine(e.scrapeAt(t0)); len(out) != 1 {
		t.Fatalf("backfilled window: %d samples of the test, want 1", len(out))
	}
	lists, watches := e.requests.count("list /api/v1/pods"), e.requests.count("watch /api/v1/pods")
	got := e.window(t0, map[int]func(){
		// The scrape at 10:00:30 runs while the API server is down, and
		// etcd compacts its history meanwhile: the informers' watches
		// cannot resume, they must list again.
		30: func() {
			e.c.StopAPIServer()
			if _, err := e.c.CompactEtcd(e.ctx); err != nil {
				t.Fatal(err)
			}
		},
		// Back before 10:00:45; b is deleted at once and c starts at
		// 10:00:40.
		45: func() {
			if err := e.c.StartAPIServer(e.ctx); err != nil {
				t.Fatal(err)
			}
			e.deletePod(ns, "b")
			e.runPod(podSpec(ns, "c", container("app", "1", "1Gi")), t0.Add(40*time.Second))
		},
	})
	// The pod informer's watch was broken and answered again.
	relists, rewatches := e.requests.count("list /api/v1/pods")-lists, e.requests.count("watch /api/v1/pods")-watches
	t.Logf("after the restart the pod informer listed %d and watched %d times", relists, rewatches)
	if relists == 0 {
		t.Fatal("the pod informer did not list again after the restart: the test proves nothing")
	}
	if !strings.Contains(e.logs.String(), "pod metrics unavailable") {
		t.Fatalf("the scrape during the outage did not miss the metrics API:\n%s", e.logs.String())
	}
	// a runs 60 s (usage 0.5 read at 10:00:15 stands through the outage);
	// b until the scrape that found it gone (10:00:45); c from 10:00:40.
	check(t, got, []sample.Sample{want("unassigned", ns, t0,
		res(0.5, (60+2*45+20)/60.0, 0, (60+2*45+20)/60.0),
		res(512*mi, float64(gi)*(60+2*45+20)/60, 0, float64(gi)*(60+2*45+20)/60),
		storage(0, 0, 0))})

	// The next windows: a and c, b never again.
	for w := 1; w <= 2; w++ {
		start := t0.Add(time.Duration(w) * time.Minute)
		check(t, e.window(start, nil), []sample.Sample{want("unassigned", ns, start, res(0.5, 2, 0, 2), res(512*mi, 2*gi, 0, 2*gi), storage(0, 0, 0))})
	}
}
