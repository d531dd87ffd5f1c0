package auth_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"go.uber.org/goleak"

	"github.com/alauda/costmeter/internal/auth"
	"github.com/alauda/costmeter/internal/config"
	"github.com/alauda/costmeter/internal/testenv"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.TestMode)
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// Tokens of the tests; the file holds only their hashes.
const (
	adminToken    = "adm-2f6c1b7e0a9d4c3e8b5a7f1d2c4e6a80"
	paymentsToken = "pay-7d1e3c5a9b2f4e6d8c0a1b3d5f7e9c21"
	bothToken     = "two-0c2e4a6b8d1f3e5c7a9b0d2f4e6c8a13"
)

func tokenFile(entries ...string) string {
	return "tokens:\n" + strings.Join(entries, "")
}

func entry(name, token, scope string) string {
	s := "- name: " + name + "\n  sha256: " + auth.HashToken(token) + "\n"
	if scope == "platform" {
		return s + "  scope: platform\n"
	}
	return s + "  projects: [" + scope + "]\n"
}

// writeFile writes then renames, as a Secret volume update swaps the file.
func writeFile(t *testing.T, path, content string) { testenv.ReplaceFile(t, path, content) }

func TestParseTokenFile(t *testing.T) {
	h := auth.HashToken("x")
	tests := []struct {
		name    string
		content string
		wantErr string
		want    int
	}{
		{name: "platform and projects", content: tokenFile(entry("a", "t1", "platform"), entry("b", "t2", "payments, billing")), want: 2},
		{name: "empty list", content: "tokens: []\n", want: 0},
		{name: "unknown field", content: "tokens:\n- name: a\n  sha256: " + h + "\n  scope: platform\n  token: x\n", wantErr: "unknown field"},
		{name: "plain token instead of hash", content: "tokens:\n- name: a\n  sha256: secret\n  scope: platform\n", wantErr: "not 64 lower-case hex"},
		{name: "upper-case hash", content: "tokens:\n- name: a\n  sha256: " + strings.ToUpper(h) + "\n  scope: platform\n", wantErr: "not 64 lower-case hex"},
		{name: "duplicate hash", content: tokenFile(entry("a", "t1", "platform"), entry("b", "t1", "p")), wantErr: "appears twice"},
		{name: "both scopes", content: "tokens:\n- name: a\n  sha256: " + h + "\n  scope: platform\n  projects: [p]\n", wantErr: "either scope"},
		{name: "no scope", content: "tokens:\n- name: a\n  sha256: " + h + "\n", wantErr: "either scope"},
		{name: "other scope", content: "tokens:\n- name: a\n  sha256: " + h + "\n  scope: admin\n", wantErr: `scope "admin"`},
		{name: "bad project", content: tokenFile(entry("a", "t1", "Pay_ments")), wantErr: "not a Kubernetes name"},
		{name: "no name", content: "tokens:\n- sha256: " + h + "\n  scope: platform\n", wantErr: "name is required"},
		{name: "not yaml", content: "tokens: [", wantErr: "decode token file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := auth.ParseTokenFile([]byte(tt.content))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tt.want {
				t.Fatalf("%d tokens, want %d", len(got), tt.want)
			}
		})
	}
}

func TestTokenFileAuthenticateAndReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	writeFile(t, path, tokenFile(entry("admin", adminToken, "platform"), entry("payments-team", paymentsToken, "payments")))
	tf, err := auth.NewTokenFile(path, 20*time.Millisecond, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()

	p, err := tf.Authenticate(ctx, adminToken)
	if err != nil || p.Name != "admin" || !p.CanSeePlatform() {
		t.Fatalf("admin: %+v, %v", p, err)
	}
	p, err = tf.Authenticate(ctx, paymentsToken)
	if err != nil || p.CanSeePlatform() || !p.CanSeeProject("payments") || p.CanSeeProject("billing") {
		t.Fatalf("payments: %+v, %v", p, err)
	}
	for _, bad := range []string{"", "nope", auth.HashToken(adminToken), adminToken + "x"} {
		if _, err := tf.Authenticate(ctx, bad); !errors.Is(err, auth.ErrInvalidToken) {
			t.Fatalf("token %q: err = %v, want ErrInvalidToken", bad, err)
		}
	}

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- tf.Run(runCtx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	// Revoke admin, widen payments, add a token.
	writeFile(t, path, tokenFile(entry("payments-team", paymentsToken, "payments, billing"), entry("both", bothToken, "platform")))
	testenv.Eventually(t, 5*time.Second, "reload picks up the new file", func() (bool, string) {
		_, errAdmin := tf.Authenticate(ctx, adminToken)
		p, errBoth := tf.Authenticate(ctx, bothToken)
		return errors.Is(errAdmin, auth.ErrInvalidToken) && errBoth == nil && p.Platform, "admin still valid or new token missing"
	})
	p, err = tf.Authenticate(ctx, paymentsToken)
	if err != nil || !p.CanSeeProject("billing") {
		t.Fatalf("payments after reload: %+v, %v", p, err)
	}

	// A broken file keeps the previous tokens; a fixed one is loaded.
	writeFile(t, path, "tokens:\n- name: x\n  sha256: plaintext\n  scope: platform\n")
	testenv.Eventually(t, 5*time.Second, "the broken file is noticed", func() (bool, string) {
		return tf.Err() != nil, "no reload error yet"
	})
	if strings.Contains(tf.Err().Error(), "plaintext") {
		t.Fatalf("reload error repeats file content: %v", tf.Err())
	}
	if _, err := tf.Authenticate(ctx, bothToken); err != nil {
		t.Fatalf("a broken file must not drop tokens: %v", err)
	}
	writeFile(t, path, tokenFile(entry("admin", adminToken, "platform")))
	testenv.Eventually(t, 5*time.Second, "reload after a broken file", func() (bool, string) {
		_, err := tf.Authenticate(ctx, adminToken)
		return err == nil && tf.Len() == 1 && tf.Err() == nil, "admin not back"
	})
}

func TestNewTokenFileRejectsBadFile(t *testing.T) {
	dir := t.TempDir()
	if _, err := auth.NewTokenFile(filepath.Join(dir, "missing.yaml"), 0, quiet()); err == nil {
		t.Fatal("missing file accepted")
	}
	path := filepath.Join(dir, "bad.yaml")
	writeFile(t, path, "tokens:\n- name: a\n  sha256: "+adminToken+"\n  scope: platform\n")
	_, err := auth.NewTokenFile(path, 0, quiet())
	if err == nil {
		t.Fatal("file with a plain token accepted")
	}
	if strings.Contains(err.Error(), adminToken) {
		t.Fatalf("error repeats the secret: %v", err)
	}
}

// issuer is the shared OIDC issuer fixture (testenv.OIDCIssuer).
type issuer struct{ *testenv.OIDCIssuer }

func newIssuer(t *testing.T) *issuer { return &issuer{testenv.StartOIDCIssuer(t)} }

type claims = testenv.OIDCClaims

func mustSigner(t *testing.T, key *rsa.PrivateKey, kid string) jose.Signer {
	return testenv.OIDCSigner(t, key, kid)
}

func (is *issuer) token(t *testing.T, c claims) string { return is.Token(t, c) }

func (is *issuer) tokenWith(t *testing.T, s jose.Signer, c claims) string {
	return is.TokenWith(t, s, c)
}

// tamper changes the payload of a signed JWT, keeping its signature.
func tamper(t *testing.T, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWS: %s", token)
	}
	payload := `{"iss":"x","sub":"mallory","aud":"costmeter","groups":["cost-admins"],"exp":9999999999}`
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(payload))
	return strings.Join(parts, ".")
}

func oidcConfig(is *issuer) auth.OIDCConfig {
	return auth.OIDCConfig{Issuer: is.URL(), Audience: "costmeter", PlatformGroup: "cost-admins", NameClaim: "email"}
}

func TestOIDCAuthenticate(t *testing.T) {
	is := newIssuer(t)
	o, err := auth.NewOIDC(oidcConfig(is), auth.WithHTTPClient(is.Client()))
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	valid := is.token(t, claims{Claims: jwt.Claims{Subject: "u1"}, Projects: []string{"payments"}})
	tests := []struct {
		name         string
		token        string
		wantErr      error
		wantName     string
		wantPlatform bool
		wantProjects []string
	}{
		{name: "projects list", token: valid, wantName: "oidc:u1", wantProjects: []string{"payments"}},
		{name: "projects as string", token: is.token(t, claims{Claims: jwt.Claims{Subject: "u2"}, Projects: "payments, billing"}), wantName: "oidc:u2", wantProjects: []string{"payments", "billing"}},
		{name: "platform group", token: is.token(t, claims{Claims: jwt.Claims{Subject: "u3"}, Groups: []string{"dev", "cost-admins"}, Email: "root@example.com"}), wantName: "oidc:root@example.com", wantPlatform: true},
		{name: "no scope claims", token: is.token(t, claims{Claims: jwt.Claims{Subject: "u4"}, Groups: []string{"dev"}}), wantName: "oidc:u4"},
		{name: "invalid project names dropped", token: is.token(t, claims{Claims: jwt.Claims{Subject: "u5"}, Projects: []any{"ok", "Not_OK", 7}}), wantName: "oidc:u5", wantProjects: []string{"ok"}},
		{name: "expired", token: is.token(t, claims{Claims: jwt.Claims{Subject: "u", Expiry: jwt.NewNumericDate(time.Now().Add(-time.Minute))}}), wantErr: auth.ErrInvalidToken},
		{name: "wrong audience", token: is.token(t, claims{Claims: jwt.Claims{Subject: "u", Audience: jwt.Audience{"someone-else"}}}), wantErr: auth.ErrInvalidToken},
		{name: "wrong issuer", token: is.token(t, claims{Claims: jwt.Claims{Subject: "u", Issuer: "https://evil.example.com"}}), wantErr: auth.ErrInvalidToken},
		{name: "tampered payload", token: tamper(t, valid), wantErr: auth.ErrInvalidToken},
		{name: "signed by another key", token: is.tokenWith(t, mustSigner(t, otherKey, "k1"), claims{Claims: jwt.Claims{Subject: "u"}, Groups: []string{"cost-admins"}}), wantErr: auth.ErrInvalidToken},
		{name: "not a jwt", token: "hello", wantErr: auth.ErrInvalidToken},
		{name: "empty", token: "", wantErr: auth.ErrInvalidToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := o.Authenticate(t.Context(), tt.token)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Name != tt.wantName || p.Platform != tt.wantPlatform || strings.Join(p.Projects, ",") != strings.Join(tt.wantProjects, ",") {
				t.Fatalf("principal %+v, want name %s platform %v projects %v", p, tt.wantName, tt.wantPlatform, tt.wantProjects)
			}
		})
	}
}

func TestOIDCIssuerDown(t *testing.T) {
	is := newIssuer(t)
	tok := is.token(t, claims{Claims: jwt.Claims{Subject: "u"}})
	cfg := oidcConfig(is)
	is.Close()
	o, err := auth.NewOIDC(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Authenticate(t.Context(), tok); !errors.Is(err, auth.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	// Remembered for a while: the next request does not wait on the issuer.
	if _, err := o.Authenticate(t.Context(), tok); !errors.Is(err, auth.ErrUnavailable) {
		t.Fatalf("second err = %v, want ErrUnavailable", err)
	}
}

// router is a small API with the cost API's two kinds of routes, which
// check scope and answer 403 themselves as the api package does.
func router(mw gin.HandlerFunc) *gin.Engine {
	r := gin.New()
	r.GET("/healthz", func(c *gin.Context) { c.String(http.StatusOK, "ok") })
	g := r.Group("/platform/cost.alauda.io/v1beta1", mw)
	g.GET("/costs/usage", func(c *gin.Context) {
		p, _ := auth.FromContext(c.Request.Context())
		if !p.CanSeePlatform() {
			c.AbortWithStatusJSON(http.StatusForbidden, gin.H{"kind": "Status", "code": 403, "reason": "Forbidden"})
			return
		}
		c.JSON(http.StatusOK, gin.H{"who": p.Name})
	})
	g.GET("/projects/:project/costs/usage", func(c *gin.Context) {
		p, _ := auth.FromContext(c.Request.Context())
		if !p.CanSeeProject(c.Param("project")) {
			c.AbortWithStatusJSON(http.StatusForbidden, gin.H{"kind": "Status", "code": 403, "reason": "Forbidden"})
			return
		}
		c.JSON(http.StatusOK, gin.H{"who": p.Name})
	})
	return r
}

type status struct {
	Kind       string         `json:"kind"`
	APIVersion string         `json:"apiVersion"`
	Metadata   map[string]any `json:"metadata"`
	Status     string         `json:"status"`
	Message    string         `json:"message"`
	Reason     string         `json:"reason"`
	Code       int            `json:"code"`
}

func TestMiddlewareRoutesScopesTokens(t *testing.T) {
	is := newIssuer(t)
	o, err := auth.NewOIDC(oidcConfig(is), auth.WithHTTPClient(is.Client()))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	writeFile(t, path, tokenFile(entry("admin", adminToken, "platform"), entry("payments-team", paymentsToken, "payments")))
	tf, err := auth.NewTokenFile(path, 0, quiet())
	if err != nil {
		t.Fatal(err)
	}
	expired := is.token(t, claims{Claims: jwt.Claims{Subject: "u", Expiry: jwt.NewNumericDate(time.Now().Add(-time.Second))}, Groups: []string{"cost-admins"}})
	oidcAdmin := is.token(t, claims{Claims: jwt.Claims{Subject: "admin"}, Groups: []string{"cost-admins"}})
	oidcPayments := is.token(t, claims{Claims: jwt.Claims{Subject: "dev"}, Projects: []string{"payments"}})
	wrongAud := is.token(t, claims{Claims: jwt.Claims{Subject: "admin", Audience: jwt.Audience{"grafana"}}, Groups: []string{"cost-admins"}})

	const (
		platform = "/platform/cost.alauda.io/v1beta1/costs/usage"
		payments = "/platform/cost.alauda.io/v1beta1/projects/payments/costs/usage"
		billing  = "/platform/cost.alauda.io/v1beta1/projects/billing/costs/usage"
	)
	type call struct {
		header string
		want   map[string]int // route → code
	}
	allOK := map[string]int{platform: 200, payments: 200, billing: 200}
	all := func(code int) map[string]int { return map[string]int{platform: code, payments: code, billing: code} }
	projectOnly := map[string]int{platform: 403, payments: 200, billing: 403}
	tests := []struct {
		name  string
		mw    gin.HandlerFunc
		calls []call
	}{
		{name: "token file", mw: auth.Middleware(tf, quiet()), calls: []call{
			{"Bearer " + adminToken, allOK},
			{"bearer " + adminToken, allOK},
			{"Bearer " + paymentsToken, projectOnly},
			{"", all(401)},
			{"Bearer ", all(401)},
			{"Basic " + adminToken, all(401)},
			{adminToken, all(401)},
			{"Bearer " + auth.HashToken(adminToken), all(401)},
			{"Bearer wrong", all(401)},
			// More than one value (one per line here): neither counts.
			{"Bearer " + adminToken + "\nBearer wrong", all(400)},
			{"Bearer wrong\nBearer " + adminToken, all(400)},
			{"Bearer " + adminToken + "\nBearer " + adminToken, all(400)},
		}},
		{name: "oidc", mw: auth.Middleware(o, quiet()), calls: []call{
			{"Bearer " + oidcAdmin, allOK},
			{"Bearer " + oidcPayments, projectOnly},
			{"Bearer " + expired, all(401)},
			{"Bearer " + wrongAud, all(401)},
			{"Bearer " + tamper(t, oidcPayments), all(401)},
			{"Bearer " + adminToken, all(401)},
			{"", all(401)},
			{"Bearer " + oidcAdmin + "\nBearer " + oidcPayments, all(400)},
		}},
		{name: "none", mw: auth.AllowAll(), calls: []call{
			{"", allOK},
			{"Bearer whatever", allOK},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := router(tt.mw)
			for i, cl := range tt.calls {
				for route, want := range cl.want {
					req := httptest.NewRequest(http.MethodGet, route, nil)
					if cl.header != "" {
						req.Header["Authorization"] = strings.Split(cl.header, "\n")
					}
					rec := httptest.NewRecorder()
					r.ServeHTTP(rec, req)
					if rec.Code != want {
						t.Fatalf("call %d %s: code %d, want %d: %s", i, route, rec.Code, want, rec.Body)
					}
					if want != 401 {
						continue
					}
					var st status
					if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
						t.Fatalf("401 body is not JSON: %s", rec.Body)
					}
					if st.Kind != "Status" || st.APIVersion != "v1" || st.Metadata == nil || st.Status != "Failure" || st.Reason != "Unauthorized" || st.Code != 401 || st.Message == "" {
						t.Fatalf("401 body is not a Status: %s", rec.Body)
					}
					if !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), `Bearer realm="costmeter"`) {
						t.Fatalf("WWW-Authenticate = %q", rec.Header().Get("WWW-Authenticate"))
					}
					if strings.Contains(rec.Body.String(), adminToken) || (cl.header != "" && len(cl.header) > 12 && strings.Contains(rec.Body.String(), cl.header[7:])) {
						t.Fatalf("401 body repeats the token: %s", rec.Body)
					}
				}
			}
			// Health stays open.
			rec := httptest.NewRecorder()
			r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
			if rec.Code != 200 {
				t.Fatalf("/healthz: %d", rec.Code)
			}
		})
	}
}

func TestMiddlewareIssuerDownIs503(t *testing.T) {
	is := newIssuer(t)
	tok := is.token(t, claims{Claims: jwt.Claims{Subject: "u"}})
	cfg := oidcConfig(is)
	is.Close()
	o, err := auth.NewOIDC(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/platform/cost.alauda.io/v1beta1/costs/usage", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	router(auth.Middleware(o, quiet())).ServeHTTP(rec, req)
	var st status
	_ = json.Unmarshal(rec.Body.Bytes(), &st)
	if rec.Code != 503 || st.Reason != "ServiceUnavailable" || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("code %d, body %s", rec.Code, rec.Body)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     auth.Config
		wantErr string
	}{
		{name: "none", cfg: auth.Config{Mode: "none"}},
		{name: "unset", cfg: auth.Config{}, wantErr: "--auth: required"},
		{name: "unknown", cfg: auth.Config{Mode: "basic"}, wantErr: `"basic" is not`},
		{name: "token", cfg: auth.Config{Mode: "token", TokenFile: "/x", TokenFilePoll: time.Second}},
		{name: "token without file", cfg: auth.Config{Mode: "token", TokenFilePoll: time.Second}, wantErr: "--auth-token-file: required"},
		{name: "oidc", cfg: auth.Config{Mode: "oidc", OIDC: auth.OIDCConfig{Issuer: "https://id.example.com", Audience: "cost", ProjectsClaim: "projects", GroupsClaim: "groups"}}},
		{name: "oidc without issuer", cfg: auth.Config{Mode: "oidc", OIDC: auth.OIDCConfig{Audience: "cost", ProjectsClaim: "projects"}}, wantErr: "--oidc-issuer"},
		{name: "oidc without audience", cfg: auth.Config{Mode: "oidc", OIDC: auth.OIDCConfig{Issuer: "https://id.example.com", ProjectsClaim: "projects"}}, wantErr: "--oidc-audience"},
		{name: "platform group without groups claim", cfg: auth.Config{Mode: "oidc", OIDC: auth.OIDCConfig{Issuer: "https://id.example.com", Audience: "a", ProjectsClaim: "projects", PlatformGroup: "admins"}}, wantErr: "--oidc-groups-claim"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == "" && err != nil {
				t.Fatal(err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestFlagsAndNew(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokens.yaml")
	writeFile(t, path, tokenFile(entry("admin", adminToken, "platform")))
	tests := []struct {
		name     string
		preset   auth.Config
		args     []string
		env      map[string]string
		wantMode string
		wantErr  string
		wantLog  string
	}{
		{name: "api requires --auth", args: nil, wantErr: "--auth: required"},
		{name: "costd defaults to none and warns", preset: auth.Config{Mode: auth.ModeNone}, wantMode: "none", wantLog: "authentication is off"},
		{name: "token from env", env: map[string]string{"COST_AUTH": "token", "COST_AUTH_TOKEN_FILE": path}, wantMode: "token"},
		{name: "flag beats env", args: []string{"--auth", "token", "--auth-token-file", path}, env: map[string]string{"COST_AUTH": "oidc"}, wantMode: "token"},
		{name: "oidc", args: []string{"--auth=oidc", "--oidc-issuer=https://id.example.com", "--oidc-audience=cost", "--oidc-platform-group=admins"}, wantMode: "oidc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			f := config.NewFlags(fs, func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
			cfg := tt.preset
			cfg.RegisterFlags(f)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			err := errors.Join(f.Err(), cfg.Validate())
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var logs strings.Builder
			a, err := auth.New(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			if a.Mode() != tt.wantMode || a.Handler() == nil {
				t.Fatalf("mode %s, want %s", a.Mode(), tt.wantMode)
			}
			if !strings.Contains(logs.String(), tt.wantLog) {
				t.Fatalf("log %q lacks %q", logs.String(), tt.wantLog)
			}
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			if err := a.Run(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestOIDCKeyRotation: a token signed with a key the issuer does not
// publish is refused; once the issuer publishes it (rotation), the same
// kind of token is accepted without a restart, and the old key's tokens
// stop working when it is withdrawn.
func TestOIDCKeyRotation(t *testing.T) {
	is := newIssuer(t)
	o, err := auth.NewOIDC(oidcConfig(is), auth.WithHTTPClient(is.Client()))
	if err != nil {
		t.Fatal(err)
	}
	oldTok := is.token(t, claims{Claims: jwt.Claims{Subject: "old"}})
	if _, err := o.Authenticate(t.Context(), oldTok); err != nil {
		t.Fatal(err)
	}
	k2, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	newTok := is.tokenWith(t, mustSigner(t, k2, "k2"), claims{Claims: jwt.Claims{Subject: "new"}})
	if _, err := o.Authenticate(t.Context(), newTok); !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("unpublished key: err = %v", err)
	}
	is.Publish(jose.JSONWebKey{Key: &k2.PublicKey, KeyID: "k2", Algorithm: "RS256", Use: "sig"})
	// go-oidc refetches the keys when a token names an unknown kid; a
	// request racing the end of the previous fetch may still see the old
	// set, hence polling.
	testenv.Eventually(t, 5*time.Second, "rotated key accepted", func() (bool, string) {
		p, err := o.Authenticate(t.Context(), newTok)
		return err == nil && p.Name == "oidc:new", fmt.Sprint(err)
	})
	// k1 is withdrawn: its tokens fail, without a restart. go-oidc hands
	// the fetched set to the waiting request before it replaces its cache,
	// so a request right after may still verify against the cached k1
	// (CI saw this once); the refusal is awaited, not assumed.
	testenv.Eventually(t, 5*time.Second, "withdrawn key refused", func() (bool, string) {
		_, err := o.Authenticate(t.Context(), oldTok)
		return errors.Is(err, auth.ErrInvalidToken), fmt.Sprint(err)
	})
}

// TestTokenFileChanged: the channel a reload closes is closed by a reload
// that changes the tokens in force, and not by one of the same content or
// of a broken file (the previous tokens stay in force).
func TestTokenFileChanged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	writeFile(t, path, tokenFile(entry("admin", adminToken, "platform")))
	tf, err := auth.NewTokenFile(path, 20*time.Millisecond, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- tf.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	closed := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	first := tf.Changed()
	writeFile(t, path, "tokens:\n- name: x\n  sha256: plaintext\n  scope: platform\n")
	testenv.Eventually(t, 5*time.Second, "the broken file is noticed", func() (bool, string) {
		return tf.Err() != nil, "no reload error yet"
	})
	writeFile(t, path, tokenFile(entry("admin", adminToken, "platform")))
	testenv.Eventually(t, 5*time.Second, "the file is read again", func() (bool, string) {
		return tf.Err() == nil, "reload error still there"
	})
	if closed(first) {
		t.Fatal("closed though the tokens in force never changed")
	}
	writeFile(t, path, tokenFile(entry("payments-team", paymentsToken, "payments")))
	testenv.Eventually(t, 5*time.Second, "a change closes the channel", func() (bool, string) {
		return closed(first), "not closed"
	})
	if _, err := tf.Authenticate(t.Context(), adminToken); !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("closed before the new tokens are in force: admin: %v", err)
	}
	if closed(tf.Changed()) {
		t.Fatal("the next change's channel is already closed")
	}
}

// TestOIDCPrincipalExpires: an OIDC principal carries its token's exp; a
// token file's has none.
func TestOIDCPrincipalExpires(t *testing.T) {
	is := newIssuer(t)
	o, err := auth.NewOIDC(oidcConfig(is), auth.WithHTTPClient(is.Client()))
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	p, err := o.Authenticate(t.Context(), is.token(t, claims{Claims: jwt.Claims{Subject: "u", Expiry: jwt.NewNumericDate(exp)}}))
	if err != nil || !p.Expires.Equal(exp) {
		t.Fatalf("principal %+v, %v; want expiry %s", p, err, exp)
	}
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	writeFile(t, path, tokenFile(entry("admin", adminToken, "platform")))
	tf, err := auth.NewTokenFile(path, 0, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if p, err := tf.Authenticate(t.Context(), adminToken); err != nil || !p.Expires.IsZero() {
		t.Fatalf("token file principal %+v, %v; want no expiry", p, err)
	}
}
