// Package kubetest runs a real Kubernetes control plane for tests: etcd and
// kube-apiserver as child processes on free loopback ports, and a fake
// metrics-server (MetricsServer) registered as the metrics.k8s.io
// APIService. It hands a test an admin client and clients for
// ServiceAccounts, which the API server authorises with RBAC.
//
// The binaries come from `make k8s-testbin` (module test/k8s, run by
// `make test`), which builds Kubernetes KubernetesVersion and etcd
// EtcdVersion once per machine into BinDir; a test whose binaries are
// missing fails saying to run it.
//
// There are no nodes and no kubelets: pods stay Pending unless a test
// plays the kubelet and writes their status itself. There is no controller
// manager either (building it doubled the cold build): the harness does the
// little of its work the tests need, when asked. EnsureNamespace creates a
// namespace's default ServiceAccount, which the API server's admission
// requires of every pod, as the serviceaccount controller does; SetQuota
// writes a ResourceQuota's status as the resourcequota controller does,
// after which the API server's quota admission charges each new pod and
// claim to it. What no one does here: a deleted namespace stays
// Terminating and a deleted claim keeps its pvc-protection finalizer, a
// quota's usage is not released when a pod ends, and owners' dependents are
// not garbage-collected.
//
// Start-up takes a few seconds and about 400 MiB: a test package shares
// one Cluster through Shared.
package kubetest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Versions of the control plane, as test/k8s/go.mod pins them.
const (
	KubernetesVersion = "v1.37.2"
	EtcdVersion       = "v3.7.0"
)

// BinDirEnv overrides where the binaries are looked for.
const BinDirEnv = "COSTMETER_K8S_TESTBIN"

// Binaries the harness runs.
var binaries = []string{"etcd", "kube-apiserver"}

// BinDir is where `make k8s-testbin` puts the binaries: $COSTMETER_K8S_TESTBIN,
// else ${XDG_CACHE_HOME:-$HOME/.cache}/costmeter/k8s-testbin/<KubernetesVersion>.
func BinDir() (string, error) {
	if d := os.Getenv(BinDirEnv); d != "" {
		return d, nil
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("find the k8s-testbin cache: %w", err)
		}
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "costmeter", "k8s-testbin", KubernetesVersion), nil
}

// ErrNoBinaries means the control plane's binaries are not built.
var ErrNoBinaries = errors.New("kubernetes test binaries missing: run `make k8s-testbin` (builds kube-apiserver and etcd once per machine; `make test` runs it first)")

// findBinaries checks that every binary is in BinDir.
func findBinaries() (string, error) {
	dir, err := BinDir()
	if err != nil {
		return "", err
	}
	var missing []string
	for _, b := range binaries {
		if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("%w: %s not in %s", ErrNoBinaries, strings.Join(missing, ", "), dir)
	}
	return dir, nil
}

// Cluster is a running control plane.
type Cluster struct {
	// Admin is a client of user "admin" in group system:masters.
	Admin kubernetes.Interface
	// Metrics is the fake metrics-server behind metrics.k8s.io.
	Metrics *MetricsServer

	dir, bin  string
	caPEM     []byte
	host      string
	etcdURL   string
	token     string
	etcd      *process
	apiserver *process
	stopOnce  sync.Once
}

// startTimeout bounds each component's start; generous because the
// machines that run the tests are shared.
const startTimeout = 3 * time.Minute

// Start starts a control plane whose files live in dir (the caller
// removes it after Stop).
func Start(ctx context.Context, dir string) (_ *Cluster, err error) {
	bin, err := findBinaries()
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, bin: bin, token: "admin-" + randomHex(16)}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	if err := c.writeFiles(); err != nil {
		return nil, err
	}
	if err := c.startEtcd(ctx); err != nil {
		return nil, err
	}
	if err := c.startAPIServer(ctx); err != nil {
		return nil, err
	}
	c.Metrics = newMetricsServer()
	if err := c.registerMetrics(ctx); err != nil {
		return nil, err
	}
	// As on a real cluster, pods can run in "default" from the start.
	if err := c.EnsureNamespace(ctx, "default", nil); err != nil {
		return nil, err
	}
	return c, nil
}

// AdminConfig is a fresh copy of the admin's client configuration.
func (c *Cluster) AdminConfig() *rest.Config {
	return c.config(c.token)
}

func (c *Cluster) config(token string) *rest.Config {
	return &rest.Config{Host: c.host, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: c.caPEM},
		QPS: 100, Burst: 200, Timeout: 30 * time.Second}
}

// ServiceAccountConfig creates the ServiceAccount namespace/name (and its
// namespace) if missing and returns a client configuration with a token of
// it, valid for an hour: what a pod running as it would use.
func (c *Cluster) ServiceAccountConfig(ctx context.Context, namespace, name string) (*rest.Config, error) {
	if err := c.EnsureNamespace(ctx, namespace, nil); err != nil {
		return nil, err
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
	if _, err := c.Admin.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("create service account %s/%s: %w", namespace, name, err)
	}
	secs := int64(3600)
	tr, err := c.Admin.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &secs}}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create token of service account %s/%s: %w", namespace, name, err)
	}
	return c.config(tr.Status.Token), nil
}

// EnsureNamespace creates a namespace with labels unless it exists, and
// its default ServiceAccount unless that exists, as the serviceaccount
// controller would: the API server admits no pod without it.
func (c *Cluster) EnsureNamespace(ctx context.Context, name string, labels map[string]string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if _, err := c.Admin.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: "default"}}
	if _, err := c.Admin.CoreV1().ServiceAccounts(name).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create the default service account of namespace %s: %w", name, err)
	}
	return nil
}

// StopAPIServer stops kube-apiserver, breaking every watch; etcd and the
// metrics server keep running.
func (c *Cluster) StopAPIServer() { c.apiserver.stop(30 * time.Second) }

// StartAPIServer starts kube-apiserver again after StopAPIServer, on the
// same port with the same etcd; it returns once it is ready.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	return c.startProcess(ctx, c.apiserver, "kube-apiserver ready after a restart", c.apiserverReady)
}

// Stop stops the components in the order that lets each one exit cleanly
// (metrics, API server, etcd: etcd first makes the API server hang); it is
// idempotent.
func (c *Cluster) Stop() {
	c.stopOnce.Do(func() {
		if c.Metrics != nil {
			c.Metrics.close()
		}
		for _, p := range []*process{c.apiserver, c.etcd} {
			if p != nil {
				p.stop(20 * time.Second)
			}
		}
	})
}

// Logs is the tail of each component's log, for a failing test.
func (c *Cluster) Logs() string {
	var b strings.Builder
	for _, p := range []*process{c.etcd, c.apiserver} {
		if p != nil {
			fmt.Fprintf(&b, "--- %s ---\n%s\n", p.name, p.tail())
		}
	}
	return b.String()
}

func (c *Cluster) path(name string) string { return filepath.Join(c.dir, name) }

// writeFiles writes the serving certificate, the service-account signing
// key and the token file.
func (c *Cluster) writeFiles() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate serving key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:        true, BasicConstraintsValid: true,
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("create serving certificate: %w", err)
	}
	c.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode serving key: %w", err)
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate service account key: %w", err)
	}
	saDER, err := x509.MarshalECPrivateKey(saKey)
	if err != nil {
		return fmt.Errorf("encode service account key: %w", err)
	}
	files := map[string][]byte{
		"serving.crt": c.caPEM,
		"serving.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		"sa.key":      pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: saDER}),
		"tokens.csv":  []byte(c.token + `,admin,admin-uid,"system:masters"` + "\n"),
	}
	for name, b := range files {
		if err := os.WriteFile(c.path(name), b, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	return nil
}

func (c *Cluster) startEtcd(ctx context.Context) error {
	client, peer, err := freePorts(2)
	if err != nil {
		return err
	}
	clientURL := "http://127.0.0.1:" + strconv.Itoa(client)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peer)
	c.etcd = newProcess(c.dir, c.bin, "etcd",
		"--name=test", "--data-dir="+c.path("etcd"),
		"--listen-client-urls="+clientURL, "--advertise-client-urls="+clientURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=test="+peerURL,
		"--unsafe-no-fsync", "--log-level=warn")
	ready := func(ctx context.Context) error {
		return httpGet(ctx, http.DefaultClient, clientURL+"/health", "", `"health":"true"`)
	}
	if err := c.startProcess(ctx, c.etcd, "etcd ready", ready); err != nil {
		return err
	}
	c.etcdURL = clientURL
	return nil
}

func (c *Cluster) startAPIServer(ctx context.Context) error {
	ports, _, err := freePorts(1)
	if err != nil {
		return err
	}
	c.host = "https://127.0.0.1:" + strconv.Itoa(ports)
	c.apiserver = newProcess(c.dir, c.bin, "kube-apiserver",
		"--etcd-servers="+c.etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port="+strconv.Itoa(ports),
		// Without it the API server refuses a loopback advertise address.
		"--endpoint-reconciler-type=none",
		"--cert-dir="+c.path("apiserver-certs"),
		"--tls-cert-file="+c.path("serving.crt"), "--tls-private-key-file="+c.path("serving.key"),
		"--service-account-key-file="+c.path("sa.key"),
		"--service-account-signing-key-file="+c.path("sa.key"),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--token-auth-file="+c.path("tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=10.96.0.0/24",
		"--profiling=false")
	return c.startProcess(ctx, c.apiserver, "kube-apiserver ready", c.apiserverReady)
}

func (c *Cluster) apiserverReady(ctx context.Context) error {
	if c.Admin == nil {
		kc, err := kubernetes.NewForConfig(c.AdminConfig())
		if err != nil {
			return fmt.Errorf("create admin client: %w", err)
		}
		c.Admin = kc
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.caPEM)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}}
	return httpGet(ctx, hc, c.host+"/readyz", c.token, "ok")
}

// metricsService is the Service in kube-system that the metrics.k8s.io
// APIService points at.
const metricsService = "costmeter-test-metrics"

// registerMetrics registers the fake metrics-server as metrics.k8s.io:
// an ExternalName Service to localhost and an APIService that skips TLS
// verification; it returns once the aggregator proxies to it.
func (c *Cluster) registerMetrics(ctx context.Context) error {
	port := int32(c.Metrics.Port())
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: metricsService},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "localhost",
			Ports: []corev1.ServicePort{{Name: "https", Port: port}}},
	}
	if err := poll(ctx, startTimeout, "create the metrics service", func(ctx context.Context) error {
		_, err := c.Admin.CoreV1().Services("kube-system").Create(ctx, svc, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	}); err != nil {
		return err
	}
	dc, err := dynamic.NewForConfig(c.AdminConfig())
	if err != nil {
		return fmt.Errorf("create dynamic client: %w", err)
	}
	apiService := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1",
		"kind":       "APIService",
		"metadata":   map[string]any{"name": "v1beta1.metrics.k8s.io"},
		"spec": map[string]any{
			"group": "metrics.k8s.io", "version": "v1beta1",
			"service":               map[string]any{"namespace": "kube-system", "name": metricsService, "port": int64(port)},
			"insecureSkipTLSVerify": true,
			"groupPriorityMinimum":  int64(100), "versionPriority": int64(100),
		},
	}}
	gvr := schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}
	if _, err := dc.Resource(gvr).Create(ctx, apiService, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create the metrics.k8s.io APIService: %w", err)
	}
	return poll(ctx, startTimeout, "metrics.k8s.io served through the aggregator", func(ctx context.Context) error {
		return c.Admin.CoreV1().RESTClient().Get().AbsPath(metricsPrefix, "pods").Do(ctx).Error()
	})
}

// startProcess starts p and polls ready until it answers nil, p exits or
// the start timeout passes.
func (c *Cluster) startProcess(ctx context.Context, p *process, what string, ready func(context.Context) error) error {
	if err := p.start(); err != nil {
		return err
	}
	err := poll(ctx, startTimeout, what, func(ctx context.Context) error {
		if ended, err := p.exited(); ended {
			return fmt.Errorf("%w: %v", errExited, err)
		}
		return ready(ctx)
	})
	if err != nil {
		return p.failure(what, err)
	}
	return nil
}

var errExited = errors.New("process exited")

// poll calls f every 100 ms until it returns nil, the process it watches
// exited, or within passes.
func poll(ctx context.Context, within time.Duration, what string, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		err := f(cctx)
		ccancel()
		if err == nil {
			return nil
		}
		if errors.Is(err, errExited) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not within %s: %w", what, within, err)
		case <-tick.C:
		}
	}
}

func httpGet(ctx context.Context, hc *http.Client, url, token, want string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	buf := make([]byte, 4096)
	n, _ := resp.Body.Read(buf)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(buf[:n]), want) {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(buf[:n])))
	}
	return nil
}

// freePorts returns n TCP ports that were free a moment ago.
func freePorts(n int) (int, int, error) {
	ports := make([]int, 2)
	for i := range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, 0, fmt.Errorf("find a free port: %w", err)
		}
		defer l.Close()
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports[0], ports[1], nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}

// CompactEtcd writes a key to etcd and compacts its history up to that
// write, as etcd's periodic compaction does: a watch that resumes from an
// earlier resource version is then told it is too old (410 Gone) and its
// informer must list again. It returns the compacted revision.
func (c *Cluster) CompactEtcd(ctx context.Context) (int64, error) {
	var put struct {
		Header struct {
			Revision string `json:"revision"`
		} `json:"header"`
	}
	body := fmt.Sprintf(`{"key":%q,"value":%q}`, base64.StdEncoding.EncodeToString([]byte("/costmeter-test/compact")),
		base64.StdEncoding.EncodeToString([]byte(time.Now().String())))
	if err := etcdPost(ctx, c.etcdURL+"/v3/kv/put", body, &put); err != nil {
		return 0, fmt.Errorf("write to etcd: %w", err)
	}
	rev, err := strconv.ParseInt(put.Header.Revision, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("etcd revision %q: %w", put.Header.Revision, err)
	}
	if err := etcdPost(ctx, c.etcdURL+"/v3/kv/compaction", fmt.Sprintf(`{"revision":"%d","physical":true}`, rev), nil); err != nil {
		return 0, fmt.Errorf("compact etcd at %d: %w", rev, err)
	}
	return rev, nil
}

func etcdPost(ctx context.Context, url, body string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: %s: %s", url, resp.Status, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}
