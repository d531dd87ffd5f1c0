package config_test

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/alauda/costmeter/internal/config"
)

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://user:secret@nats:4222", "nats://***@nats:4222"},
		{"nats://s3cr3ttoken@nats:4222", "nats://***@nats:4222"},
		{"nats://u:secret@a:4222,nats://u:secret@b:4222", "nats://***@a:4222,nats://***@b:4222"},
		{"rediss://costmeter:secret@redis:6380/0", "rediss://***@redis:6380/0"},
		{"redis://u:secret@host:notaport/0", "redis://***@host:notaport/0"},
		{"u:secret@host", "***@host"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := config.RedactURL(tt.in); got != tt.want {
				t.Fatalf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestCommonValidateHidesSecrets(t *testing.T) {
	c := config.Common{NATSURL: "nats://u:topsecret@:bad:port", RedisURL: "http://u:topsecret@x/0"}
	err := c.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	if strings.Contains(err.Error(), "topsecret") {
		t.Fatalf("error carries the password: %v", err)
	}
}

func TestSecurityFlags(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f.pem")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		redisURL string
		wantErr  string
	}{
		{name: "none", redisURL: "redis://h:6379/0"},
		{name: "all", args: []string{"--nats-creds", file, "--nats-ca", file, "--nats-cert", file, "--nats-key", file, "--nats-inbox-prefix", "_INBOX_api", "--redis-password-file", file, "--redis-ca", file, "--redis-cert", file, "--redis-key", file}, redisURL: "rediss://h:6380/0"},
		{name: "from env", env: map[string]string{"NATS_CA": file, "REDIS_PASSWORD_FILE": file}, redisURL: "redis://h:6379/0"},
		{name: "missing file", args: []string{"--nats-ca", missing}, redisURL: "redis://h/0", wantErr: "--nats-ca"},
		{name: "cert without key", args: []string{"--nats-cert", file}, redisURL: "redis://h/0", wantErr: "give both"},
		{name: "redis ca without rediss", args: []string{"--redis-ca", file}, redisURL: "redis://u:pw123@h/0", wantErr: "rediss://"},
		{name: "bad inbox prefix", args: []string{"--nats-inbox-prefix", "_INBOX.>"}, redisURL: "redis://h/0", wantErr: "--nats-inbox-prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			f := config.NewFlags(fs, func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
			var ns config.NATSSecurity
			var rs config.RedisSecurity
			ns.RegisterFlags(f)
			rs.RegisterFlags(f)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			err := ns.Validate()
			if err == nil {
				err = rs.Validate(tt.redisURL)
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "pw123") {
				t.Fatalf("error carries the password: %v", err)
			}
		})
	}
}

func TestValidateNATSURLs(t *testing.T) {
	tests := []struct {
		name, in string
		wantErr  []string
	}{
		{name: "one", in: "nats://127.0.0.1:4222"},
		{name: "three with spaces", in: "nats://a:4222, nats://b:4222 ,tls://c:4222"},
		{name: "credentials in each", in: "nats://u:pw@a:4222,nats://u:pw@b:4222"},
		{name: "websocket", in: "wss://nats.example:443"},
		{name: "trailing comma", in: "nats://a:4222,"},
		{name: "empty element only", in: " , ", wantErr: []string{"names no server"}},
		{name: "second without scheme", in: "nats://a:4222,b:4222", wantErr: []string{`"b:4222" is not a URL`}},
		{name: "http scheme", in: "http://a:4222", wantErr: []string{`"http://a:4222" is not a URL`}},
		{name: "bad port", in: "nats://a:4222,nats://b:99999", wantErr: []string{`"nats://b:99999" has no valid port`}},
		{name: "two bad, secret hidden", in: "nats://u:topsecret@:x:y,redis://r:6379", wantErr: []string{"***@", `"redis://r:6379" is not a URL`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := config.ValidateNATSURLs("--nats-url", tt.in)
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) || !strings.HasPrefix(err.Error(), "--nats-url: ") {
					t.Fatalf("error %q does not name --nats-url and %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "topsecret") {
				t.Fatalf("error carries the password: %v", err)
			}
		})
	}
}
