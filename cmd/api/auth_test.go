package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/alauda/costmeter/internal/auth"
	"github.com/alauda/costmeter/internal/testenv"
)

func TestAuthMustBeChosen(t *testing.T) {
	var stderr bytes.Buffer
	if code := run([]string{"--redis-url", "redis://127.0.0.1:1/0"}, &stderr); code != 2 || !strings.Contains(stderr.String(), "--auth: required") {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	stderr.Reset()
	if code := run([]string{"--auth", "token"}, &stderr); code != 2 || !strings.Contains(stderr.String(), "--auth-token-file") {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
}

// TestTokenAuthAndRateLimit runs the binary's run with --auth token and a
// small rate limit against real Redis, then stops it with SIGINT.
func TestTokenAuthAndRateLimit(t *testing.T) {
	r := testenv.StartRedis(t)
	tokens := filepath.Join(t.TempDir(), "tokens.yaml")
	content := fmt.Sprintf("tokens:\n- name: admin\n  sha256: %q\n  scope: platform\n- name: pay\n  sha256: %q\n  projects: [payments]\n",
		auth.HashToken("admin-token-1"), auth.HashToken("pay-token-1"))
	if err := os.WriteFile(tokens, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	var logs testenv.LockedBuffer
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"--redis-url", r.URL(), "--listen", addr, "--auth", "token", "--auth-token-file", tokens,
			"--rate-limit", "0.001", "--rate-burst", "3"}, &logs)
	}()
	base := "http://" + addr
	testenv.Eventually(t, 20*time.Second, "api ready", func() (bool, string) {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200, resp.Status
	})
	get := func(path, token string) (int, map[string]any, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body, resp.Header
	}
	const q = "?start=2025-06-01&end=2025-06-30"
	platform := "/platform/cost.alauda.io/v1beta1/costs/usage" + q
	payments := "/platform/cost.alauda.io/v1beta1/projects/payments/costs/usage" + q
	billing := "/platform/cost.alauda.io/v1beta1/projects/billing/costs/usage" + q

	if code, body, h := get(platform, ""); code != 401 || body["reason"] != "Unauthorized" || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("no token: %d %v", code, body)
	}
	if code, body, _ := get(platform, "nope"); code != 401 || body["kind"] != "Status" {
		t.Fatalf("bad token: %d %v", code, body)
	}
	if code, body, _ := get(platform, "admin-token-1"); code != 200 {
		t.Fatalf("admin: %d %v", code, body)
	}
	if code, body, _ := get(payments, "pay-token-1"); code != 200 {
		t.Fatalf("pay on its project: %d %v", code, body)
	}
	for _, p := range []string{platform, billing} {
		if code, body, _ := get(p, "pay-token-1"); code != 403 || body["reason"] != "Forbidden" {
			t.Fatalf("pay on %s: %d %v", p, code, body)
		}
	}
	// pay spent its burst of 3: the next is refused; admin has its own.
	if code, body, h := get(payments, "pay-token-1"); code != 429 || body["reason"] != "TooManyRequests" || h.Get("Retry-After") == "" {
		t.Fatalf("over the limit: %d %v", code, body)
	}
	if code, _, _ := get("/healthz", ""); code != 200 {
		t.Fatalf("/healthz must stay open: %d", code)
	}
	if strings.Contains(logs.String(), "admin-token-1") || strings.Contains(logs.String(), "pay-token-1") {
		t.Fatalf("a token reached the log")
	}

	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d: %s", code, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("api did not stop on SIGINT")
	}
}

func TestAuthNoneWarns(t *testing.T) {
	r := testenv.StartRedis(t)
	addr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	var logs testenv.LockedBuffer
	done := make(chan int, 1)
	go func() { done <- run([]string{"--redis-url", r.URL(), "--listen", addr, "--auth", "none"}, &logs) }()
	testenv.Eventually(t, 20*time.Second, "api ready", func() (bool, string) {
		resp, err := http.Get("http://" + addr + "/platform/cost.alauda.io/v1beta1/costs/usage?start=2025-06-01&end=2025-06-02")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200, resp.Status
	})
	if !strings.Contains(logs.String(), "authentication is off") {
		t.Fatalf("no warning in %s", logs.String())
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("api did not stop on SIGINT")
	}
}
