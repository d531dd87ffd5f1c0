package natsconn

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"

	"github.com/alauda/costmeter/internal/config"
)

// SecurityOptions turns --nats-creds, --nats-ca, --nats-cert, --nats-key
// and --nats-inbox-prefix into connect options for Connect. The files are
// read now, so a bad file fails at start, not at the first reconnect.
// A user and password or token travel in the URL (nats://user:pass@host,
// nats://token@host); Connect keeps them out of logs and errors.
func SecurityOptions(s config.NATSSecurity) ([]nats.Option, error) {
	var opts []nats.Option
	if s.CredsFile != "" {
		if _, err := os.Stat(s.CredsFile); err != nil {
			return nil, fmt.Errorf("nats credentials: %w", err)
		}
		opts = append(opts, nats.UserCredentials(s.CredsFile))
	}
	if s.CAFile != "" || s.CertFile != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if s.CAFile != "" {
			pool, err := certPool(s.CAFile)
			if err != nil {
				return nil, fmt.Errorf("nats ca: %w", err)
			}
			tc.RootCAs = pool
		}
		if s.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("nats client certificate: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, nats.Secure(tc))
	}
	if s.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(s.InboxPrefix))
	}
	return opts, nil
}

func certPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate found", path)
	}
	return pool, nil
}
