package kubetest_test

import (
	"context"
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	metricsclient "k8s.io/metrics/pkg/client/clientset/versioned"

	"github.com/alauda/costmeter/internal/kubetest"
	"github.com/alauda/costmeter/internal/testenv"
)

var plane kubetest.Shared

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(stopAfter{m}, kubetest.GoleakOptions()...)
}

// stopAfter stops the shared control plane after the tests, before goleak
// looks for leaks.
type stopAfter struct{ m *testing.M }

func (s stopAfter) Run() int { defer plane.Stop(); return s.m.Run() }

// TestVersionsPinned: the versions the harness reports are the ones
// test/k8s/go.mod builds.
func TestVersionsPinned(t *testing.T) {
	b, err := os.ReadFile("../../test/k8s/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	for mod, want := range map[string]string{"k8s.io/kubernetes": kubetest.KubernetesVersion, "go.etcd.io/etcd/server/v3": kubetest.EtcdVersion} {
		m := regexp.MustCompile(`(?m)^\s*(?:require\s+)?` + regexp.QuoteMeta(mod) + ` (v\S+)`).FindSubmatch(b)
		if m == nil || string(m[1]) != want {
			t.Errorf("test/k8s/go.mod requires %s %s, the harness says %s", mod, m, want)
		}
	}
}

// TestMissingBinaries: without the binaries the error says what to run.
func TestMissingBinaries(t *testing.T) {
	t.Setenv(kubetest.BinDirEnv, t.TempDir())
	_, err := kubetest.Start(context.Background(), t.TempDir())
	if !errors.Is(err, kubetest.ErrNoBinaries) || !strings.Contains(err.Error(), "make k8s-testbin") {
		t.Fatalf("err = %v, want one saying to run make k8s-testbin", err)
	}
}

// TestControlPlane: the version is parseable, RBAC is enforced for a
// ServiceAccount, quotas get a status from the harness that the API
// server's quota admission then charges pods to, and the fake metrics
// answer through the aggregator.
func TestControlPlane(t *testing.T) {
	c := plane.Cluster(t)
	ctx := context.Background()
	v, err := c.Admin.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != kubetest.KubernetesVersion {
		t.Fatalf("server version %q, want %s", v.GitVersion, kubetest.KubernetesVersion)
	}

	cfg, err := c.ServiceAccountConfig(ctx, "harness", "nobody")
	if err != nil {
		t.Fatal(err)
	}
	sa := kubernetes.NewForConfigOrDie(cfg)
	_, err = sa.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "system:serviceaccount:harness:nobody") {
		t.Fatalf("a service account without roles listed pods: err = %v", err)
	}

	hard := corev1.ResourceList{corev1.ResourceRequestsCPU: resource.MustParse("2")}
	if _, err := c.SetQuota(ctx, "harness", "q", hard); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, "quota status from the harness", func() (bool, string) {
		got, err := c.Admin.CoreV1().ResourceQuotas("harness").Get(ctx, "q", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		used, ok := got.Status.Used[corev1.ResourceRequestsCPU]
		return ok && used.IsZero() && got.Status.Hard.Cpu() != nil, "status " + got.Status.String()
	})
	// The API server admits a pod only with the namespace's default
	// ServiceAccount (EnsureNamespace made it) and charges its request to
	// the quota; one over the quota is refused.
	pod := func(name, cpu string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "harness", Name: name}, Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "app", Image: "registry.invalid/app:1",
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu)}}}}}}
	}
	if _, err := c.Admin.CoreV1().Pods("harness").Create(ctx, pod("small", "1500m"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := c.Admin.CoreV1().ResourceQuotas("harness").Get(ctx, "q", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if used := got.Status.Used[corev1.ResourceRequestsCPU]; used.MilliValue() != 1500 {
		t.Fatalf("quota used %s after a pod of 1500m, want 1500m", used.String())
	}
	if _, err := c.Admin.CoreV1().Pods("harness").Create(ctx, pod("big", "1"), metav1.CreateOptions{}); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "exceeded quota") {
		t.Fatalf("a pod over the quota: err = %v, want forbidden, exceeded quota", err)
	}
	// A new resource now would need the usage counted, which the harness
	// does not do: it says so instead of writing a wrong status.
	hard[corev1.ResourceRequestsMemory] = resource.MustParse("1Gi")
	if _, err := c.SetQuota(ctx, "harness", "q", hard); !errors.Is(err, kubetest.ErrQuotaRecount) {
		t.Fatalf("SetQuota adding memory with a pod in the namespace: err = %v, want ErrQuotaRecount", err)
	}

	c.Metrics.SetPod("harness", "p", map[string]corev1.ResourceList{"app": {corev1.ResourceCPU: resource.MustParse("250m")}})
	defer c.Metrics.DeletePod("harness", "p")
	mc := metricsclient.NewForConfigOrDie(c.AdminConfig())
	pms, err := mc.MetricsV1beta1().PodMetricses("harness").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pms.Items) != 1 || pms.Items[0].Containers[0].Usage.Cpu().MilliValue() != 250 {
		t.Fatalf("pod metrics = %+v", pms.Items)
	}
	c.Metrics.SetUnavailable(true)
	_, err = mc.MetricsV1beta1().PodMetricses("").List(ctx, metav1.ListOptions{})
	c.Metrics.SetUnavailable(false)
	if !apierrors.IsServiceUnavailable(err) {
		t.Fatalf("metrics while unavailable: err = %v, want 503", err)
	}
}
