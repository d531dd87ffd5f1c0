package httpguard_test

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"go.uber.org/goleak"

	"github.com/alauda/costmeter/internal/auth"
	"github.com/alauda/costmeter/internal/config"
	"github.com/alauda/costmeter/internal/httpguard"
	"github.com/alauda/costmeter/internal/testenv"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.TestMode)
	goleak.VerifyTestMain(m)
}

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type status struct {
	Kind, APIVersion, Status, Message, Reason string
	Code                                      int
}

func do(t *testing.T, h http.Handler, path, principal, ip string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.RemoteAddr = ip + ":1234"
	if principal != "" {
		req = req.WithContext(auth.WithPrincipal(req.Context(), &auth.Principal{Name: principal}))
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func checkStatus(t *testing.T, rec *httptest.ResponseRecorder, code int, reason string) {
	t.Helper()
	if rec.Code != code {
		t.Fatalf("code %d, want %d: %s", rec.Code, code, rec.Body)
	}
	var st status
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil || st.Kind != "Status" || st.APIVersion != "v1" || st.Status != "Failure" || st.Reason != reason || st.Code != code || st.Message == "" {
		t.Fatalf("body is not a %s Status: %s", reason, rec.Body)
	}
}

func TestRateLimit(t *testing.T) {
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	cfg := httpguard.Config{Rate: 2, Burst: 3, MaxClients: 100}
	g, err := httpguard.New(cfg, httpguard.WithClock(clk.now))
	if err != nil {
		t.Fatal(err)
	}
	r := gin.New()
	r.GET("/x", g.RateLimit(), func(c *gin.Context) { c.String(200, "ok") })

	for i := range 3 {
		if rec := do(t, r, "/x", "alice", "10.0.0.1"); rec.Code != 200 {
			t.Fatalf("burst request %d: %d", i, rec.Code)
		}
	}
	rec := do(t, r, "/x", "alice", "10.0.0.1")
	checkStatus(t, rec, http.StatusTooManyRequests, "TooManyRequests")
	if got := rec.Header().Get("Retry-After"); got != "1" {
		t.Fatalf("Retry-After = %q, want 1", got)
	}
	// Another principal from the same address has its own bucket; so has
	// an anonymous caller, by address.
	if rec := do(t, r, "/x", "bob", "10.0.0.1"); rec.Code != 200 {
		t.Fatalf("bob: %d", rec.Code)
	}
	if rec := do(t, r, "/x", "", "10.0.0.1"); rec.Code != 200 {
		t.Fatalf("anonymous: %d", rec.Code)
	}
	// A rejected request spends nothing: half a second later one token is
	// back, and exactly one.
	clk.add(500 * time.Millisecond)
	if rec := do(t, r, "/x", "alice", "10.0.0.1"); rec.Code != 200 {
		t.Fatalf("after refill: %d", rec.Code)
	}
	if rec := do(t, r, "/x", "alice", "10.0.0.1"); rec.Code != 429 {
		t.Fatalf("second after refill: %d", rec.Code)
	}
}

func TestRateLimitForgetsClients(t *testing.T) {
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	g, err := httpguard.New(httpguard.Config{Rate: 1, Burst: 1, MaxClients: 2}, httpguard.WithClock(clk.now))
	if err != nil {
		t.Fatal(err)
	}
	r := gin.New()
	r.GET("/x", g.RateLimit(), func(c *gin.Context) { c.String(200, "ok") })
	for _, p := range []string{"a", "b", "c", "d"} {
		do(t, r, "/x", p, "10.0.0.1")
		clk.add(100 * time.Millisecond)
	}
	if n := g.Clients(); n > 2 {
		t.Fatalf("%d clients remembered, want at most 2", n)
	}
	// d was just seen: its bucket is still empty.
	if rec := do(t, r, "/x", "d", "10.0.0.1"); rec.Code != 429 {
		t.Fatalf("d: %d, want 429", rec.Code)
	}
}

func TestTimeout(t *testing.T) {
	g, err := httpguard.New(httpguard.Config{Timeout: 50 * time.Millisecond},
		httpguard.WithStreaming(func(r *http.Request) bool { return r.URL.Query().Get("watch") == "true" }))
	if err != nil {
		t.Fatal(err)
	}
	r := gin.New()
	r.Use(g.Timeout())
	r.GET("/slow", func(c *gin.Context) {
		if _, ok := c.Request.Context().Deadline(); !ok {
			c.String(200, "no deadline")
			return
		}
		<-c.Request.Context().Done() // a query that gives up at the deadline
	})
	r.GET("/fast", func(c *gin.Context) { c.String(200, "ok") })
	checkStatus(t, do(t, r, "/slow", "", "10.0.0.1"), http.StatusGatewayTimeout, "Timeout")
	if rec := do(t, r, "/fast", "", "10.0.0.1"); rec.Code != 200 {
		t.Fatalf("fast: %d", rec.Code)
	}
	if rec := do(t, r, "/slow?watch=true", "", "10.0.0.1"); rec.Code != 200 || rec.Body.String() != "no deadline" {
		t.Fatalf("watch: %d %s", rec.Code, rec.Body)
	}
}

func TestHeavyCap(t *testing.T) {
	g, err := httpguard.New(httpguard.Config{MaxHeavy: 2, HeavyWait: 30 * time.Millisecond},
		httpguard.WithStreaming(func(r *http.Request) bool { return r.URL.Query().Has("watch") }))
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	r := gin.New()
	r.GET("/usage", g.Heavy(), func(c *gin.Context) {
		if c.Query("block") == "1" {
			<-release
		}
		c.String(200, "ok")
	})
	srv := httptest.NewServer(r)
	defer srv.Close()

	var wg sync.WaitGroup
	codes := make(chan int, 2)
	for range 2 {
		wg.Go(func() {
			resp, err := http.Get(srv.URL + "/usage?block=1")
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		})
	}
	testenv.Eventually(t, 5*time.Second, "two heavy queries running", func() (bool, string) {
		return g.Running() == 2, fmt.Sprintf("running: %d", g.Running())
	})
	resp, err := http.Get(srv.URL + "/usage")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var st status
	_ = json.Unmarshal(body, &st)
	if resp.StatusCode != 429 || st.Reason != "TooManyRequests" || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("third query: %d %s", resp.StatusCode, body)
	}
	// A stream takes no slot.
	resp, err = http.Get(srv.URL + "/usage?watch=true")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("stream while full: %d", resp.StatusCode)
	}
	close(release)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Fatalf("blocked query: %d", c)
		}
	}
	if g.Running() != 0 {
		t.Fatalf("%d slots still held", g.Running())
	}
	resp, err = http.Get(srv.URL + "/usage")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("after release: %d", resp.StatusCode)
	}
	srv.CloseClientConnections()
	http.DefaultClient.CloseIdleConnections()
}

func TestProtect(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	content := "tokens:\n- name: admin\n  sha256: " + auth.HashToken("s3cret-token") + "\n  scope: platform\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	tf, err := auth.NewTokenFile(path, 0, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	g, err := httpguard.New(httpguard.Config{Rate: 1, Burst: 2, MaxClients: 10, Timeout: time.Second, MaxHeavy: 1, HeavyWait: time.Millisecond}, httpguard.WithClock(clk.now))
	if err != nil {
		t.Fatal(err)
	}
	r := gin.New()
	r.GET("/usage", g.Protect(auth.Middleware(tf, slog.New(slog.NewTextHandler(io.Discard, nil)))), func(c *gin.Context) {
		p, ok := auth.FromContext(c.Request.Context())
		_, hasDeadline := c.Request.Context().Deadline()
		if !ok || !hasDeadline || g.Running() != 1 {
			c.String(500, "principal %v deadline %v running %d", ok, hasDeadline, g.Running())
			return
		}
		c.String(200, p.Name)
	})
	call := func(token string, ip ...string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, "/usage", nil)
		if len(ip) > 0 {
			req.RemoteAddr = ip[0] + ":5555"
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, req)
		return rec
	}
	// Failures are limited per address: two (the burst), then 429 even
	// for a good token from there; other addresses are not affected.
	checkStatus(t, call("", "10.9.9.9"), 401, "Unauthorized")
	checkStatus(t, call("wrong", "10.9.9.9"), 401, "Unauthorized")
	rec := call("s3cret-token", "10.9.9.9")
	checkStatus(t, rec, 429, "TooManyRequests")
	if rec.Header().Get("Retry-After") != "1" {
		t.Fatalf("Retry-After %q", rec.Header().Get("Retry-After"))
	}
	clk.add(time.Second)
	checkStatus(t, call("wrong", "10.9.9.9"), 401, "Unauthorized")
	checkStatus(t, call("wrong", "10.9.9.9"), 429, "TooManyRequests")
	for i := range 2 {
		if rec := call("s3cret-token"); rec.Code != 200 || rec.Body.String() != "admin" {
			t.Fatalf("request %d: %d %s", i, rec.Code, rec.Body)
		}
	}
	checkStatus(t, call("s3cret-token"), 429, "TooManyRequests")
	if g.Running() != 0 {
		t.Fatalf("slot leaked: %d", g.Running())
	}
}

func TestConfig(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
		check   func(httpguard.Config) bool
	}{
		{name: "defaults", check: func(c httpguard.Config) bool { return c == httpguard.DefaultConfig() }},
		{name: "flags", args: []string{"--rate-limit=5.5", "--rate-burst=7", "--request-timeout=3s", "--max-heavy-queries=2", "--heavy-query-wait=0s"},
			check: func(c httpguard.Config) bool {
				return c.Rate == 5.5 && c.Burst == 7 && c.Timeout == 3*time.Second && c.MaxHeavy == 2 && c.HeavyWait == 0
			}},
		{name: "env", env: map[string]string{"API_RATE_LIMIT": "0", "API_MAX_HEAVY_QUERIES": "0"}, check: func(c httpguard.Config) bool { return c.Rate == 0 && c.MaxHeavy == 0 }},
		{name: "bad env", env: map[string]string{"API_RATE_LIMIT": "fast"}, wantErr: "API_RATE_LIMIT"},
		{name: "negative", args: []string{"--rate-limit=-1", "--max-heavy-queries=-1", "--request-timeout=-1s"}, wantErr: "--rate-limit"},
		{name: "zero burst", args: []string{"--rate-burst=0"}, wantErr: "--rate-burst"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			f := config.NewFlags(fs, func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
			cfg := httpguard.DefaultConfig()
			cfg.RegisterFlags(f)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			err := f.Err()
			if err == nil {
				err = cfg.Validate()
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(cfg) {
				t.Fatalf("config %+v", cfg)
			}
		})
	}
}
