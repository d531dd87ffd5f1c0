package rollup

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/alauda/costmeter/internal/config"
)

// DialOption adjusts the client options Dial builds from the URL.
type DialOption func(*redis.Options) error

// WithPasswordFile takes the password from a file (its first line), so it
// need not be in the URL or the environment; the URL's user (an ACL user)
// still applies. The file is read again for every new connection, so a
// rotated Secret takes effect without a restart; while it is unreadable
// or empty, the last good password is used.
func WithPasswordFile(path string) DialOption {
	return func(o *redis.Options) error {
		pw, err := readPassword(path)
		if err != nil {
			return err
		}
		o.Password = pw
		user := o.Username
		var mu sync.Mutex
		o.CredentialsProviderContext = func(context.Context) (string, string, error) {
			mu.Lock()
			defer mu.Unlock()
			if p, err := readPassword(path); err == nil {
				pw = p
			}
			return user, pw, nil
		}
		return nil
	}
}

func readPassword(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read redis password file: %w", err)
	}
	pw, _, _ := strings.Cut(string(b), "\n")
	pw = strings.TrimRight(pw, "\r")
	if pw == "" {
		return "", fmt.Errorf("redis password file %s is empty", path)
	}
	return pw, nil
}

// WithTLSFiles verifies the server with the CAs in caFile (when set) and
// presents the client certificate certFile/keyFile (when set). The URL
// must be rediss://.
func WithTLSFiles(caFile, certFile, keyFile string) DialOption {
	return func(o *redis.Options) error {
		if o.TLSConfig == nil {
			return errors.New("redis TLS files need a rediss:// url")
		}
		if caFile != "" {
			pem, err := os.ReadFile(caFile)
			if err != nil {
				return fmt.Errorf("read redis ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return fmt.Errorf("redis ca %s: no PEM certificate found", caFile)
			}
			o.TLSConfig.RootCAs = pool
		}
		if certFile != "" {
			cert, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				return fmt.Errorf("load redis client certificate: %w", err)
			}
			o.TLSConfig.Certificates = []tls.Certificate{cert}
		}
		if o.TLSConfig.MinVersion < tls.VersionTLS12 {
			o.TLSConfig.MinVersion = tls.VersionTLS12
		}
		return nil
	}
}

// WithSecurity applies --redis-password-file, --redis-ca, --redis-cert
// and --redis-key.
func WithSecurity(s config.RedisSecurity) DialOption {
	return func(o *redis.Options) error {
		if s.PasswordFile != "" {
			if err := WithPasswordFile(s.PasswordFile)(o); err != nil {
				return err
			}
		}
		if s.CAFile != "" || s.CertFile != "" {
			return WithTLSFiles(s.CAFile, s.CertFile, s.KeyFile)(o)
		}
		return nil
	}
}

// Dial opens a Redis client for rawURL (redis://, rediss:// or unix://,
// with an ACL user and password as redis://user:password@host:6379/0)
// with deadlines on every call. It does not wait for the server. Errors
// never carry the URL's credentials.
func Dial(rawURL string, opts ...DialOption) (*redis.Client, error) {
	o, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("parse redis url %s: %s", config.RedactURL(rawURL), scrub(err.Error(), rawURL))
	}
	o.DialTimeout = 5 * time.Second
	o.ReadTimeout = 10 * time.Second
	o.WriteTimeout = 10 * time.Second
	o.PoolSize = 32
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return nil, err
		}
	}
	return redis.NewClient(o), nil
}

// scrub removes rawURL and its user information from msg.
func scrub(msg, rawURL string) string {
	msg = strings.ReplaceAll(msg, rawURL, config.RedactURL(rawURL))
	if u, err := url.Parse(rawURL); err == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			msg = strings.ReplaceAll(msg, pw, "***")
		}
	}
	return msg
}

// Ping checks that Redis answers.
func Ping(ctx context.Context, rdb redis.UniversalClient) error {
	if err := rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("ping redis: %w", err)
	}
	return nil
}
