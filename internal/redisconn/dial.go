// Package redisconn opens Redis clients the same way in every binary: one
// URL gives a plain or a Redis Cluster client with deadlines on every
// call, the password may come from a file that is re-read on rotation,
// TLS files verify the server and present a client certificate, and
// commands can be traced. The key layout is internal/rollup's business;
// this package knows nothing of it.
package redisconn

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

// ClusterStateReload is how often a cluster client re-reads the slot map
// while it is in use. go-redis learns of a failover from MOVED replies,
// which a client that only ever reaches a dead master never gets; its
// own default (60 s) would stall ingest that long after a failover.
const ClusterStateReload = 2 * time.Second

// Dial opens a Redis client for rawURL with deadlines on every call. A
// URL with one address (redis://, rediss:// or unix://, with an ACL user
// and password as redis://user:password@host:6379/0) gives a plain
// client; several addresses in go-redis's cluster form,
// redis://[user:password@]host1:7000?addr=host2:7001&addr=host3:7002
// (or rediss://), give a Redis Cluster client that discovers the other
// nodes from them. Password files, TLS files and the ACL user apply to
// both. It does not wait for the server. Errors never carry the URL's
// credentials.
func Dial(rawURL string, opts ...DialOption) (redis.UniversalClient, error) {
	if isClusterURL(rawURL) {
		return dialCluster(rawURL, opts)
	}
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

// isClusterURL reports whether rawURL names more than one address (addr
// query parameters).
func isClusterURL(rawURL string) bool {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
		return false
	}
	return u.Query().Has("addr")
}

func dialCluster(rawURL string, opts []DialOption) (redis.UniversalClient, error) {
	u, _ := url.Parse(rawURL)
	if p := strings.Trim(u.Path, "/"); p != "" && p != "0" {
		return nil, fmt.Errorf("parse redis url %s: a Redis Cluster has only database 0, the url names %q", config.RedactURL(rawURL), p)
	}
	u.Path = ""
	co, err := redis.ParseClusterURL(u.String())
	if err != nil {
		return nil, fmt.Errorf("parse redis cluster url %s: %s", config.RedactURL(rawURL), scrub(scrub(err.Error(), u.String()), rawURL))
	}
	// The options apply to one node's settings; the cluster client hands
	// the same user, password, credentials provider and TLS settings to
	// every node it connects to.
	o := &redis.Options{Username: co.Username, Password: co.Password, TLSConfig: co.TLSConfig}
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return nil, err
		}
	}
	co.Username, co.Password, co.CredentialsProviderContext = o.Username, o.Password, o.CredentialsProviderContext
	co.TLSConfig = o.TLSConfig
	if co.TLSConfig != nil {
		// Nodes announce themselves by address, so each is verified under
		// the name it is dialled by rather than the first address's.
		co.TLSConfig.ServerName = ""
	}
	co.DialTimeout = 5 * time.Second
	co.ReadTimeout = 10 * time.Second
	co.WriteTimeout = 10 * time.Second
	co.PoolSize = 32
	co.ClusterStateReloadInterval = ClusterStateReload
	return redis.NewClusterClient(co), nil
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
