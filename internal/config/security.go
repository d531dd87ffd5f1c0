package config

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
)

// NATSSecurity is how a binary proves itself to NATS and checks the server,
// beyond a user and password or token in --nats-url.
type NATSSecurity struct {
	// CredsFile is a NATS credentials file (user JWT and nkey seed).
	CredsFile string
	// CAFile is a PEM bundle of CAs that sign the server's certificate;
	// setting it turns TLS on.
	CAFile string
	// CertFile and KeyFile are the client certificate and key, for a
	// server that verifies clients.
	CertFile string
	KeyFile  string
	// InboxPrefix replaces _INBOX for the replies this client receives,
	// so that its NATS user can be allowed to subscribe to its own replies
	// only (see deploy/nats/nats-server.conf).
	InboxPrefix string
}

// RegisterFlags registers --nats-creds, --nats-ca, --nats-cert, --nats-key
// and --nats-inbox-prefix.
func (s *NATSSecurity) RegisterFlags(f *Flags) {
	f.String(&s.CredsFile, "nats-creds", "NATS_CREDS", s.CredsFile, "NATS credentials file (JWT and nkey seed)")
	f.String(&s.CAFile, "nats-ca", "NATS_CA", s.CAFile, "PEM file of CAs to verify the NATS server with (turns TLS on)")
	f.String(&s.CertFile, "nats-cert", "NATS_CERT", s.CertFile, "client certificate (PEM) for NATS TLS")
	f.String(&s.KeyFile, "nats-key", "NATS_KEY", s.KeyFile, "client key (PEM) for NATS TLS")
	f.String(&s.InboxPrefix, "nats-inbox-prefix", "NATS_INBOX_PREFIX", s.InboxPrefix, "prefix of this client's reply subjects instead of _INBOX (match the server's permissions)")
}

// Validate checks that the files are readable and come in pairs.
func (s *NATSSecurity) Validate() error {
	errs := []error{
		readable("--nats-creds", s.CredsFile),
		readable("--nats-ca", s.CAFile),
		readable("--nats-cert", s.CertFile),
		readable("--nats-key", s.KeyFile),
		pair("--nats-cert", s.CertFile, "--nats-key", s.KeyFile),
	}
	if p := s.InboxPrefix; p != "" && (strings.ContainsAny(p, " *>\t") || strings.HasPrefix(p, ".") || strings.HasSuffix(p, ".")) {
		errs = append(errs, fmt.Errorf("--nats-inbox-prefix: %q is not a subject prefix (no spaces, wildcards or leading/trailing dot)", p))
	}
	return errors.Join(errs...)
}

// RedisSecurity is how a binary proves itself to Redis and checks the
// server, beyond the ACL user and password in --redis-url.
type RedisSecurity struct {
	// PasswordFile holds the password (one line); it overrides a password
	// in the URL, whose user still applies.
	PasswordFile string
	// CAFile is a PEM bundle of CAs that sign the server's certificate
	// (rediss:// only).
	CAFile string
	// CertFile and KeyFile are the client certificate and key, for a
	// server started with tls-auth-clients.
	CertFile string
	KeyFile  string
}

// RegisterFlags registers --redis-password-file, --redis-ca, --redis-cert
// and --redis-key.
func (s *RedisSecurity) RegisterFlags(f *Flags) {
	f.String(&s.PasswordFile, "redis-password-file", "REDIS_PASSWORD_FILE", s.PasswordFile, "file holding the Redis password (overrides one in --redis-url)")
	f.String(&s.CAFile, "redis-ca", "REDIS_CA", s.CAFile, "PEM file of CAs to verify Redis with (rediss:// URLs)")
	f.String(&s.CertFile, "redis-cert", "REDIS_CERT", s.CertFile, "client certificate (PEM) for Redis TLS")
	f.String(&s.KeyFile, "redis-key", "REDIS_KEY", s.KeyFile, "client key (PEM) for Redis TLS")
}

// Validate checks that the files are readable and come in pairs, and that
// TLS files go with a rediss:// url.
func (s *RedisSecurity) Validate(redisURL string) error {
	errs := []error{
		readable("--redis-password-file", s.PasswordFile),
		readable("--redis-ca", s.CAFile),
		readable("--redis-cert", s.CertFile),
		readable("--redis-key", s.KeyFile),
		pair("--redis-cert", s.CertFile, "--redis-key", s.KeyFile),
	}
	if (s.CAFile != "" || s.CertFile != "") && !strings.HasPrefix(redisURL, "rediss://") {
		errs = append(errs, fmt.Errorf("--redis-ca, --redis-cert: TLS needs a rediss:// --redis-url, not %s", RedactURL(redisURL)))
	}
	return errors.Join(errs...)
}

func readable(flagName, path string) error {
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w", flagName, err)
	}
	f.Close()
	return nil
}

func pair(aName, a, bName, b string) error {
	if (a == "") != (b == "") {
		return fmt.Errorf("%s and %s: give both or neither", aName, bName)
	}
	return nil
}

// RedactURL hides the user information (password, token, user) of a URL,
// or of each URL of a comma-separated list, so it can be logged or shown.
func RedactURL(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = redactOne(strings.TrimSpace(p))
	}
	return strings.Join(parts, ",")
}

func redactOne(s string) string {
	if u, err := url.Parse(s); err == nil && u.Host != "" {
		if u.User == nil {
			return s
		}
		u.User = nil
		plain := u.String()
		if i := strings.Index(plain, "://"); i >= 0 {
			return plain[:i+3] + "***@" + plain[i+3:]
		}
		return plain
	}
	// Unparseable: hide everything between the scheme and the last @.
	at := strings.LastIndex(s, "@")
	if at < 0 {
		return s
	}
	if scheme := strings.Index(s, "://"); scheme >= 0 && scheme < at {
		return s[:scheme+3] + "***" + s[at:]
	}
	return "***" + s[at:]
}
