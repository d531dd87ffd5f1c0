package testenv

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// PrometheusInstall is what to run when prometheus or promtool is missing.
const PrometheusInstall = "install it (Debian/Ubuntu: apt-get install prometheus, which brings promtool too)"

// Prometheus is a prometheus server child serving history a test wrote.
type Prometheus struct {
	dir  string
	port int
	cmd  *exec.Cmd
}

// StartPrometheus turns openMetrics (an OpenMetrics text file ending in
// "# EOF") into TSDB blocks with promtool and serves them with a
// prometheus child on a free loopback port, without any scrape job. It
// fails the test, saying how to install them, when prometheus or promtool
// is missing.
func StartPrometheus(t testing.TB, openMetrics []byte) *Prometheus {
	t.Helper()
	for _, bin := range []string{"prometheus", "promtool"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found in PATH: %s", bin, PrometheusInstall)
		}
	}
	p := &Prometheus{dir: t.TempDir(), port: FreePort(t)}
	data := filepath.Join(p.dir, "data")
	src := filepath.Join(p.dir, "history.om")
	cfg := filepath.Join(p.dir, "prometheus.yml")
	if err := os.WriteFile(src, openMetrics, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte("global:\n  scrape_interval: 1m\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("promtool", "tsdb", "create-blocks-from", "openmetrics", "--quiet", "--max-block-duration=8760h", src, data).CombinedOutput(); err != nil {
		t.Fatalf("promtool tsdb create-blocks-from openmetrics: %v\n%s", err, out)
	}
	p.cmd = exec.Command("prometheus", "--config.file", cfg, "--storage.tsdb.path", data,
		"--storage.tsdb.retention.time", "100y", "--web.listen-address", "127.0.0.1:"+strconv.Itoa(p.port))
	logf, err := os.Create(filepath.Join(p.dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	t.Cleanup(p.Stop)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.URL()+"/-/ready", nil)
		resp, err := http.DefaultClient.Do(req)
		cancel()
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus on port %d not ready: %s", p.port, p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// URL is the server's base URL.
func (p *Prometheus) URL() string { return "http://127.0.0.1:" + strconv.Itoa(p.port) }

// Log returns the server's log so far.
func (p *Prometheus) Log() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "prometheus.log"))
	return string(b)
}

// Stop ends the server (idempotent).
func (p *Prometheus) Stop() {
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-done
		}
		p.cmd = nil
	}
}
