package natsconn_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	natstest "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/alauda/costmeter/internal/config"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/testenv"
)

// startTLS runs JetStream with TLS that verifies client certificates, and
// a user with a password.
func startTLS(t *testing.T, pki *testenv.PKI) *server.Server {
	t.Helper()
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, CaFile: pki.CA, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	opts := natstest.DefaultTestOptions
	opts.Port = -1
	opts.JetStream = true
	opts.StoreDir = t.TempDir()
	opts.TLSConfig = tc
	opts.TLS = true
	opts.TLSVerify = true
	opts.TLSTimeout = 2
	opts.Username = "collector"
	opts.Password = "pa55-w0rd-secret"
	srv := natstest.RunServer(&opts)
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return srv
}

func TestConnectTLS(t *testing.T) {
	pki := testenv.NewPKI(t)
	srv := startTLS(t, pki)
	goodURL := "nats://collector:pa55-w0rd-secret@127.0.0.1:" + strconv.Itoa(srv.Addr().(*net.TCPAddr).Port)

	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	opts, err := natsconn.SecurityOptions(config.NATSSecurity{CAFile: pki.CA, CertFile: pki.ClientCert, KeyFile: pki.ClientKey, InboxPrefix: "_INBOX_collector"})
	if err != nil {
		t.Fatal(err)
	}
	nc, js, err := natsconn.Connect(goodURL, "cost-test", log, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	testenv.Eventually(t, 10*time.Second, "connected over TLS", func() (bool, string) {
		return nc.Status() == nats.CONNECTED, nc.Status().String()
	})
	st, err := nc.TLSConnectionState()
	if err != nil || !st.HandshakeComplete || len(st.PeerCertificates) == 0 {
		t.Fatalf("not TLS: %+v %v", st, err)
	}
	// JetStream works through it, replies arriving on the custom inbox.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	ack, err := js.Publish(ctx, "t.1", []byte("x"))
	if err != nil || ack.Sequence != 1 {
		t.Fatalf("publish: %+v %v", ack, err)
	}
	if inbox := nc.NewRespInbox(); !strings.HasPrefix(inbox, "_INBOX_collector.") {
		t.Fatalf("inbox %s", inbox)
	}

	// What must fail: each connects without retrying, so failure is an
	// error now.
	plainConnect := func(url string, s config.NATSSecurity) error {
		o, err := natsconn.SecurityOptions(s)
		if err != nil {
			return err
		}
		c, err := nats.Connect(url, append(o, nats.Timeout(5*time.Second))...)
		if err == nil {
			c.Close()
		}
		return err
	}
	tests := []struct {
		name string
		url  string
		sec  config.NATSSecurity
	}{
		{name: "untrusted server ca", url: goodURL, sec: config.NATSSecurity{CAFile: pki.OtherCA, CertFile: pki.ClientCert, KeyFile: pki.ClientKey}},
		{name: "system roots only", url: goodURL, sec: config.NATSSecurity{CertFile: pki.ClientCert, KeyFile: pki.ClientKey}},
		{name: "no client certificate", url: goodURL, sec: config.NATSSecurity{CAFile: pki.CA}},
		{name: "wrong password", url: strings.Replace(goodURL, "pa55-w0rd-secret", "guess", 1), sec: config.NATSSecurity{CAFile: pki.CA, CertFile: pki.ClientCert, KeyFile: pki.ClientKey}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := plainConnect(tt.url, tt.sec)
			if err == nil {
				t.Fatal("connected")
			}
			if strings.Contains(err.Error(), "pa55-w0rd-secret") {
				t.Fatalf("error carries the password: %v", err)
			}
		})
	}
	if strings.Contains(logs.String(), "pa55-w0rd-secret") {
		t.Fatalf("log carries the password: %s", logs.String())
	}
}

func TestSecurityOptionsBadFiles(t *testing.T) {
	pki := testenv.NewPKI(t)
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		sec  config.NATSSecurity
	}{
		{name: "missing ca", sec: config.NATSSecurity{CAFile: filepath.Join(dir, "nope.pem")}},
		{name: "ca not pem", sec: config.NATSSecurity{CAFile: notPEM}},
		{name: "key does not match", sec: config.NATSSecurity{CertFile: pki.ClientCert, KeyFile: pki.ServerKey}},
		{name: "missing creds", sec: config.NATSSecurity{CredsFile: filepath.Join(dir, "x.creds")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := natsconn.SecurityOptions(tt.sec); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// TestConnectCreds runs a server in operator mode and connects with a
// credentials file (user JWT and nkey seed), as NGS or a nsc-managed
// deployment hands out.
func TestConnectCreds(t *testing.T) {
	okp, _ := nkeys.CreateOperator()
	opub, _ := okp.PublicKey()
	oc := jwt.NewOperatorClaims(opub)
	ojwt, err := oc.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	oclaims, err := jwt.DecodeOperatorClaims(ojwt)
	if err != nil {
		t.Fatal(err)
	}
	akp, _ := nkeys.CreateAccount()
	apub, _ := akp.PublicKey()
	ajwt, err := jwt.NewAccountClaims(apub).Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	ukp, _ := nkeys.CreateUser()
	upub, _ := ukp.PublicKey()
	uc := jwt.NewUserClaims(upub)
	uc.Pub.Allow.Add("cost.samples.east")
	ujwt, err := uc.Encode(akp)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := ukp.Seed()
	creds, err := jwt.FormatUserConfig(ujwt, seed)
	if err != nil {
		t.Fatal(err)
	}
	credsFile := filepath.Join(t.TempDir(), "collector.creds")
	if err := os.WriteFile(credsFile, creds, 0o600); err != nil {
		t.Fatal(err)
	}

	resolver := &server.MemAccResolver{}
	if err := resolver.Store(apub, ajwt); err != nil {
		t.Fatal(err)
	}
	opts := natstest.DefaultTestOptions
	opts.Port = -1
	opts.TrustedOperators = []*jwt.OperatorClaims{oclaims}
	opts.AccountResolver = resolver
	srv := natstest.RunServer(&opts)
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()

	sec, err := natsconn.SecurityOptions(config.NATSSecurity{CredsFile: credsFile})
	if err != nil {
		t.Fatal(err)
	}
	nc, _, err := natsconn.Connect(srv.ClientURL(), "cost-test", slog.New(slog.NewTextHandler(io.Discard, nil)), sec...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	testenv.Eventually(t, 10*time.Second, "connected with credentials", func() (bool, string) {
		return nc.Status() == nats.CONNECTED, nc.Status().String()
	})
	// The JWT's permissions hold: publishing elsewhere is refused.
	errs := make(chan error, 1)
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errs <- err:
		default:
		}
	})
	if err := nc.Publish("cost.samples.west", []byte("x")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Fatalf("err = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no permissions violation reported")
	}
	// Without credentials nobody gets in.
	if c, err := nats.Connect(srv.ClientURL()); err == nil {
		c.Close()
		t.Fatal("connected without credentials")
	}
}
