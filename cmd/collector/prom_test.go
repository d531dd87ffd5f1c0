package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/alauda/costmeter/internal/testenv"
)

// smallHistory is one day of one namespace with one pod, scraped every
// minute, as kube-state-metrics and cAdvisor export it.
func smallHistory(withCAdvisor bool) []byte {
	var b bytes.Buffer
	t0 := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	family := func(name string, f func(m int) (string, float64)) {
		fmt.Fprintf(&b, "# TYPE %s gauge\n", name)
		for m := 0; m <= 1440; m++ {
			labels, v := f(m)
			fmt.Fprintf(&b, "%s{%s} %g %d\n", name, labels, v, t0.Add(time.Duration(m)*time.Minute).Unix())
		}
	}
	pod := `namespace="shop",pod="web"`
	family("kube_namespace_labels", func(int) (string, float64) { return `namespace="shop",label_cpaas_io_project="retail"`, 1 })
	family("kube_pod_status_phase", func(int) (string, float64) { return pod + `,phase="Running"`, 1 })
	family("kube_pod_container_resource_requests", func(int) (string, float64) { return pod + `,container="app",resource="cpu",unit="core"`, 0.5 })
	if withCAdvisor {
		family("container_cpu_usage_seconds_total", func(m int) (string, float64) { return pod + `,container="app"`, float64(m) * 15 })
		family("container_memory_working_set_bytes", func(int) (string, float64) { return pod + `,container="app"`, 1 << 30 })
	}
	b.WriteString("# EOF\n")
	return b.Bytes()
}

// TestPrometheusBackfill: the collector backfills a day from a real
// Prometheus, prints its progress and exits 0; the same backfill again adds
// no message (content-hash ids); --fill-gaps reads the store; a Prometheus
// without cAdvisor's series is refused with status 2 before anything is
// sent.
func TestPrometheusBackfill(t *testing.T) {
	p := testenv.StartPrometheus(t, smallHistory(true))
	n := testenv.StartNATS(t)
	r := testenv.StartRedis(t)
	args := []string{"--source", "prometheus", "--prometheus-url", p.URL(), "--cluster", "east",
		"--from", "2025-06-01", "--to", "2025-06-01", "--interval", "10m", "--scrape-interval", "1m", "--nats-url", n.URL()}
	var msgs uint64
	for round, extra := range [][]string{nil, nil, {"--fill-gaps", "--redis-url", r.URL()}} {
		var stderr bytes.Buffer
		if code := run(append(append([]string{}, args...), extra...), nil, &stderr); code != 0 {
			t.Fatalf("round %d: exit %d:\n%s", round, code, stderr.String())
		}
		for _, want := range []string{"2025-06-01: 1 of 1 days done, 144 samples sent (144 this day)", "samples/s", "backfilled 1 days: 144 samples sent, 0 windows skipped as already covered"} {
			if !strings.Contains(stderr.String(), want) {
				t.Fatalf("round %d: stderr lacks %q:\n%s", round, want, stderr.String())
			}
		}
		got := streamMessages(t, n.URL())
		if round > 0 && got != msgs {
			t.Fatalf("round %d: %d messages in the stream, want still %d", round, got, msgs)
		}
		msgs = got
	}
	if msgs == 0 {
		t.Fatal("nothing published")
	}

	bare := testenv.StartPrometheus(t, smallHistory(false))
	var stderr bytes.Buffer
	args[3] = bare.URL()
	if code := run(args, nil, &stderr); code != 2 {
		t.Fatalf("without cAdvisor: exit %d, want 2:\n%s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "prometheus has no container_cpu_usage_seconds_total{}") || !strings.Contains(stderr.String(), "exported by cAdvisor") {
		t.Fatalf("stderr does not name the missing series:\n%s", stderr.String())
	}
}
