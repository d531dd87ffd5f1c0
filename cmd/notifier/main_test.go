package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/alauda/costmeter/internal/testenv"
)

// TestMain lets the test binary run the notifier itself as a child
// (testenv.ChildCommand), so that a test can signal it.
func TestMain(m *testing.M) {
	testenv.RunChild(map[string]func([]string) int{"notifier": func(args []string) int { return run(args, os.Stderr) }})
	os.Exit(m.Run())
}

var secret = "whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

func write(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestInvalidConfiguration: every bad flag and every broken rule is named
// (a rule by its index, name and field), with exit status 2, before
// anything connects.
func TestInvalidConfiguration(t *testing.T) {
	dir := t.TempDir()
	sec := write(t, dir, "secret", secret)
	broken := write(t, dir, "broken.yaml", fmt.Sprintf(`rules:
- {name: ok, kind: project, item: Cpu, method: Usage, period: day, thresholds: [1], webhook: "https://h/x", secretFile: %s}
- {name: bad, kind: pod, item: Cpu, method: Usage, period: fortnight, thresholds: [1], webhook: "https://h/x", secretFile: %s}
- {name: ok, kind: cluster, item: Cpu, method: Usage, period: day, budget: 10, webhook: "https://h/x", secretFile: /nope}
`, sec, sec))
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"no rules file", nil, []string{"--rules-file: required"}},
		{"missing rules file", []string{"--rules-file", filepath.Join(dir, "absent.yaml")}, []string{"read rules file", "absent.yaml"}},
		{"broken rules", []string{"--rules-file", broken}, []string{
			`rule 2 ("bad"): kind: "pod" is not project, namespace, cluster or group`,
			`rule 2 ("bad"): period: "fortnight" is not day, week or month`,
			`rule 3 ("ok"): percent: required with budget`,
			`rule 3 ("ok"): secretFile: read /nope`,
			`rule 3 ("ok"): name: already used by rule 1`,
		}},
		{"bad flags", []string{"--rules-file", broken, "--webhook-max-age", "48h", "--notifier-consumer", "Bad Name", "--redis-url", "http://x"},
			[]string{"--webhook-max-age: 48h0m0s is not within (0, 24h]", "--notifier-consumer", "--redis-url"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			if code := run(tt.args, &stderr); code != 2 {
				t.Fatalf("exit %d, want 2:\n%s", code, stderr.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
		})
	}
}

// TestRunsAndStops: the binary becomes ready against real NATS and Redis,
// serves /metrics, warns about a plain-http webhook to a remote host,
// and stops cleanly on SIGTERM.
func TestRunsAndStops(t *testing.T) {
	n := testenv.StartNATS(t)
	r := testenv.StartRedis(t)
	dir := t.TempDir()
	sec := write(t, dir, "secret", secret)
	rules := write(t, dir, "rules.yaml", fmt.Sprintf(`rules:
- {name: a, kind: project, item: Cpu, method: Usage, period: day, thresholds: [1], webhook: "http://hooks.example.internal/x", secretFile: %s}
`, sec))
	port := testenv.FreePort(t)
	args := []string{"--nats-url", n.URL(), "--redis-url", r.URL(), "--rules-file", rules, "--listen", "127.0.0.1:" + strconv.Itoa(port)}
	cmd := testenv.ChildCommand("notifier", args...)
	var out testenv.LockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	testenv.Eventually(t, 30*time.Second, "notifier ready", func() (bool, string) {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200, fmt.Sprintf("%d\n%s", resp.StatusCode, out.String())
	})
	resp, err := http.Get(base + "/metrics")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/metrics: %v %v", resp, err)
	}
	resp.Body.Close()
	if !strings.Contains(out.String(), "plain http") {
		t.Errorf("no warning about the plain-http webhook:\n%s", out.String())
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "stopped") {
		t.Errorf("no clean stop:\n%s", out.String())
	}
}
