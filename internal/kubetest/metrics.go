package kubetest

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metricsv1beta1 "k8s.io/metrics/pkg/apis/metrics/v1beta1"
)

// MetricsServer is a fake metrics-server: an HTTPS server answering the
// metrics.k8s.io/v1beta1 pod metrics paths from what a test sets, which the
// control plane's aggregator proxies to through an APIService, so that a
// metrics clientset reads it as it reads metrics-server.
//
// It serves discovery, list (all namespaces or one) and get of PodMetrics;
// label and field selectors are ignored. NodeMetrics are listed as empty.
type MetricsServer struct {
	srv *httptest.Server

	mu          sync.Mutex
	pods        map[string]metricsv1beta1.PodMetrics // namespace/name
	unavailable bool
	lists       int // list requests answered with metrics
	refused     int // requests answered 503
}

func newMetricsServer() *MetricsServer {
	m := &MetricsServer{pods: map[string]metricsv1beta1.PodMetrics{}}
	m.srv = httptest.NewUnstartedServer(http.HandlerFunc(m.serve))
	m.srv.StartTLS()
	return m
}

// Port is the port the server listens on (127.0.0.1).
func (m *MetricsServer) Port() int {
	return m.srv.Listener.Addr().(*net.TCPAddr).Port
}

func (m *MetricsServer) close() { m.srv.Close() }

// SetPod makes the server report usage for the pod namespace/name, one
// container per entry of containers (name → usage).
func (m *MetricsServer) SetPod(namespace, name string, containers map[string]corev1.ResourceList) {
	pm := metricsv1beta1.PodMetrics{
		TypeMeta:   metav1.TypeMeta{Kind: "PodMetrics", APIVersion: metricsv1beta1.SchemeGroupVersion.String()},
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, CreationTimestamp: metav1.Now()},
		Timestamp:  metav1.Now(),
		Window:     metav1.Duration{Duration: 15 * time.Second},
	}
	names := make([]string, 0, len(containers))
	for c := range containers {
		names = append(names, c)
	}
	sort.Strings(names)
	for _, c := range names {
		pm.Containers = append(pm.Containers, metricsv1beta1.ContainerMetrics{Name: c, Usage: containers[c]})
	}
	m.mu.Lock()
	m.pods[namespace+"/"+name] = pm
	m.mu.Unlock()
}

// DeletePod stops reporting the pod, as metrics-server does for a pod
// whose kubelet scrape failed or that is gone.
func (m *MetricsServer) DeletePod(namespace, name string) {
	m.mu.Lock()
	delete(m.pods, namespace+"/"+name)
	m.mu.Unlock()
}

// SetUnavailable makes every request for metrics (discovery excepted)
// answer 503 Service Unavailable, as the aggregator does while
// metrics-server is down; false serves them again. Discovery keeps
// answering, so that the aggregator keeps the APIService available and
// the next request after SetUnavailable(false) reaches the server.
func (m *MetricsServer) SetUnavailable(down bool) {
	m.mu.Lock()
	m.unavailable = down
	m.mu.Unlock()
}

// Lists is how many list requests were answered with metrics.
func (m *MetricsServer) Lists() int { m.mu.Lock(); defer m.mu.Unlock(); return m.lists }

// Refused is how many requests were answered 503 while unavailable.
func (m *MetricsServer) Refused() int { m.mu.Lock(); defer m.mu.Unlock(); return m.refused }

const metricsPrefix = "/apis/metrics.k8s.io/v1beta1"

func (m *MetricsServer) serve(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimSuffix(r.URL.Path, "/")
	switch path {
	case "/apis/metrics.k8s.io":
		writeJSON(w, http.StatusOK, metav1.APIGroup{
			TypeMeta:         metav1.TypeMeta{Kind: "APIGroup", APIVersion: "v1"},
			Name:             "metrics.k8s.io",
			Versions:         []metav1.GroupVersionForDiscovery{{GroupVersion: metricsPrefix[len("/apis/"):], Version: "v1beta1"}},
			PreferredVersion: metav1.GroupVersionForDiscovery{GroupVersion: metricsPrefix[len("/apis/"):], Version: "v1beta1"},
		})
		return
	case metricsPrefix:
		verbs := metav1.Verbs{"get", "list"}
		writeJSON(w, http.StatusOK, metav1.APIResourceList{
			TypeMeta:     metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
			GroupVersion: "metrics.k8s.io/v1beta1",
			APIResources: []metav1.APIResource{
				{Name: "nodes", Kind: "NodeMetrics", Verbs: verbs},
				{Name: "pods", Namespaced: true, Kind: "PodMetrics", Verbs: verbs},
			},
		})
		return
	}
	if !strings.HasPrefix(path, metricsPrefix+"/") || r.Method != http.MethodGet {
		writeStatus(w, http.StatusNotFound, "NotFound", "the server could not find the requested resource")
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.unavailable {
		m.refused++
		writeStatus(w, http.StatusServiceUnavailable, "ServiceUnavailable", "the server is currently unable to handle the request")
		return
	}
	parts := strings.Split(strings.TrimPrefix(path, metricsPrefix+"/"), "/")
	switch {
	case len(parts) == 1 && parts[0] == "nodes":
		m.lists++
		writeJSON(w, http.StatusOK, metricsv1beta1.NodeMetricsList{TypeMeta: metav1.TypeMeta{Kind: "NodeMetricsList", APIVersion: "metrics.k8s.io/v1beta1"}})
	case len(parts) == 1 && parts[0] == "pods":
		m.lists++
		writeJSON(w, http.StatusOK, m.list(""))
	case len(parts) == 3 && parts[0] == "namespaces" && parts[2] == "pods":
		m.lists++
		writeJSON(w, http.StatusOK, m.list(parts[1]))
	case len(parts) == 4 && parts[0] == "namespaces" && parts[2] == "pods":
		pm, ok := m.pods[parts[1]+"/"+parts[3]]
		if !ok {
			writeStatus(w, http.StatusNotFound, "NotFound", `podmetrics.metrics.k8s.io "`+parts[3]+`" not found`)
			return
		}
		writeJSON(w, http.StatusOK, pm)
	default:
		writeStatus(w, http.StatusNotFound, "NotFound", "the server could not find the requested resource")
	}
}

// list is the PodMetricsList of a namespace ("" for all), sorted.
func (m *MetricsServer) list(namespace string) metricsv1beta1.PodMetricsList {
	out := metricsv1beta1.PodMetricsList{TypeMeta: metav1.TypeMeta{Kind: "PodMetricsList", APIVersion: "metrics.k8s.io/v1beta1"}}
	keys := make([]string, 0, len(m.pods))
	for k, pm := range m.pods {
		if namespace == "" || pm.Namespace == namespace {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		out.Items = append(out.Items, m.pods[k])
	}
	return out
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeStatus(w, http.StatusInternalServerError, "InternalError", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

func writeStatus(w http.ResponseWriter, code int, reason, msg string) {
	b, _ := json.Marshal(metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure, Message: msg, Reason: metav1.StatusReason(reason), Code: int32(code),
	})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}
