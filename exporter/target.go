package exporter

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// ErrNotExist is returned by Target.Open for an object that is not there.
var ErrNotExist = errors.New("object does not exist")

// Target is where the export's objects go: names are slash-separated
// paths under the target's root. Put replaces an object atomically: a
// reader sees the old whole object or the new whole object, never a part.
type Target interface {
	Put(ctx context.Context, name string, r io.Reader, size int64) error
	// Open returns the object's content and size, or an error wrapping
	// ErrNotExist.
	Open(ctx context.Context, name string) (io.ReadCloser, int64, error)
}

// S3Config is how an s3:// target is reached. Credentials come from
// AccessKey/SecretKey (the AWS_* environment variables through the
// flags), else from the AWS shared credentials file, else none
// (anonymous).
type S3Config struct {
	Endpoint        string
	Region          string
	AccessKey       string
	SecretKey       string
	SessionToken    string
	CredentialsFile string
	Profile         string
	// Insecure talks plain HTTP to Endpoint.
	Insecure bool
	// CAFile adds a PEM CA bundle to the system roots.
	CAFile string
	// PathStyle addresses buckets as endpoint/bucket (most S3-compatible
	// stores) instead of bucket.endpoint.
	PathStyle bool
}

// OpenTarget parses a target URL (file:///abs/dir or s3://bucket/prefix)
// and returns its Target.
func OpenTarget(raw string, s3 S3Config) (Target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("export target %q: %w", raw, err)
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("export target %q: a file URL names no host: file:///abs/dir", raw)
		}
		if !filepath.IsAbs(u.Path) {
			return nil, fmt.Errorf("export target %q: the directory must be absolute: file:///abs/dir", raw)
		}
		return &fileTarget{root: filepath.Clean(u.Path)}, nil
	case "s3":
		if u.Host == "" {
			return nil, fmt.Errorf("export target %q: no bucket: s3://bucket/prefix", raw)
		}
		return newS3Target(u.Host, strings.Trim(u.Path, "/"), s3)
	}
	return nil, fmt.Errorf("export target %q: scheme %q is not file or s3", raw, u.Scheme)
}

// fileTarget keeps objects as files under root. Put writes a hidden
// temporary file beside the object, syncs it and renames it into place
// (atomic on one file system), then syncs the directory.
type fileTarget struct{ root string }

func (t *fileTarget) path(name string) string { return filepath.Join(t.root, filepath.FromSlash(name)) }

func (t *fileTarget) Put(_ context.Context, name string, r io.Reader, _ int64) error {
	dst := t.path(name)
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := io.Copy(tmp, r); err != nil {
		tmp.Close()
		return fmt.Errorf("put %s: write: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("put %s: sync: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("put %s: rename: %w", name, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func (t *fileTarget) Open(_ context.Context, name string) (io.ReadCloser, int64, error) {
	f, err := os.Open(t.path(name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, fmt.Errorf("open %s: %w", name, ErrNotExist)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("open %s: %w", name, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("open %s: %w", name, err)
	}
	return f, st.Size(), nil
}

// s3Target keeps objects in a bucket under a prefix. A PUT replaces an
// object atomically.
type s3Target struct {
	c      *minio.Client
	bucket string
	prefix string
}

func newS3Target(bucket, prefix string, cfg S3Config) (*s3Target, error) {
	if cfg.Endpoint == "" {
		return nil, errors.New("s3 target: no endpoint (--s3-endpoint)")
	}
	var creds *credentials.Credentials
	switch {
	case cfg.AccessKey != "" || cfg.SecretKey != "":
		creds = credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken)
	case cfg.CredentialsFile != "":
		creds = credentials.NewFileAWSCredentials(cfg.CredentialsFile, cfg.Profile)
	default:
		creds = credentials.NewStaticV4("", "", "")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("s3 target: read CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("s3 target: CA file %s holds no PEM certificate", cfg.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	opts := &minio.Options{Creds: creds, Secure: !cfg.Insecure, Region: cfg.Region, Transport: tr}
	if cfg.PathStyle {
		opts.BucketLookup = minio.BucketLookupPath
	}
	c, err := minio.New(cfg.Endpoint, opts)
	if err != nil {
		return nil, fmt.Errorf("s3 target: %w", err)
	}
	return &s3Target{c: c, bucket: bucket, prefix: prefix}, nil
}

func (t *s3Target) key(name string) string {
	if t.prefix == "" {
		return name
	}
	return path.Join(t.prefix, name)
}

func (t *s3Target) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	ct := "application/octet-stream"
	switch {
	case strings.HasSuffix(name, ".json"):
		ct = "application/json"
	case strings.HasSuffix(name, ".csv.gz"):
		ct = "application/gzip"
	}
	if _, err := t.c.PutObject(ctx, t.bucket, t.key(name), r, size, minio.PutObjectOptions{ContentType: ct}); err != nil {
		return fmt.Errorf("put s3://%s/%s: %w", t.bucket, t.key(name), err)
	}
	return nil
}

func (t *s3Target) Open(ctx context.Context, name string) (io.ReadCloser, int64, error) {
	o, err := t.c.GetObject(ctx, t.bucket, t.key(name), minio.GetObjectOptions{})
	if err != nil {
		return nil, 0, fmt.Errorf("get s3://%s/%s: %w", t.bucket, t.key(name), err)
	}
	st, err := o.Stat()
	if err != nil {
		o.Close()
		if minio.ToErrorResponse(err).Code == minio.NoSuchKey {
			return nil, 0, fmt.Errorf("get s3://%s/%s: %w", t.bucket, t.key(name), ErrNotExist)
		}
		return nil, 0, fmt.Errorf("get s3://%s/%s: %w", t.bucket, t.key(name), err)
	}
	return o, st.Size, nil
}
