package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/alauda/costmeter/internal/config"
)

// Modes of --auth.
const (
	// ModeNone lets every request in with platform scope. It must be
	// chosen explicitly in cmd/api (--auth has no default there) and is the
	// default only inside costd, the try-it-out binary; New logs a warning
	// whenever it is on.
	ModeNone = "none"
	// ModeToken checks bearer tokens against --auth-token-file.
	ModeToken = "token"
	// ModeOIDC verifies bearer JWTs from --oidc-issuer.
	ModeOIDC = "oidc"
)

// Config chooses and configures the authenticator. Field values set before
// RegisterFlags are the flags' defaults: cmd/api leaves Mode empty so that
// --auth must be given, costd sets ModeNone.
type Config struct {
	Mode          string
	TokenFile     string
	TokenFilePoll time.Duration
	OIDC          OIDCConfig
	// OIDCCA is a PEM file of CAs to trust for the issuer (besides the
	// system's).
	OIDCCA string
}

// RegisterFlags registers --auth, --auth-token-file, --auth-token-file-poll
// and the --oidc-* flags.
func (c *Config) RegisterFlags(f *config.Flags) {
	modeUsage := "authentication: none (development only: everyone sees everything), token (--auth-token-file) or oidc (--oidc-issuer)"
	if c.Mode == "" {
		modeUsage += "; required"
	}
	f.String(&c.Mode, "auth", "COST_AUTH", c.Mode, modeUsage)
	f.String(&c.TokenFile, "auth-token-file", "COST_AUTH_TOKEN_FILE", c.TokenFile, "YAML file of tokens by SHA-256 with their scope (platform or projects); reloaded when it changes")
	poll := c.TokenFilePoll
	if poll == 0 {
		poll = DefaultTokenFilePoll
	}
	f.Duration(&c.TokenFilePoll, "auth-token-file-poll", "COST_AUTH_TOKEN_FILE_POLL", poll, "how often --auth-token-file is checked for changes")
	f.String(&c.OIDC.Issuer, "oidc-issuer", "OIDC_ISSUER", c.OIDC.Issuer, "OpenID Connect issuer URL whose JWTs are accepted")
	f.String(&c.OIDC.Audience, "oidc-audience", "OIDC_AUDIENCE", c.OIDC.Audience, "audience (aud) the JWTs must carry, usually the client id")
	f.String(&c.OIDC.ProjectsClaim, "oidc-projects-claim", "OIDC_PROJECTS_CLAIM", orDefault(c.OIDC.ProjectsClaim, DefaultProjectsClaim), "claim listing the projects the caller may see")
	f.String(&c.OIDC.GroupsClaim, "oidc-groups-claim", "OIDC_GROUPS_CLAIM", orDefault(c.OIDC.GroupsClaim, DefaultGroupsClaim), "claim listing the caller's groups")
	f.String(&c.OIDC.PlatformGroup, "oidc-platform-group", "OIDC_PLATFORM_GROUP", c.OIDC.PlatformGroup, "group (in --oidc-groups-claim) whose members have platform scope; empty: nobody")
	f.String(&c.OIDC.NameClaim, "oidc-name-claim", "OIDC_NAME_CLAIM", c.OIDC.NameClaim, "claim naming the caller in logs (default: sub)")
	f.String(&c.OIDCCA, "oidc-ca", "OIDC_CA", c.OIDCCA, "PEM file of extra CAs trusted for the OIDC issuer")
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	switch c.Mode {
	case ModeNone:
	case ModeToken:
		if c.TokenFile == "" {
			errs = append(errs, errors.New("--auth-token-file: required with --auth token"))
		}
		if c.TokenFilePoll < 100*time.Millisecond {
			errs = append(errs, fmt.Errorf("--auth-token-file-poll: %s is shorter than 100ms", c.TokenFilePoll))
		}
	case ModeOIDC:
		if u, err := url.Parse(c.OIDC.Issuer); err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
			errs = append(errs, fmt.Errorf("--oidc-issuer: %q is not an http(s) URL (required with --auth oidc)", c.OIDC.Issuer))
		}
		if c.OIDC.Audience == "" {
			errs = append(errs, errors.New("--oidc-audience: required with --auth oidc"))
		}
		if c.OIDC.ProjectsClaim == "" {
			errs = append(errs, errors.New("--oidc-projects-claim: must not be empty"))
		}
		if c.OIDC.PlatformGroup != "" && c.OIDC.GroupsClaim == "" {
			errs = append(errs, errors.New("--oidc-groups-claim: required with --oidc-platform-group"))
		}
	case "":
		errs = append(errs, errors.New("--auth: required: token, oidc, or none (development only)"))
	default:
		errs = append(errs, fmt.Errorf("--auth: %q is not none, token or oidc", c.Mode))
	}
	return errors.Join(errs...)
}

// Auth is the configured authentication of the API.
type Auth struct {
	mode    string
	handler gin.HandlerFunc
	tokens  *TokenFile
}

// New builds the authenticator of cfg (loading the token file, which must
// be valid). With --auth none it logs a warning.
func New(cfg Config, log *slog.Logger) (*Auth, error) {
	a := &Auth{mode: cfg.Mode}
	switch cfg.Mode {
	case ModeNone:
		log.Warn("authentication is off (--auth none): every caller sees every project; use --auth token or --auth oidc outside development")
		a.handler = AllowAll()
	case ModeToken:
		t, err := NewTokenFile(cfg.TokenFile, cfg.TokenFilePoll, log)
		if err != nil {
			return nil, err
		}
		a.tokens = t
		a.handler = Middleware(t, log)
		log.Info("authenticating bearer tokens", "file", cfg.TokenFile, "tokens", t.Len())
	case ModeOIDC:
		client := &http.Client{Timeout: 10 * time.Second}
		if cfg.OIDCCA != "" {
			pem, err := os.ReadFile(cfg.OIDCCA)
			if err != nil {
				return nil, fmt.Errorf("read --oidc-ca: %w", err)
			}
			pool, err := x509.SystemCertPool()
			if err != nil {
				pool = x509.NewCertPool()
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--oidc-ca %s: no PEM certificate found", cfg.OIDCCA)
			}
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
			client.Transport = tr
		}
		o, err := NewOIDC(cfg.OIDC, WithHTTPClient(client))
		if err != nil {
			return nil, err
		}
		a.handler = Middleware(o, log)
		log.Info("authenticating OIDC bearer tokens", "issuer", cfg.OIDC.Issuer, "audience", cfg.OIDC.Audience)
	default:
		return nil, fmt.Errorf("--auth: %q is not none, token or oidc", cfg.Mode)
	}
	return a, nil
}

// Mode is the configured --auth.
func (a *Auth) Mode() string { return a.mode }

// Handler is the Gin middleware to put in front of the data routes (pass
// it to api.WithAuthenticate).
func (a *Auth) Handler() gin.HandlerFunc { return a.handler }

// Run reloads the token file on change until ctx ends (and just waits with
// the other modes); it returns nil then.
func (a *Auth) Run(ctx context.Context) error {
	if a.tokens != nil {
		return a.tokens.Run(ctx)
	}
	<-ctx.Done()
	return nil
}
