package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/alauda/costmeter/internal/sample"
)

// OIDCConfig says which issuer to trust and where scope is in its tokens.
type OIDCConfig struct {
	// Issuer URL; its /.well-known/openid-configuration names the keys.
	Issuer string
	// Audience the tokens must be issued for (the "aud" claim).
	Audience string
	// ProjectsClaim holds the projects the caller may see: a list of
	// strings, or one string of names separated by commas or spaces.
	ProjectsClaim string
	// GroupsClaim holds the caller's groups.
	GroupsClaim string
	// PlatformGroup, when a member of GroupsClaim, grants platform scope.
	PlatformGroup string
	// NameClaim names the caller in logs ("sub" when empty or absent).
	NameClaim string
}

// Default claim names.
const (
	DefaultProjectsClaim = "projects"
	DefaultGroupsClaim   = "groups"
)

// OIDC authenticates JWTs signed by an OpenID Connect issuer. Discovery
// happens on the first request, not at start, so the API comes up while
// the issuer is briefly away; until it answers, requests get 503.
type OIDC struct {
	cfg    OIDCConfig
	client *http.Client
	now    func() time.Time

	mu       sync.Mutex
	verifier *oidc.IDTokenVerifier
	failed   time.Time // last failed discovery, to fail fast for a while
	lastErr  error
}

// rediscoverAfter is how long a failed discovery is remembered: requests
// meanwhile fail at once instead of queueing behind a dead issuer.
const rediscoverAfter = 5 * time.Second

// OIDCOption adjusts an OIDC authenticator.
type OIDCOption func(*OIDC)

// WithHTTPClient sets the client that fetches discovery and keys (for a
// private CA, for example).
func WithHTTPClient(c *http.Client) OIDCOption { return func(o *OIDC) { o.client = c } }

// WithClock sets the clock expiry is checked against.
func WithClock(now func() time.Time) OIDCOption { return func(o *OIDC) { o.now = now } }

// NewOIDC returns an authenticator for cfg; it does not contact the issuer.
func NewOIDC(cfg OIDCConfig, opts ...OIDCOption) (*OIDC, error) {
	if cfg.Issuer == "" || cfg.Audience == "" {
		return nil, errors.New("oidc: issuer and audience are required")
	}
	if cfg.ProjectsClaim == "" {
		cfg.ProjectsClaim = DefaultProjectsClaim
	}
	if cfg.GroupsClaim == "" {
		cfg.GroupsClaim = DefaultGroupsClaim
	}
	o := &OIDC{cfg: cfg, client: &http.Client{Timeout: 10 * time.Second}, now: time.Now}
	for _, opt := range opts {
		opt(o)
	}
	return o, nil
}

func (o *OIDC) getVerifier(ctx context.Context) (*oidc.IDTokenVerifier, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.verifier != nil {
		return o.verifier, nil
	}
	if !o.failed.IsZero() && time.Since(o.failed) < rediscoverAfter {
		return nil, o.lastErr
	}
	dctx, cancel := context.WithTimeout(oidc.ClientContext(ctx, o.client), 10*time.Second)
	defer cancel()
	p, err := oidc.NewProvider(dctx, o.cfg.Issuer)
	if err != nil {
		o.failed = time.Now()
		o.lastErr = fmt.Errorf("discover oidc issuer %s: %v: %w", o.cfg.Issuer, err, ErrUnavailable)
		return nil, o.lastErr
	}
	// Key fetches outlive the request that triggered discovery.
	kctx := oidc.ClientContext(context.Background(), o.client)
	o.verifier = p.VerifierContext(kctx, &oidc.Config{ClientID: o.cfg.Audience, Now: o.now})
	return o.verifier, nil
}

// Authenticate verifies token's signature, issuer, audience and expiry and
// reads the caller's scope from its claims. A valid token without any
// scope claim yields a principal that may see nothing.
func (o *OIDC) Authenticate(ctx context.Context, token string) (*Principal, error) {
	if token == "" {
		return nil, fmt.Errorf("empty token: %w", ErrInvalidToken)
	}
	v, err := o.getVerifier(ctx)
	if err != nil {
		return nil, err
	}
	idt, err := v.Verify(ctx, token)
	if err != nil {
		// go-oidc does not tell a bad token from an unreachable key
		// endpoint by type; both are the caller's 401 here.
		return nil, fmt.Errorf("verify jwt: %v: %w", err, ErrInvalidToken)
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return nil, fmt.Errorf("decode jwt claims: %v: %w", err, ErrInvalidToken)
	}
	p := &Principal{Name: "oidc:" + idt.Subject, Expires: idt.Expiry}
	if o.cfg.NameClaim != "" {
		if s, ok := claims[o.cfg.NameClaim].(string); ok && s != "" {
			p.Name = "oidc:" + s
		}
	}
	if o.cfg.PlatformGroup != "" {
		for _, g := range stringList(claims[o.cfg.GroupsClaim]) {
			if g == o.cfg.PlatformGroup {
				p.Platform = true
			}
		}
	}
	for _, pr := range stringList(claims[o.cfg.ProjectsClaim]) {
		if sample.CheckName(sample.NameProject, pr) == nil {
			p.Projects = append(p.Projects, pr)
		}
	}
	return p, nil
}

// stringList reads a claim that is a list of strings or one string of
// names separated by commas or spaces; anything else is no names.
func stringList(v any) []string {
	switch v := v.(type) {
	case string:
		return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' })
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			if s, ok := e.(string); ok && s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}
