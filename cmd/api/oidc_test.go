package main

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/alauda/costmeter/internal/testenv"
)

// TestOIDCRoutesScopesTokens runs the binary with --auth oidc against an
// issuer served by the test and checks every route × scope × token state.
func TestOIDCRoutesScopesTokens(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	iss := httptest.NewServer(mux)
	defer iss.Close()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": iss.URL, "jwks_uri": iss.URL + "/keys",
			"authorization_endpoint": iss.URL + "/auth", "id_token_signing_alg_values_supported": []string{"RS256"}})
	})
	mux.HandleFunc("/keys", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k", Algorithm: "RS256", Use: "sig"}}})
	})
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k"))
	if err != nil {
		t.Fatal(err)
	}
	type claims struct {
		jwt.Claims
		Projects []string `json:"projects,omitempty"`
		Groups   []string `json:"groups,omitempty"`
	}
	mint := func(aud string, exp time.Duration, projects, groups []string) string {
		raw, err := jwt.Signed(signer).Claims(claims{Claims: jwt.Claims{Issuer: iss.URL, Subject: "u", Audience: jwt.Audience{aud},
			Expiry: jwt.NewNumericDate(time.Now().Add(exp))}, Projects: projects, Groups: groups}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	admin := mint("costmeter", time.Hour, nil, []string{"cost-admins"})
	payments := mint("costmeter", time.Hour, []string{"payments"}, nil)
	nobody := mint("costmeter", time.Hour, nil, []string{"dev"})
	expired := mint("costmeter", -time.Minute, nil, []string{"cost-admins"})
	wrongAud := mint("grafana", time.Hour, nil, []string{"cost-admins"})
	tampered := admin[:len(admin)-4] + "AAAA"

	r := testenv.StartRedis(t)
	addr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	var logs testenv.LockedBuffer
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"--redis-url", r.URL(), "--listen", addr, "--auth", "oidc", "--oidc-issuer", iss.URL,
			"--oidc-audience", "costmeter", "--oidc-platform-group", "cost-admins", "--rate-limit", "0"}, &logs)
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

	const q = "?start=2025-06-01&end=2025-06-30"
	routes := map[string]string{
		"platform": "/platform/cost.alauda.io/v1beta1/costs/usage" + q,
		"payments": "/platform/cost.alauda.io/v1beta1/projects/payments/costs/usage" + q,
		"billing":  "/platform/cost.alauda.io/v1beta1/projects/billing/costs/usage" + q,
		"csv":      "/platform/cost.alauda.io/v1beta1/projects/billing/costs/usage" + q + "&format=csv",
	}
	tests := []struct {
		name  string
		token string
		want  map[string]int
	}{
		{"platform group", admin, map[string]int{"platform": 200, "payments": 200, "billing": 200, "csv": 200}},
		{"project claim", payments, map[string]int{"platform": 403, "payments": 200, "billing": 403, "csv": 403}},
		{"no scope", nobody, map[string]int{"platform": 403, "payments": 403, "billing": 403, "csv": 403}},
		{"expired", expired, map[string]int{"platform": 401, "payments": 401, "billing": 401, "csv": 401}},
		{"wrong audience", wrongAud, map[string]int{"platform": 401, "payments": 401, "billing": 401, "csv": 401}},
		{"tampered", tampered, map[string]int{"platform": 401, "payments": 401, "billing": 401, "csv": 401}},
		{"missing", "", map[string]int{"platform": 401, "payments": 401, "billing": 401, "csv": 401}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for route, want := range tt.want {
				req, _ := http.NewRequest(http.MethodGet, base+routes[route], nil)
				if tt.token != "" {
					req.Header.Set("Authorization", "Bearer "+tt.token)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				var st struct {
					Kind   string `json:"kind"`
					Reason string `json:"reason"`
					Code   int    `json:"code"`
				}
				_ = json.NewDecoder(resp.Body).Decode(&st)
				resp.Body.Close()
				if resp.StatusCode != want {
					t.Fatalf("%s: %d, want %d", route, resp.StatusCode, want)
				}
				if want >= 400 && (st.Kind != "Status" || st.Code != want) {
					t.Fatalf("%s: body is not a %d Status: %+v", route, want, st)
				}
				if want == 401 && resp.Header.Get("WWW-Authenticate") == "" {
					t.Fatalf("%s: 401 without WWW-Authenticate", route)
				}
			}
		})
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
