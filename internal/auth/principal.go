// Package auth decides who is calling the API and what they may see: a
// Principal with platform scope sees everything, one with a list of
// projects sees only those.
package auth

import (
	"context"
	"slices"
	"time"
)

// Principal is an authenticated caller.
type Principal struct {
	// Name identifies the caller in logs (never a secret).
	Name string
	// Platform scope: every project and the platform-wide routes.
	Platform bool
	// Projects the caller may see when not Platform.
	Projects []string
	// Expires is when the caller's token stops being valid (an OIDC
	// token's exp); zero when it has no end of its own (a token file's
	// tokens last until the file drops them).
	Expires time.Time
}

// Anonymous is the principal of --auth none: platform scope, for
// development only.
func Anonymous() *Principal { return &Principal{Name: "anonymous", Platform: true} }

// CanSeePlatform reports whether p may call the platform-wide routes.
func (p *Principal) CanSeePlatform() bool { return p != nil && p.Platform }

// CanSeeProject reports whether p may see project's data.
func (p *Principal) CanSeeProject(project string) bool {
	return p != nil && (p.Platform || slices.Contains(p.Projects, project))
}

type ctxKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext returns the principal stored by WithPrincipal.
func FromContext(ctx context.Context) (*Principal, bool) {
	p, ok := ctx.Value(ctxKey{}).(*Principal)
	return p, ok && p != nil
}
