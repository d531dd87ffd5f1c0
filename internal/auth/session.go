package auth

import (
	"context"
	"time"
)

// Changer is an Authenticator whose answers can change while it runs (a
// token file that is reloaded). Changed returns a channel closed at the
// next change.
type Changer interface {
	Changed() <-chan struct{}
}

// Session is the authentication of one request, kept for a request that
// outlives the moment it was checked (a watch stream): Changed says when
// the authenticator's answer may have changed, Expires when the token
// ends by itself, and Recheck authenticates the same token again. The
// token itself is never exposed. A Session belongs to the goroutine
// serving its request.
type Session struct {
	a       Authenticator
	token   string
	changed <-chan struct{}
	expires time.Time
}

// newSession takes the authenticator's change channel before the token is
// authenticated, so no change falls between the check and the watch.
func newSession(a Authenticator, token string) *Session {
	s := &Session{a: a, token: token}
	s.watch()
	return s
}

func (s *Session) watch() {
	s.changed = nil
	if c, ok := s.a.(Changer); ok {
		s.changed = c.Changed()
	}
}

// Changed is closed when the authenticator's tokens changed after the
// last check (nil, never ready, for one whose answers do not change).
func (s *Session) Changed() <-chan struct{} { return s.changed }

// Expires is when the token checked last ends by itself; zero for none.
func (s *Session) Expires() time.Time { return s.expires }

// Recheck authenticates the token again and starts watching for the next
// change; its errors are Authenticate's.
func (s *Session) Recheck(ctx context.Context) (*Principal, error) {
	s.watch()
	p, err := s.a.Authenticate(ctx, s.token)
	if err == nil {
		s.expires = p.Expires
	}
	return p, err
}

// String names no secret.
func (s *Session) String() string { return "auth.Session" }

// GoString names no secret either (%#v).
func (s *Session) GoString() string { return "auth.Session" }

type sessionKey struct{}

// WithSession returns ctx carrying s.
func WithSession(ctx context.Context, s *Session) context.Context {
	return context.WithValue(ctx, sessionKey{}, s)
}

// SessionFrom returns the session Middleware stored; none for requests
// authenticated otherwise (--auth none), which have nothing to recheck.
func SessionFrom(ctx context.Context) (*Session, bool) {
	s, ok := ctx.Value(sessionKey{}).(*Session)
	return s, ok && s != nil
}
