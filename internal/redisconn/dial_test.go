package redisconn_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/alauda/costmeter/internal/config"
	"github.com/alauda/costmeter/internal/redisconn"
	"github.com/alauda/costmeter/internal/testenv"
)

const redisSecret = "r3dis-Secret-pw"

// TestDialTLSAndACL runs redis-server with a TLS port that verifies client
// certificates and an ACL user with a password, and connects with
// rediss://, the CA, the client certificate and the password from a file
// or the URL.
func TestDialTLSAndACL(t *testing.T) {
	pki := testenv.NewPKI(t)
	tlsPort := testenv.FreePort(t)
	testenv.StartRedis(t, testenv.WithArgs(
		"--tls-port", strconv.Itoa(tlsPort),
		"--tls-cert-file", pki.ServerCert, "--tls-key-file", pki.ServerKey,
		"--tls-ca-cert-file", pki.CA, "--tls-auth-clients", "yes",
		"--user", "costmeter", "on", ">"+redisSecret, "~*", "&*", "+@all",
	))
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "password")
	if err := os.WriteFile(pwFile, []byte(redisSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wrongPwFile := filepath.Join(dir, "wrong")
	if err := os.WriteFile(wrongPwFile, []byte("guess\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(tlsPort)
	tlsFiles := config.RedisSecurity{CAFile: pki.CA, CertFile: pki.ClientCert, KeyFile: pki.ClientKey}
	withPw := tlsFiles
	withPw.PasswordFile = pwFile
	withWrongPw := tlsFiles
	withWrongPw.PasswordFile = wrongPwFile

	tests := []struct {
		name    string
		url     string
		sec     config.RedisSecurity
		wantErr bool
	}{
		{name: "password file", url: "rediss://costmeter@" + addr + "/0", sec: withPw},
		{name: "password in url", url: "rediss://costmeter:" + redisSecret + "@" + addr + "/0", sec: tlsFiles},
		{name: "file overrides url", url: "rediss://costmeter:nope@" + addr + "/0", sec: withPw},
		{name: "wrong password", url: "rediss://costmeter@" + addr + "/0", sec: withWrongPw, wantErr: true},
		{name: "wrong password in url", url: "rediss://costmeter:" + redisSecret + "x@" + addr + "/0", sec: tlsFiles, wantErr: true},
		{name: "untrusted server", url: "rediss://costmeter@" + addr + "/0", sec: config.RedisSecurity{PasswordFile: pwFile, CAFile: pki.OtherCA, CertFile: pki.ClientCert, KeyFile: pki.ClientKey}, wantErr: true},
		{name: "system roots only", url: "rediss://costmeter@" + addr + "/0", sec: config.RedisSecurity{PasswordFile: pwFile}, wantErr: true},
		{name: "no client certificate", url: "rediss://costmeter@" + addr + "/0", sec: config.RedisSecurity{PasswordFile: pwFile, CAFile: pki.CA}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rdb, err := redisconn.Dial(tt.url, redisconn.WithSecurity(tt.sec))
			if err != nil {
				t.Fatal(err)
			}
			defer rdb.Close()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			err = redisconn.Ping(ctx, rdb)
			if tt.wantErr {
				if err == nil {
					t.Fatal("connected")
				}
				if strings.Contains(err.Error(), redisSecret) {
					t.Fatalf("error carries the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			who, err := rdb.Do(ctx, "ACL", "WHOAMI").Text()
			if err != nil || who != "costmeter" {
				t.Fatalf("whoami = %q, %v", who, err)
			}
			if rdb.(*redis.Client).Options().TLSConfig == nil {
				t.Fatal("not TLS")
			}
		})
	}
}

func TestDialErrorsHideSecrets(t *testing.T) {
	pki := testenv.NewPKI(t)
	tests := []struct {
		name string
		url  string
		opts []redisconn.DialOption
	}{
		{name: "bad port", url: "redis://costmeter:" + redisSecret + "@127.0.0.1:notaport/0"},
		{name: "bad db", url: "redis://costmeter:" + redisSecret + "@127.0.0.1:6379/x"},
		{name: "bad scheme", url: "http://costmeter:" + redisSecret + "@127.0.0.1:6379/0"},
		{name: "tls files on redis://", url: "redis://costmeter:" + redisSecret + "@127.0.0.1:6379/0", opts: []redisconn.DialOption{redisconn.WithTLSFiles(pki.CA, "", "")}},
		{name: "missing password file", url: "redis://127.0.0.1:6379/0", opts: []redisconn.DialOption{redisconn.WithPasswordFile(filepath.Join(t.TempDir(), "none"))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rdb, err := redisconn.Dial(tt.url, tt.opts...)
			if err == nil {
				rdb.Close()
				t.Fatal("accepted")
			}
			if strings.Contains(err.Error(), redisSecret) {
				t.Fatalf("error carries the password: %v", err)
			}
		})
	}
}

// TestPasswordFileRotation changes the ACL user's password on the server
// and in the file; new connections use the new one without a new client.
func TestPasswordFileRotation(t *testing.T) {
	r := testenv.StartRedis(t, testenv.WithArgs("--user", "costmeter", "on", ">"+redisSecret, "~*", "&*", "+@all"))
	pwFile := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pwFile, []byte(redisSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	rdb, err := redisconn.Dial("redis://costmeter@"+r.Addr()+"/0", redisconn.WithPasswordFile(pwFile))
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := redisconn.Ping(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	const rotated = "r0tated-Secret-pw"
	admin := r.Client() // the default user
	if err := admin.Do(ctx, "ACL", "SETUSER", "costmeter", "resetpass", ">"+rotated).Err(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pwFile, []byte(rotated+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Drop the client's authenticated connections: it must reconnect.
	if err := admin.Do(ctx, "CLIENT", "KILL", "USER", "costmeter").Err(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "reconnects with the rotated password", func() (bool, string) {
		who, err := rdb.Do(ctx, "ACL", "WHOAMI").Text()
		return err == nil && who == "costmeter", fmt.Sprintf("%q %v", who, err)
	})
	// An emptied file keeps the last good password.
	if err := os.WriteFile(pwFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := admin.Do(ctx, "CLIENT", "KILL", "USER", "costmeter").Err(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "reconnects with the last good password", func() (bool, string) {
		err := redisconn.Ping(ctx, rdb)
		return err == nil, fmt.Sprint(err)
	})
}
