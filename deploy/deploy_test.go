package deploy_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/alauda/costmeter/internal/auth"
)

const namespace = "cost-system"

// manifests holds every object of deploy/kubernetes, decoded strictly
// into its typed Kubernetes object.
type manifests struct {
	namespaces   map[string]*corev1.Namespace
	accounts     map[string]*corev1.ServiceAccount
	roles        map[string]*rbacv1.ClusterRole
	bindings     map[string]*rbacv1.ClusterRoleBinding
	deployments  map[string]*appsv1.Deployment
	services     map[string]*corev1.Service
	secrets      map[string]*corev1.Secret
	claims       map[string]*corev1.PersistentVolumeClaim
	statefulSets map[string]*appsv1.StatefulSet
	configMaps   map[string]*corev1.ConfigMap
	jobs         map[string]*batchv1.Job
	budgets      map[string]*policyv1.PodDisruptionBudget
	namespaced   []metav1.Object
	clusterScope []metav1.Object
}

// splitDocs splits a multi-document YAML file.
func splitDocs(data []byte) [][]byte {
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(data), -1) {
		if strings.TrimSpace(stripComments(d)) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

func stripComments(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// strict decodes doc into v, failing on any field v does not have.
func strict(t *testing.T, where string, doc []byte, v any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(doc, v); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
}

func loadManifests(t *testing.T) *manifests {
	t.Helper()
	m := &manifests{
		namespaces: map[string]*corev1.Namespace{}, accounts: map[string]*corev1.ServiceAccount{},
		roles: map[string]*rbacv1.ClusterRole{}, bindings: map[string]*rbacv1.ClusterRoleBinding{},
		deployments: map[string]*appsv1.Deployment{}, services: map[string]*corev1.Service{},
		secrets: map[string]*corev1.Secret{}, claims: map[string]*corev1.PersistentVolumeClaim{},
		statefulSets: map[string]*appsv1.StatefulSet{}, configMaps: map[string]*corev1.ConfigMap{},
		jobs: map[string]*batchv1.Job{}, budgets: map[string]*policyv1.PodDisruptionBudget{},
	}
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in deploy/kubernetes: %v", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range splitDocs(data) {
			where := fmt.Sprintf("%s document %d", f, i+1)
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &tm); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			gvk := tm.APIVersion + "/" + tm.Kind
			var obj metav1.Object
			switch gvk {
			case "v1/Namespace":
				o := &corev1.Namespace{}
				strict(t, where, doc, o)
				m.namespaces[o.Name], obj = o, o
				m.clusterScope = append(m.clusterScope, o)
			case "v1/ServiceAccount":
				o := &corev1.ServiceAccount{}
				strict(t, where, doc, o)
				m.accounts[o.Name], obj = o, o
				m.namespaced = append(m.namespaced, o)
			case "rbac.authorization.k8s.io/v1/ClusterRole":
				o := &rbacv1.ClusterRole{}
				strict(t, where, doc, o)
				m.roles[o.Name], obj = o, o
				m.clusterScope = append(m.clusterScope, o)
			case "rbac.authorization.k8s.io/v1/ClusterRoleBinding":
				o := &rbacv1.ClusterRoleBinding{}
				strict(t, where, doc, o)
				m.bindings[o.Name], obj = o, o
				m.clusterScope = append(m.clusterScope, o)
			case "apps/v1/Deployment":
				o := &appsv1.Deployment{}
				strict(t, where, doc, o)
				m.deployments[o.Name], obj = o, o
				m.namespaced = append(m.namespaced, o)
			case "v1/Service":
				o := &corev1.Service{}
				strict(t, where, doc, o)
				m.services[o.Name], obj = o, o
				m.namespaced = append(m.namespaced, o)
			case "v1/Secret":
				o := &corev1.Secret{}
				strict(t, where, doc, o)
				m.secrets[o.Name], obj = o, o
				m.namespaced = append(m.namespaced, o)
			case "v1/PersistentVolumeClaim":
				o := &corev1.PersistentVolumeClaim{}
				strict(t, where, doc, o)
				m.claims[o.Name], obj = o, o
				m.namespaced = append(m.namespaced, o)
			case "apps/v1/StatefulSet":
				o := &appsv1.StatefulSet{}
				strict(t, where, doc, o)
				m.statefulSets[o.Name], obj = o, o
				m.namespaced = append(m.namespaced, o)
			case "v1/ConfigMap":
				o := &corev1.ConfigMap{}
				strict(t, where, doc, o)
				m.configMaps[o.Name], obj = o, o
				m.namespaced = append(m.namespaced, o)
			case "batch/v1/Job":
				o := &batchv1.Job{}
				strict(t, where, doc, o)
				m.jobs[o.Name], obj = o, o
				m.namespaced = append(m.namespaced, o)
			case "policy/v1/PodDisruptionBudget":
				o := &policyv1.PodDisruptionBudget{}
				strict(t, where, doc, o)
				m.budgets[o.Name], obj = o, o
				m.namespaced = append(m.namespaced, o)
			default:
				t.Fatalf("%s: unexpected kind %s", where, gvk)
			}
			if obj.GetName() == "" {
				t.Fatalf("%s: no name", where)
			}
		}
	}
	return m
}

func TestStrictDecodingRejectsTypos(t *testing.T) {
	doc := []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  replica: 2\n")
	if err := yaml.UnmarshalStrict(doc, &appsv1.Deployment{}); err == nil {
		t.Fatal("a misspelt field decoded")
	}
}

func TestKubernetesManifests(t *testing.T) {
	m := loadManifests(t)
	if _, ok := m.namespaces[namespace]; !ok {
		t.Fatalf("no Namespace %s", namespace)
	}
	for _, o := range m.namespaced {
		if o.GetNamespace() != namespace {
			t.Errorf("%s is in namespace %q, want %s", o.GetName(), o.GetNamespace(), namespace)
		}
	}

	wantDeployments := map[string]struct {
		binary   string
		port     int32
		replicas int32
	}{
		"cost-collector":  {"collector", 9090, 1},
		"cost-aggregator": {"aggregator", 9091, 2},
		"cost-api":        {"api", 8080, 2},
		"cost-notifier":   {"notifier", 9092, 2},
	}
	if len(m.deployments) != len(wantDeployments) {
		t.Errorf("deployments %v, want %d", keys(m.deployments), len(wantDeployments))
	}
	var image string
	for name, want := range wantDeployments {
		t.Run(name, func(t *testing.T) {
			d, ok := m.deployments[name]
			if !ok {
				t.Fatalf("no Deployment %s", name)
			}
			checkDeployment(t, m, d, want.binary, want.port, want.replicas)
			c := d.Spec.Template.Spec.Containers[0]
			if image == "" {
				image = c.Image
			}
			if c.Image != image {
				t.Errorf("image %s, others use %s: one image for every binary", c.Image, image)
			}
		})
	}
	if !regexp.MustCompile(`^[a-z0-9./-]+/costmeter:v\d+\.\d+\.\d+$`).MatchString(image) {
		t.Errorf("image %q is not a pinned costmeter release", image)
	}
}

func checkDeployment(t *testing.T, m *manifests, d *appsv1.Deployment, binary string, port, replicas int32) {
	t.Helper()
	if d.Spec.Replicas == nil || *d.Spec.Replicas != replicas {
		t.Errorf("replicas %v, want %d", d.Spec.Replicas, replicas)
	}
	sel := d.Spec.Selector
	if sel == nil || len(sel.MatchLabels) == 0 {
		t.Fatal("no selector")
	}
	for k, v := range sel.MatchLabels {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the pod labels %v", k, v, d.Spec.Template.Labels)
		}
	}
	ps := d.Spec.Template.Spec
	if len(ps.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(ps.Containers))
	}
	psc := ps.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("pod does not run as non-root: %+v", psc)
	}
	c := ps.Containers[0]
	if len(c.Command) != 1 || c.Command[0] != "/usr/local/bin/"+binary {
		t.Errorf("command %v, want /usr/local/bin/%s", c.Command, binary)
	}
	sc := c.SecurityContext
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("container security context too loose: %+v", sc)
	}
	var portName string
	for _, p := range c.Ports {
		if p.ContainerPort == port {
			portName = p.Name
		}
	}
	if portName == "" {
		t.Fatalf("no container port %d in %+v", port, c.Ports)
	}
	for _, pr := range []struct {
		what  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
		if pr.probe == nil || pr.probe.HTTPGet == nil {
			t.Errorf("no HTTP %s probe", pr.what)
			continue
		}
		if pr.probe.HTTPGet.Path != pr.path || (pr.probe.HTTPGet.Port.StrVal != portName && pr.probe.HTTPGet.Port.IntVal != port) {
			t.Errorf("%s probe %s on %s, want %s on %s", pr.what, pr.probe.HTTPGet.Path, pr.probe.HTTPGet.Port.String(), pr.path, portName)
		}
	}
	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, lim := c.Resources.Requests[res], c.Resources.Limits[res]
		if req.IsZero() || lim.IsZero() || req.Cmp(lim) > 0 {
			t.Errorf("%s: request %s, limit %s", res, req.String(), lim.String())
		}
	}
	// Every referenced Secret exists with the key.
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			ref := e.ValueFrom.SecretKeyRef
			s, ok := m.secrets[ref.Name]
			if !ok {
				t.Errorf("env %s: no Secret %s", e.Name, ref.Name)
			} else if _, ok := s.StringData[ref.Key]; !ok {
				t.Errorf("env %s: Secret %s has no key %s", e.Name, ref.Name, ref.Key)
			}
		}
		if strings.Contains(e.Value, "@") && regexp.MustCompile(`://[^/@]*:[^/@]*@`).MatchString(e.Value) {
			t.Errorf("env %s carries a password in plain text: use a Secret", e.Name)
		}
	}
	vols := map[string]corev1.Volume{}
	for _, v := range ps.Volumes {
		vols[v.Name] = v
		if v.Secret != nil {
			if _, ok := m.secrets[v.Secret.SecretName]; !ok {
				t.Errorf("volume %s: no Secret %s", v.Name, v.Secret.SecretName)
			}
		}
		if v.PersistentVolumeClaim != nil {
			if _, ok := m.claims[v.PersistentVolumeClaim.ClaimName]; !ok {
				t.Errorf("volume %s: no PersistentVolumeClaim %s", v.Name, v.PersistentVolumeClaim.ClaimName)
			}
		}
	}
	for _, vm := range c.VolumeMounts {
		if _, ok := vols[vm.Name]; !ok {
			t.Errorf("mount %s: no such volume", vm.Name)
		}
		if vols[vm.Name].Secret != nil && (vm.SubPath != "" || !vm.ReadOnly) {
			t.Errorf("Secret mount %s must be read-only and without subPath (subPath never sees updates)", vm.Name)
		}
	}
	// Files the flags name are under a mount.
	for _, a := range c.Args {
		name, val, ok := strings.Cut(a, "=")
		if !ok || !strings.HasSuffix(name, "-file") {
			continue
		}
		mounted := false
		for _, vm := range c.VolumeMounts {
			if strings.HasPrefix(val, vm.MountPath+"/") {
				mounted = true
			}
		}
		if !mounted {
			t.Errorf("%s: %s is on no mounted volume", name, val)
		}
	}
}

func TestCollectorRBACIsReadOnly(t *testing.T) {
	m := loadManifests(t)
	role, ok := m.roles["cost-collector"]
	if !ok {
		t.Fatal("no ClusterRole cost-collector")
	}
	informer := []string{"get", "list", "watch"}
	allowed := map[string][]string{
		"/namespaces": informer, "/pods": informer, "/resourcequotas": informer, "/persistentvolumeclaims": informer,
		"/nodes": informer, "/persistentvolumes": informer, // the cluster's capacity
		"metrics.k8s.io/pods": {"get", "list"},
	}
	seen := map[string]bool{}
	for _, r := range role.Rules {
		if len(r.NonResourceURLs) > 0 || len(r.ResourceNames) > 0 {
			t.Errorf("unexpected rule %+v", r)
		}
		for _, v := range r.Verbs {
			if v != "get" && v != "list" && v != "watch" {
				t.Errorf("verb %q is not read-only", v)
			}
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				k := g + "/" + res
				verbs, ok := allowed[k]
				if !ok {
					t.Errorf("resource %s is not one the collector reads (nodes/proxy is deliberately not granted)", k)
					continue
				}
				for _, v := range r.Verbs {
					if !slices.Contains(verbs, v) {
						t.Errorf("%s: verb %s is more than the collector uses (%v)", k, v, verbs)
					}
				}
				seen[k] = true
			}
		}
	}
	for k := range allowed {
		if !seen[k] {
			t.Errorf("resource %s not granted", k)
		}
	}
	// Without nodes/proxy the collector must not try the kubelets.
	if args := m.deployments["cost-collector"].Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, "--volume-stats=false") {
		t.Errorf("collector args %v: --volume-stats=false goes with the missing nodes/proxy rule", args)
	}
	b, ok := m.bindings["cost-collector"]
	if !ok || b.RoleRef.Kind != "ClusterRole" || b.RoleRef.Name != role.Name || len(b.Subjects) != 1 ||
		b.Subjects[0].Kind != "ServiceAccount" || b.Subjects[0].Name != "cost-collector" || b.Subjects[0].Namespace != namespace {
		t.Fatalf("binding %+v does not bind the collector's ServiceAccount", b)
	}
	if _, ok := m.accounts["cost-collector"]; !ok {
		t.Fatal("no ServiceAccount cost-collector")
	}
	if got := m.deployments["cost-collector"].Spec.Template.Spec.ServiceAccountName; got != "cost-collector" {
		t.Fatalf("collector runs as %q", got)
	}
	// The others need no Kubernetes API at all.
	for _, n := range []string{"cost-aggregator", "cost-api"} {
		ps := m.deployments[n].Spec.Template.Spec
		if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
			t.Errorf("%s mounts a service account token it does not need", n)
		}
	}
}

func TestAPIServiceAndTokens(t *testing.T) {
	m := loadManifests(t)
	svc, ok := m.services["cost-api"]
	if !ok {
		t.Fatal("no Service cost-api")
	}
	d := m.deployments["cost-api"]
	for k, v := range svc.Spec.Selector {
		if d.Spec.Template.Labels[k] != v {
			t.Fatalf("Service selector %v does not select the API pods %v", svc.Spec.Selector, d.Spec.Template.Labels)
		}
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].TargetPort.StrVal != "http" {
		t.Fatalf("Service ports %+v, want one to the container port http", svc.Spec.Ports)
	}
	c := d.Spec.Template.Spec.Containers[0]
	if !slices.Contains(c.Args, "--auth=token") {
		t.Fatalf("API args %v: authentication must be on", c.Args)
	}
	// The token file is the Secret's key, and it is a valid token file.
	var tokenFile string
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--auth-token-file="); ok {
			tokenFile = v
		}
	}
	var secretName string
	for _, vm := range c.VolumeMounts {
		if filepath.Dir(tokenFile) == vm.MountPath {
			for _, v := range d.Spec.Template.Spec.Volumes {
				if v.Name == vm.Name && v.Secret != nil {
					secretName = v.Secret.SecretName
				}
			}
		}
	}
	s, ok := m.secrets[secretName]
	if !ok {
		t.Fatalf("--auth-token-file %q is not mounted from a Secret", tokenFile)
	}
	content, ok := s.StringData[filepath.Base(tokenFile)]
	if !ok {
		t.Fatalf("Secret %s has no key %s", secretName, filepath.Base(tokenFile))
	}
	if _, err := auth.ParseTokenFile([]byte(content)); err != nil {
		t.Fatalf("the sample token file is invalid: %v", err)
	}
}

// compose is the part of a Compose file the test checks.
type compose struct {
	Services map[string]struct {
		Image       string            `json:"image"`
		Profiles    []string          `json:"profiles"`
		Build       any               `json:"build"`
		Command     []string          `json:"command"`
		Ports       []string          `json:"ports"`
		Volumes     []string          `json:"volumes"`
		Restart     string            `json:"restart"`
		Environment map[string]string `json:"environment"`
		DependsOn   map[string]struct {
			Condition string `json:"condition"`
		} `json:"depends_on"`
		Healthcheck *struct {
			Test        []string `json:"test"`
			Interval    string   `json:"interval"`
			Timeout     string   `json:"timeout"`
			Retries     int      `json:"retries"`
			StartPeriod string   `json:"start_period"`
		} `json:"healthcheck"`
	} `json:"services"`
	Volumes map[string]any `json:"volumes"`
}

func TestDockerCompose(t *testing.T) {
	data, err := os.ReadFile("../docker-compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c compose
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatalf("docker-compose.yaml: %v", err)
	}
	want := []string{"aggregator-1", "aggregator-2", "api", "collector-east", "collector-west", "nats", "redis"}
	var small []string
	for name, s := range c.Services {
		if slices.Equal(s.Profiles, []string{"default"}) {
			small = append(small, name)
		} else if !slices.Equal(s.Profiles, []string{"ha"}) {
			t.Errorf("%s: profiles %v, want [default] or [ha]: the two setups run one at a time", name, s.Profiles)
		}
	}
	sort.Strings(small)
	if !slices.Equal(small, want) {
		t.Fatalf("default profile services %v, want %v", small, want)
	}
	for name, s := range c.Services {
		if name == "redis-cluster-create" {
			// One-shot: runs once, others wait for it to complete.
			if s.Restart != "no" {
				t.Errorf("%s: restart %q, want no", name, s.Restart)
			}
			continue
		}
		if s.Healthcheck == nil || len(s.Healthcheck.Test) < 2 || s.Healthcheck.Interval == "" || s.Healthcheck.Retries < 1 {
			t.Errorf("%s: no usable health check", name)
		}
		if s.Restart != "unless-stopped" && s.Restart != "always" && s.Restart != "on-failure" {
			t.Errorf("%s: restart %q", name, s.Restart)
		}
		if s.Image == "" || strings.HasSuffix(s.Image, ":latest") || !strings.Contains(s.Image, ":") {
			t.Errorf("%s: image %q is not pinned", name, s.Image)
		}
		for dep, cond := range s.DependsOn {
			d, ok := c.Services[dep]
			wantCond := "service_healthy"
			if dep == "redis-cluster-create" {
				wantCond = "service_completed_successfully"
			}
			if !ok || cond.Condition != wantCond {
				t.Errorf("%s depends on %s (%q): want %s of this file", name, dep, cond.Condition, wantCond)
			}
			if !slices.Equal(d.Profiles, s.Profiles) {
				t.Errorf("%s (%v) depends on %s of another profile (%v)", name, s.Profiles, dep, d.Profiles)
			}
		}
	}
	cmd := func(n string) string { return strings.Join(c.Services[n].Command, " ") }
	if !strings.Contains(cmd("nats"), "--jetstream") || !slices.ContainsFunc(c.Services["nats"].Volumes, func(v string) bool { return strings.HasPrefix(v, "nats-data:") }) {
		t.Errorf("nats: JetStream with a persistent volume, got %q %v", cmd("nats"), c.Services["nats"].Volumes)
	}
	if !strings.Contains(cmd("redis"), "--appendonly yes") || !slices.ContainsFunc(c.Services["redis"].Volumes, func(v string) bool { return strings.HasPrefix(v, "redis-data:") }) {
		t.Errorf("redis: AOF with a persistent volume, got %q", cmd("redis"))
	}
	if _, ok := c.Volumes["nats-data"]; !ok {
		t.Error("volume nats-data not declared")
	}
	clusters := map[string]bool{}
	for _, n := range []string{"collector-east", "collector-west"} {
		args := c.Services[n].Command
		if len(args) == 0 || args[0] != "/usr/local/bin/collector" || !strings.Contains(cmd(n), "--source simulate") {
			t.Errorf("%s: %q is not a simulating collector", n, cmd(n))
		}
		spool := c.Services[n].Environment["COLLECTOR_SPOOL_DIR"]
		if spool == "" || !slices.ContainsFunc(c.Services[n].Volumes, func(v string) bool { return strings.HasSuffix(v, ":"+spool) }) {
			t.Errorf("%s: the spool %q is not on a volume: %v", n, spool, c.Services[n].Volumes)
		}
		if i := slices.Index(args, "--sim-clusters"); i >= 0 && i+1 < len(args) {
			clusters[args[i+1]] = true
		}
	}
	if len(clusters) != 2 {
		t.Errorf("the two collectors must simulate different clusters: %v", clusters)
	}
	for _, n := range []string{"aggregator-1", "aggregator-2"} {
		if args := c.Services[n].Command; len(args) == 0 || args[0] != "/usr/local/bin/aggregator" {
			t.Errorf("%s runs %v", n, args)
		}
		if c.Services[n].Environment["NATS_URL"] == "" || c.Services[n].Environment["REDIS_URL"] == "" {
			t.Errorf("%s: NATS_URL and REDIS_URL must be set", n)
		}
	}
	api := c.Services["api"]
	if !slices.Contains(api.Ports, "8080:8080") || !strings.Contains(cmd("api"), "--listen :8080") {
		t.Errorf("api: not on :8080: %v %q", api.Ports, cmd("api"))
	}
	if !strings.Contains(cmd("api"), "--auth token") {
		t.Errorf("api: %q does not authenticate", cmd("api"))
	}
	// The mounted token file is valid and the tokens its comments give
	// are in it.
	tf, err := os.ReadFile("compose/tokens.yaml")
	if err != nil {
		t.Fatal(err)
	}
	byHash, err := auth.ParseTokenFile(tf)
	if err != nil {
		t.Fatalf("compose/tokens.yaml: %v", err)
	}
	for _, tok := range []string{"dev-platform-token", "dev-project-0-token"} {
		if !bytes.Contains(tf, []byte(auth.HashToken(tok))) {
			t.Errorf("compose/tokens.yaml lacks the hash of %s", tok)
		}
	}
	if len(byHash) != 2 {
		t.Errorf("%d tokens", len(byHash))
	}
	if !slices.ContainsFunc(api.Volumes, func(v string) bool { return strings.HasPrefix(v, "./deploy/compose/tokens.yaml:") }) {
		t.Errorf("api does not mount the token file: %v", api.Volumes)
	}
}

func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var froms, stages []string
	var user string
	var lines []string
	for _, l := range strings.Split(strings.ReplaceAll(string(data), "\\\n", " "), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		lines = append(lines, l)
		f := strings.Fields(l)
		switch strings.ToUpper(f[0]) {
		case "FROM":
			froms = append(froms, f[1])
			if len(f) >= 4 && strings.EqualFold(f[2], "AS") {
				stages = append(stages, f[3])
			}
			user = "" // USER applies per stage
		case "USER":
			user = f[1]
		}
	}
	if len(froms) < 2 || len(stages) == 0 {
		t.Fatalf("not a multi-stage build: FROM %v", froms)
	}
	for _, f := range froms {
		if !strings.Contains(f, ":") || strings.HasSuffix(f, ":latest") {
			t.Errorf("base image %s is not pinned", f)
		}
	}
	name, _, _ := strings.Cut(user, ":")
	if user == "" || name == "root" || name == "0" {
		t.Errorf("final stage runs as %q, want a non-root USER", user)
	}
	all := strings.Join(lines, "\n")
	for _, want := range []string{"CGO_ENABLED=0", "./cmd/...", "COPY --from=" + stages[0]} {
		if !strings.Contains(all, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
