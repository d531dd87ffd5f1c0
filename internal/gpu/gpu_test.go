package gpu_test

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/alauda/costmeter/internal/gpu"
)

func TestShare(t *testing.T) {
	h100 := gpu.Node{Model: "NVIDIA-H100-80GB-HBM3"}
	a30 := gpu.Node{Model: "NVIDIA-A30"}
	sliced := gpu.Node{Model: "NVIDIA-A10", Replicas: 4}
	tests := []struct {
		resource string
		node     gpu.Node
		want     gpu.Fraction
		err      string
	}{
		{"nvidia.com/gpu", h100, gpu.Fraction{Num: 1, Den: 1}, ""},
		{"nvidia.com/gpu", sliced, gpu.Fraction{Num: 1, Den: 4}, ""},
		{"nvidia.com/gpu.shared", sliced, gpu.Fraction{Num: 1, Den: 4}, ""},
		{"nvidia.com/gpu.shared", h100, gpu.Fraction{}, "has no nvidia.com/gpu.replicas label"},
		{"nvidia.com/mig-1g.10gb", h100, gpu.Fraction{Num: 1, Den: 7}, ""},
		{"nvidia.com/mig-3g.40gb", h100, gpu.Fraction{Num: 3, Den: 7}, ""},
		{"nvidia.com/mig-7g.80gb", h100, gpu.Fraction{Num: 1, Den: 1}, ""},
		{"nvidia.com/mig-1g.10gb+me", h100, gpu.Fraction{Num: 1, Den: 7}, ""},
		{"nvidia.com/mig-1c.3g.40gb", h100, gpu.Fraction{Num: 1, Den: 7}, ""},
		{"nvidia.com/mig-2g.12gb", a30, gpu.Fraction{Num: 1, Den: 2}, ""},
		{"nvidia.com/mig-1g.6gb", a30, gpu.Fraction{Num: 1, Den: 4}, ""},
		{"nvidia.com/mig-1g.10gb", gpu.Node{}, gpu.Fraction{Num: 1, Den: 7}, ""},
		{"nvidia.com/mig-7g.80gb", a30, gpu.Fraction{}, "7 compute slices, more than the 4"},
		{"nvidia.com/mig-3g", h100, gpu.Fraction{}, `MIG profile "3g" is not`},
		{"nvidia.com/mig-0g.5gb", h100, gpu.Fraction{}, "is not"},
		{"nvidia.com/mig-4c.3g.40gb", h100, gpu.Fraction{}, "is not"},
		{"amd.com/gpu", h100, gpu.Fraction{}, "amd.com/gpu: not a GPU resource"},
	}
	for _, tt := range tests {
		got, err := gpu.Share(tt.resource, tt.node)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s on %q: err %v, want %q", tt.resource, tt.node.Model, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%s on %q: %v (%v), want %v", tt.resource, tt.node.Model, got, err, tt.want)
		}
	}
}

func TestNodeOf(t *testing.T) {
	n, err := gpu.NodeOf(map[string]string{gpu.LabelProduct: "NVIDIA-A10", gpu.LabelReplicas: "4"})
	if err != nil || n.Model != "NVIDIA-A10" || n.Replicas != 4 {
		t.Fatalf("%+v, %v", n, err)
	}
	if _, err := gpu.NodeOf(map[string]string{gpu.LabelReplicas: "zero"}); err == nil || !strings.Contains(err.Error(), `nvidia.com/gpu.replicas: "zero" is not a positive integer`) {
		t.Fatalf("err %v", err)
	}
	if f := (gpu.Fraction{Num: 1, Den: 7}).Mul(2).Add(gpu.Fraction{Num: 1, Den: 2}); f != (gpu.Fraction{Num: 11, Den: 14}) {
		t.Fatalf("2×1/7 + 1/2 = %v", f)
	}
}

// dcgmServer is a stand-in for the DCGM exporters of three nodes: it
// serves recorded exposition text in the exporter's format and label
// names (testdata), and one node whose scrape fails.
func dcgmServer(t *testing.T) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	for _, node := range []string{"a", "b", "c"} {
		body, err := os.ReadFile("testdata/dcgm-node-" + node + ".txt")
		if err != nil {
			t.Fatal(err)
		}
		mux.HandleFunc("/"+node+"/metrics", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
			_, _ = w.Write(body)
		})
	}
	mux.HandleFunc("/down/metrics", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "DCGM not ready", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/garbage/metrics", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("DCGM_FI_PROF_GR_ENGINE_ACTIVE{gpu=\"0\" 0.5\n"))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-12 }

// TestScrapeAndAttribute: whole GPUs, MIG instances, a time-sliced GPU the
// exporter names no pod for, a series out of range, a failed scrape. The
// expected figures are worked out by hand in the comments.
func TestScrapeAndAttribute(t *testing.T) {
	srv := dcgmServer(t)
	ctx := context.Background()
	var all []gpu.Reading
	for _, node := range []string{"a", "b"} {
		rs, err := gpu.Scrape(ctx, srv.Client(), srv.URL+"/"+node+"/metrics")
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, rs...)
	}
	// Node c: the 1.7 is named and left out, the other GPU is kept.
	rs, err := gpu.Scrape(ctx, srv.Client(), srv.URL+"/c/metrics")
	if err == nil || !strings.Contains(err.Error(), `DCGM_FI_PROF_GR_ENGINE_ACTIVE{gpu="0",UUID="GPU-c0c00000-0000-4000-8000-000000000000",GPU_I_ID=""}: 1.7 is not within 0..1`) {
		t.Fatalf("node c: err %v", err)
	}
	if len(rs) != 1 || rs[0].Pod != "fine" {
		t.Fatalf("node c readings %+v", rs)
	}
	all = append(all, rs...)
	// gpu-a: GPU 0 has both metrics: the profiling one wins (0.8, not
	// 95%). GPU 1 is MIG: three instances, one idle without a pod.
	// gpu-b: profiling off, 60% from DCGM_FI_DEV_GPU_UTIL, no pod named.
	if len(all) != 6 {
		t.Fatalf("%d readings: %+v", len(all), all)
	}
	for _, r := range all {
		if r.Pod == "train-0" && (r.Metric != gpu.MetricEngineActive || !near(r.Activity, 0.8)) {
			t.Errorf("train-0: %+v", r)
		}
		if r.Node == "gpu-b" && (r.Metric != gpu.MetricUtil || !near(r.Activity, 0.6)) {
			t.Errorf("gpu-b: %+v", r)
		}
	}
	shared := []gpu.SharedHolding{
		{Pod: gpu.PodKey{Namespace: "x", Pod: "a"}, Node: "gpu-b", Share: gpu.Fraction{Num: 1, Den: 4}},
		{Pod: gpu.PodKey{Namespace: "x", Pod: "b"}, Node: "gpu-b", Share: gpu.Fraction{Num: 2, Den: 4}},
	}
	u, err := gpu.Attribute(all, shared)
	if err != nil {
		t.Fatal(err)
	}
	want := map[gpu.PodKey]float64{
		{Namespace: "ml", Pod: "train-0"}: 0.8,         // whole GPU, 80% busy
		{Namespace: "ml", Pod: "infer-1"}: 0.5 * 3 / 7, // 3g.40gb of an H100 (3/7), 50% busy
		{Namespace: "web", Pod: "small"}:  1.0 / 7,     // 1g.10gb (1/7), always busy
		{Namespace: "x", Pod: "a"}:        0.6 * 1 / 3, // 60% of the A10, 1 of the 3 replicas held
		{Namespace: "x", Pod: "b"}:        0.6 * 2 / 3, // 2 of the 3
		{Namespace: "ops", Pod: "fine"}:   0.25,        // the A100's good GPU
	}
	if len(u.Pods) != len(want) {
		t.Fatalf("pods %v, want %v", u.Pods, want)
	}
	for k, w := range want {
		if !near(u.Pods[k], w) {
			t.Errorf("%s: %g GPUs, want %g", k, u.Pods[k], w)
		}
	}
	// The idle MIG instance (0% of 3/7) is all that no pod carries.
	if u.Unattributed != 0 {
		t.Errorf("unattributed %g, want 0", u.Unattributed)
	}
	// Without holders, gpu-b's activity is nobody's: reported, not lost.
	u, err = gpu.Attribute(all, nil)
	if err != nil || !near(u.Unattributed, 0.6) {
		t.Errorf("unattributed %g (%v), want 0.6", u.Unattributed, err)
	}
}

func TestScrapeFailures(t *testing.T) {
	srv := dcgmServer(t)
	ctx := context.Background()
	if _, err := gpu.Scrape(ctx, srv.Client(), srv.URL+"/down/metrics"); err == nil || !strings.Contains(err.Error(), "/down/metrics: 503 Service Unavailable") {
		t.Errorf("down: %v", err)
	}
	if _, err := gpu.Scrape(ctx, srv.Client(), srv.URL+"/garbage/metrics"); err == nil || !strings.Contains(err.Error(), "parse DCGM exposition") {
		t.Errorf("garbage: %v", err)
	}
	if _, err := gpu.Scrape(ctx, srv.Client(), "http://127.0.0.1:1/metrics"); err == nil || !strings.Contains(err.Error(), "scrape DCGM exporter http://127.0.0.1:1/metrics") {
		t.Errorf("refused: %v", err)
	}
}

func TestDeviceShare(t *testing.T) {
	dev := func(driver string, attrs map[string]string) gpu.DRADevice {
		return gpu.DRADevice{Driver: driver, Pool: "node-1", Name: "gpu-0", Attributes: attrs}
	}
	tests := []struct {
		d     gpu.DRADevice
		want  gpu.Fraction
		model string
		ok    bool
		err   string
	}{
		{dev("gpu.nvidia.com", map[string]string{"type": "gpu", "productName": "NVIDIA H100 80GB HBM3"}), gpu.Whole, "NVIDIA H100 80GB HBM3", true, ""},
		{dev("gpu.nvidia.com", map[string]string{"type": "mig", "productName": "NVIDIA H100 80GB HBM3", "profile": "2g.20gb"}), gpu.Fraction{Num: 2, Den: 7}, "NVIDIA H100 80GB HBM3", true, ""},
		{dev("gpu.nvidia.com", map[string]string{"type": "mig", "productName": "NVIDIA A30", "profile": "2g.12gb"}), gpu.Fraction{Num: 1, Den: 2}, "NVIDIA A30", true, ""},
		{dev("gpu.nvidia.com", map[string]string{"type": "imex-channel"}), gpu.Fraction{}, "", false, ""},
		{dev("nic.example.com", map[string]string{"type": "gpu"}), gpu.Fraction{}, "", false, ""},
		{dev("gpu.nvidia.com", map[string]string{"type": "mig", "profile": "big"}), gpu.Fraction{}, "", false, `DRA device gpu.nvidia.com/node-1/gpu-0: MIG profile "big"`},
		{dev("gpu.nvidia.com", map[string]string{}), gpu.Fraction{}, "", false, `no "type" attribute`},
	}
	for i, tt := range tests {
		f, model, ok, err := gpu.DeviceShare(tt.d)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%d: err %v, want %q", i, err, tt.err)
			}
			continue
		}
		if err != nil || f != tt.want || model != tt.model || ok != tt.ok {
			t.Errorf("%d: %v %q %v %v, want %v %q %v", i, f, model, ok, err, tt.want, tt.model, tt.ok)
		}
	}
}
