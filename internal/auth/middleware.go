package auth

import (
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/alauda/costmeter/internal/kstatus"
)

// Realm is the realm of the WWW-Authenticate challenge.
const Realm = "costmeter"

// ErrAmbiguousAuthorization is the answer to a request with more than one
// Authorization header value: which one would count depends on who reads
// it (a proxy may check one copy and the API another), so none does.
var ErrAmbiguousAuthorization = errors.New("more than one Authorization header: send exactly one")

// OneAuthorization answers 400 (a Status naming ErrAmbiguousAuthorization)
// to a request carrying more than one Authorization header value and stops
// the chain; it never looks at the values themselves. Install it first, on
// the whole engine, so no route's handler runs for such a request.
func OneAuthorization() gin.HandlerFunc {
	return func(c *gin.Context) {
		if len(c.Request.Header.Values("Authorization")) > 1 {
			kstatus.Abort(c, http.StatusBadRequest, ErrAmbiguousAuthorization.Error())
		}
	}
}

// Middleware authenticates the request's bearer token with a and stores
// the principal in the request's context (read it with FromContext). A
// missing or bad token is answered 401, more than one Authorization
// header 400 (OneAuthorization), with a WWW-Authenticate challenge,
// an authenticator that cannot check tokens right now 503. It never calls
// c.Next, so it can also run inside another handler (httpguard.Protect).
// Scope is not checked here: the routes answer 403 themselves. A
// Session in the context lets a long request check the token again
// (SessionFrom).
func Middleware(a Authenticator, log *slog.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		if len(c.Request.Header.Values("Authorization")) > 1 {
			kstatus.Abort(c, http.StatusBadRequest, ErrAmbiguousAuthorization.Error())
			return
		}
		token, ok := bearer(c.GetHeader("Authorization"))
		if !ok {
			c.Header("WWW-Authenticate", `Bearer realm="`+Realm+`"`)
			kstatus.Abort(c, http.StatusUnauthorized, "a bearer token is required (Authorization: Bearer <token>)")
			return
		}
		ctx := c.Request.Context()
		sess := newSession(a, token)
		p, err := a.Authenticate(ctx, token)
		switch {
		case errors.Is(err, ErrUnavailable):
			log.WarnContext(ctx, "cannot authenticate", "err", err)
			c.Header("Retry-After", "5")
			kstatus.Abort(c, http.StatusServiceUnavailable, "authentication is unavailable, try again later")
			return
		case err != nil:
			// The token itself never reaches a log.
			log.InfoContext(ctx, "rejected token", "client", c.ClientIP(), "path", c.FullPath(), "err", err)
			c.Header("WWW-Authenticate", `Bearer realm="`+Realm+`", error="invalid_token", error_description="the token is invalid or expired"`)
			kstatus.Abort(c, http.StatusUnauthorized, "the bearer token is invalid or expired")
			return
		}
		sess.expires = p.Expires
		c.Request = c.Request.WithContext(WithSession(WithPrincipal(ctx, p), sess))
	}
}

// AllowAll is the middleware of --auth none: every request is Anonymous
// (platform scope). For development only.
func AllowAll() gin.HandlerFunc {
	p := Anonymous()
	return func(c *gin.Context) {
		c.Request = c.Request.WithContext(WithPrincipal(c.Request.Context(), p))
	}
}

// bearer extracts the token of an "Authorization: Bearer <token>" header;
// the scheme is case-insensitive (RFC 7235).
func bearer(h string) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}
