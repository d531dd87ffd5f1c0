package api_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/alauda/costmeter/api"
	"github.com/alauda/costmeter/internal/auth"
	"github.com/alauda/costmeter/internal/event"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/testenv"
)

// Tokens of the token-file watch test; the file holds their hashes.
const (
	watchAdminToken  = "adm-6b1f0c2d4e8a9b7c5d3e1f0a2b4c6d8e"
	watchKeeperToken = "kee-0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d"
	watchMovedToken  = "mov-1f2e3d4c5b6a7f8e9d0c1b2a3f4e5d6c"
)

// watchTokenFile writes a token file of (name, token, scope) entries,
// scope "platform" or one project, swapping it in as a Secret update does.
func watchTokenFile(t *testing.T, path string, entries ...[3]string) {
	t.Helper()
	content := "tokens:\n"
	for _, e := range entries {
		content += "- name: " + e[0] + "\n  sha256: " + auth.HashToken(e[1]) + "\n"
		if e[2] == "platform" {
			content += "  scope: platform\n"
		} else {
			content += "  projects: [" + e[2] + "]\n"
		}
	}
	if err := os.WriteFile(path+".tmp", []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

func bearer(token string) http.Header { return http.Header{"Authorization": {"Bearer " + token}} }

// last reads the stream to its end and returns its last frame; it fails
// the test when the stream does not end within d.
func (s *sse) last(d time.Duration) frame {
	s.t.Helper()
	deadline := time.Now().Add(d)
	var last frame
	for {
		f, ok := s.next(time.Until(deadline))
		if !ok {
			return last
		}
		last = f
	}
}

// TestWatchEndsWhenTokenRevoked: with --auth token, a reload of the token
// file ends the stream of a token it dropped ("token revoked") and of a
// token whose projects no longer include the route's, and keeps the
// stream of a token it still lists at the same scope: that one goes on
// receiving events after the reload.
func TestWatchEndsWhenTokenRevoked(t *testing.T) {
	p := newPipeline(t)
	p.publish("08:00", watchEntities...)
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	watchTokenFile(t, path, [3]string{"admin", watchAdminToken, "platform"},
		[3]string{"keeper", watchKeeperToken, "team"}, [3]string{"moved", watchMovedToken, "team"})
	log := slog.New(slog.DiscardHandler)
	tf, err := auth.NewTokenFile(path, 20*time.Millisecond, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tf.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("token file: %v", err)
		}
	})
	ts := watchServer(t, p, api.WithAuthenticate(auth.Middleware(tf, log)))
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()

	q := url.Values{"kind": {"namespace_all"}}
	admin := openWatchWith(t, client, watchURL(ts.URL, "", q), bearer(watchAdminToken))
	keeper := openWatchWith(t, client, watchURL(ts.URL, "team", q), bearer(watchKeeperToken))
	moved := openWatchWith(t, client, watchURL(ts.URL, "team", q), bearer(watchMovedToken))
	for _, s := range []*sse{admin, keeper, moved} {
		s.snapshot()
	}

	watchTokenFile(t, path, [3]string{"keeper", watchKeeperToken, "team"}, [3]string{"moved", watchMovedToken, "ops"})
	if f := admin.last(10 * time.Second); f.comment != "token revoked" || f.event != "" {
		t.Fatalf("the removed token's stream ended with %+v, want the comment \"token revoked\"", f)
	}
	if f := moved.last(10 * time.Second); f.comment != "token no longer allowed to see this stream" {
		t.Fatalf("the narrowed token's stream ended with %+v", f)
	}
	if _, err := tf.Authenticate(ctx, watchAdminToken); !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("the removed token still authenticates: %v", err)
	}
	// The reload is in force (above) before this publish, and a stream
	// acts on a reload before forwarding anything: the event proves the
	// keeper's stream was rechecked and kept.
	p.publish("09:00", watchEntities[0])
	final, _ := p.want(nsKey(watchEntities[0]), rollup.Cpu)
	keeper.until(func(ev event.Event) bool { return keyOf(ev) == nsKey(watchEntities[0]) && ev.Fixed == final.Fixed })
}

// TestWatchEndsAtOIDCExpiry: with --auth oidc, the stream of a token that
// expires in two to three seconds ends then with "token expired"; a stream of a
// token valid for an hour, opened alongside, still receives events after.
func TestWatchEndsAtOIDCExpiry(t *testing.T) {
	p := newPipeline(t)
	p.publish("08:00", watchEntities...)
	is := testenv.StartOIDCIssuer(t)
	o, err := auth.NewOIDC(auth.OIDCConfig{Issuer: is.URL(), Audience: testenv.OIDCAudience, PlatformGroup: "cost-admins"},
		auth.WithHTTPClient(is.Client()))
	if err != nil {
		t.Fatal(err)
	}
	ts := watchServer(t, p, api.WithAuthenticate(auth.Middleware(o, slog.New(slog.DiscardHandler))))
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()

	// JWT times are whole seconds.
	exp := time.Now().Truncate(time.Second).Add(3 * time.Second)
	short := is.Token(t, testenv.OIDCClaims{Claims: jwt.Claims{Subject: "short", Expiry: jwt.NewNumericDate(exp)}, Groups: []string{"cost-admins"}})
	long := is.Token(t, testenv.OIDCClaims{Claims: jwt.Claims{Subject: "long"}, Projects: []string{"team"}})
	q := url.Values{"kind": {"namespace_all"}}
	s := openWatchWith(t, client, watchURL(ts.URL, "", q), bearer(short))
	l := openWatchWith(t, client, watchURL(ts.URL, "team", q), bearer(long))
	s.snapshot()
	l.snapshot()
	if f := s.last(10 * time.Second); f.comment != "token expired" || f.event != "" {
		t.Fatalf("the expiring token's stream ended with %+v, want the comment \"token expired\"", f)
	}
	if now := time.Now(); now.Before(exp) {
		t.Fatalf("the stream ended %s before the token's expiry", exp.Sub(now))
	}
	p.publish("09:00", watchEntities[0])
	final, _ := p.want(nsKey(watchEntities[0]), rollup.Cpu)
	l.until(func(ev event.Event) bool { return keyOf(ev) == nsKey(watchEntities[0]) && ev.Fixed == final.Fixed })
}
