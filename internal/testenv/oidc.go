package testenv

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// OIDCIssuer is a real OpenID Connect issuer over HTTP: a discovery
// document and a JWKS, RS256 keys from go-jose. Its tokens are for
// audience OIDCAudience unless the claims say otherwise.
type OIDCIssuer struct {
	srv *httptest.Server
	// Key signs with Signer (key id "k1"), and is published at start.
	Key    *rsa.PrivateKey
	Signer jose.Signer

	mu   sync.Mutex
	keys []jose.JSONWebKey // served at /keys
}

// OIDCAudience is the audience of the issuer's tokens by default.
const OIDCAudience = "costmeter"

// OIDCClaims are the claims of a test token: the registered ones, and the
// scope claims under their default names.
type OIDCClaims struct {
	jwt.Claims
	Projects any      `json:"projects,omitempty"`
	Groups   []string `json:"groups,omitempty"`
	Email    string   `json:"email,omitempty"`
}

// StartOIDCIssuer serves an issuer until the test ends.
func StartOIDCIssuer(t testing.TB) *OIDCIssuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	is := &OIDCIssuer{Key: key, Signer: OIDCSigner(t, key, "k1")}
	mux := http.NewServeMux()
	is.srv = httptest.NewServer(mux)
	t.Cleanup(is.srv.Close)
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer":                                is.srv.URL,
			"jwks_uri":                              is.srv.URL + "/keys",
			"authorization_endpoint":                is.srv.URL + "/auth",
			"token_endpoint":                        is.srv.URL + "/token",
			"id_token_signing_alg_values_supported": []string{"RS256"},
		})
	})
	is.Publish(jose.JSONWebKey{Key: &key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"})
	mux.HandleFunc("/keys", func(w http.ResponseWriter, _ *http.Request) {
		is.mu.Lock()
		set := jose.JSONWebKeySet{Keys: is.keys}
		is.mu.Unlock()
		_ = json.NewEncoder(w).Encode(set)
	})
	return is
}

// URL is the issuer URL.
func (is *OIDCIssuer) URL() string { return is.srv.URL }

// Client is an HTTP client for the issuer.
func (is *OIDCIssuer) Client() *http.Client { return is.srv.Client() }

// Close stops serving (an issuer that is down).
func (is *OIDCIssuer) Close() { is.srv.Close() }

// Publish replaces the served key set.
func (is *OIDCIssuer) Publish(keys ...jose.JSONWebKey) {
	is.mu.Lock()
	is.keys = keys
	is.mu.Unlock()
}

// OIDCSigner signs RS256 JWTs with key under key id kid.
func OIDCSigner(t testing.TB, key *rsa.PrivateKey, kid string) jose.Signer {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Token is a JWT of c signed with the issuer's key.
func (is *OIDCIssuer) Token(t testing.TB, c OIDCClaims) string {
	t.Helper()
	return is.TokenWith(t, is.Signer, c)
}

// TokenWith is a JWT of c signed by s. Unset issuer, audience, expiry and
// issue time default to this issuer, OIDCAudience, an hour from now and a
// minute ago.
func (is *OIDCIssuer) TokenWith(t testing.TB, s jose.Signer, c OIDCClaims) string {
	t.Helper()
	if c.Issuer == "" {
		c.Issuer = is.srv.URL
	}
	if c.Audience == nil {
		c.Audience = jwt.Audience{OIDCAudience}
	}
	if c.Expiry == nil {
		c.Expiry = jwt.NewNumericDate(time.Now().Add(time.Hour))
	}
	if c.IssuedAt == nil {
		c.IssuedAt = jwt.NewNumericDate(time.Now().Add(-time.Minute))
	}
	raw, err := jwt.Signed(s).Claims(c).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
