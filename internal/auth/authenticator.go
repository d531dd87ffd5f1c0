package auth

import (
	"context"
	"errors"
)

// Authenticator turns a bearer token into the principal it stands for.
type Authenticator interface {
	// Authenticate returns the principal of token, an error wrapping
	// ErrInvalidToken when the token proves nothing, or one wrapping
	// ErrUnavailable when it cannot be checked right now.
	Authenticate(ctx context.Context, bearerToken string) (*Principal, error)
}

// Sentinel errors the middleware maps to HTTP codes.
var (
	// ErrInvalidToken: unknown, malformed, expired, wrongly signed or
	// meant for another audience (401).
	ErrInvalidToken = errors.New("invalid token")
	// ErrUnavailable: the token cannot be checked now, e.g. the OIDC
	// issuer does not answer (503).
	ErrUnavailable = errors.New("authentication unavailable")
)
