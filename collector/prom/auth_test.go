package prom_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/alauda/costmeter/collector/prom"
	"github.com/alauda/costmeter/internal/testenv"
)

// testBearerToken: behind a proxy that wants a bearer token, the token
// file's content is sent with every query, read again after it changed.
func testBearerToken(t *testing.T, p *testenv.Prometheus) {
	target, _ := url.Parse(p.URL())
	proxy := httputil.NewSingleHostReverseProxy(target)
	want := "Bearer first"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != want {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer srv.Close()
	file := filepath.Join(t.TempDir(), "token")
	write := func(s string) {
		if err := os.WriteFile(file, []byte(s+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("first")
	cfg := config(srv.URL)
	cfg.BearerTokenFile = file
	ctx := context.Background()
	if err := newSource(t, cfg).Check(ctx); err != nil {
		t.Fatalf("with the token: %v", err)
	}
	want = "Bearer second"
	if err := newSource(t, cfg).Check(ctx); err == nil || !errors.Is(err, prom.ErrConfig) {
		t.Fatalf("with a stale token: %v, want ErrConfig", err)
	}
	write("second")
	if err := newSource(t, cfg).Check(ctx); err != nil {
		t.Fatalf("after the token file changed: %v", err)
	}
	cfg.BearerTokenFile = filepath.Join(t.TempDir(), "missing")
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--prometheus-bearer-token-file") {
		t.Fatalf("missing token file: %v", err)
	}
}
