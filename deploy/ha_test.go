package deploy_test

import (
	"fmt"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/alauda/costmeter/internal/config"
)

// checkPodSpec checks what every pod of the manifests must do: run as
// non-root with a tight container security context, bounded resources,
// and only Secrets, ConfigMaps and claims that exist.
func checkPodSpec(t *testing.T, m *manifests, where string, ps corev1.PodSpec, claims []string) {
	t.Helper()
	psc := ps.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("%s: pod does not run as non-root: %+v", where, psc)
	}
	if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
		t.Errorf("%s mounts a service account token it does not need", where)
	}
	vols := map[string]bool{}
	for _, v := range ps.Volumes {
		vols[v.Name] = true
		if v.Secret != nil && m.secrets[v.Secret.SecretName] == nil {
			t.Errorf("%s: volume %s: no Secret %s", where, v.Name, v.Secret.SecretName)
		}
		if v.ConfigMap != nil && m.configMaps[v.ConfigMap.Name] == nil {
			t.Errorf("%s: volume %s: no ConfigMap %s", where, v.Name, v.ConfigMap.Name)
		}
	}
	for _, c := range claims {
		vols[c] = true
	}
	for _, c := range ps.Containers {
		sc := c.SecurityContext
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("%s: container %s security context too loose: %+v", where, c.Name, sc)
		}
		if strings.HasSuffix(c.Image, ":latest") || !strings.Contains(c.Image, ":") {
			t.Errorf("%s: image %q is not pinned", where, c.Image)
		}
		for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, lim := c.Resources.Requests[res], c.Resources.Limits[res]
			if req.IsZero() || lim.IsZero() || req.Cmp(lim) > 0 {
				t.Errorf("%s: %s: request %s, limit %s", where, res, req.String(), lim.String())
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				ref := e.ValueFrom.SecretKeyRef
				if s, ok := m.secrets[ref.Name]; !ok {
					t.Errorf("%s: env %s: no Secret %s", where, e.Name, ref.Name)
				} else if _, ok := s.StringData[ref.Key]; !ok {
					t.Errorf("%s: env %s: Secret %s has no key %s", where, e.Name, ref.Name, ref.Key)
				}
			}
		}
		for _, vm := range c.VolumeMounts {
			if !vols[vm.Name] {
				t.Errorf("%s: mount %s: no such volume or claim", where, vm.Name)
			}
		}
	}
}

// checkStatefulSet checks a clustered server's StatefulSet: replicas, a
// headless Service that publishes not-ready pods (peers find each other
// while starting), a claim per pod, a disruption budget of one, and the
// container ports the Service names.
func checkStatefulSet(t *testing.T, m *manifests, name string, replicas int32, ports map[string]int32) *appsv1.StatefulSet {
	t.Helper()
	s, ok := m.statefulSets[name]
	if !ok {
		t.Fatalf("no StatefulSet %s", name)
	}
	if s.Spec.Replicas == nil || *s.Spec.Replicas != replicas {
		t.Errorf("%s: replicas %v, want %d", name, s.Spec.Replicas, replicas)
	}
	if s.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("%s: pods must start in parallel (peers wait for each other), got %q", name, s.Spec.PodManagementPolicy)
	}
	labels := s.Spec.Template.Labels
	for k, v := range s.Spec.Selector.MatchLabels {
		if labels[k] != v {
			t.Errorf("%s: selector %v does not match the pod labels %v", name, s.Spec.Selector.MatchLabels, labels)
		}
	}
	svc, ok := m.services[s.Spec.ServiceName]
	if !ok {
		t.Fatalf("%s: no headless Service %q", name, s.Spec.ServiceName)
	}
	if svc.Spec.ClusterIP != corev1.ClusterIPNone || !svc.Spec.PublishNotReadyAddresses {
		t.Errorf("%s: Service %s must be headless and publish not-ready pods", name, svc.Name)
	}
	for k, v := range svc.Spec.Selector {
		if labels[k] != v {
			t.Errorf("%s: Service selector %v does not select the pods %v", name, svc.Spec.Selector, labels)
		}
	}
	c := s.Spec.Template.Spec.Containers[0]
	for pname, port := range ports {
		if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == pname && p.ContainerPort == port }) {
			t.Errorf("%s: no container port %s=%d in %+v", name, pname, port, c.Ports)
		}
		if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == port && p.TargetPort.StrVal == pname }) {
			t.Errorf("%s: headless Service lacks port %d -> %s", name, port, pname)
		}
	}
	if c.LivenessProbe == nil || c.ReadinessProbe == nil {
		t.Errorf("%s: liveness and readiness probes required", name)
	}
	var claims []string
	for _, vc := range s.Spec.VolumeClaimTemplates {
		claims = append(claims, vc.Name)
		if vc.Spec.Resources.Requests.Storage().IsZero() {
			t.Errorf("%s: claim %s without a size", name, vc.Name)
		}
	}
	if !slices.ContainsFunc(c.VolumeMounts, func(vm corev1.VolumeMount) bool { return slices.Contains(claims, vm.Name) }) {
		t.Errorf("%s: data is not on a per-pod claim: mounts %+v, claims %v", name, c.VolumeMounts, claims)
	}
	checkPodSpec(t, m, name, s.Spec.Template.Spec, claims)
	pdb, ok := m.budgets[name]
	if !ok || pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 {
		t.Errorf("%s: want a PodDisruptionBudget with maxUnavailable 1, got %+v", name, pdb)
	} else {
		for k, v := range pdb.Spec.Selector.MatchLabels {
			if labels[k] != v {
				t.Errorf("%s: budget selector does not select the pods", name)
			}
		}
	}
	return s
}

// podNames are the DNS names of a StatefulSet's pods behind its headless
// Service.
func podNames(s *appsv1.StatefulSet) []string {
	var out []string
	for i := range *s.Spec.Replicas {
		out = append(out, fmt.Sprintf("%s-%d.%s.%s.svc", s.Name, i, s.Spec.ServiceName, s.Namespace))
	}
	return out
}

func envOf(c corev1.Container, name string) (corev1.EnvVar, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e, true
		}
	}
	return corev1.EnvVar{}, false
}

// TestKubernetesHA: NATS runs as a 3-server JetStream cluster whose config
// is deploy/nats/nats-cluster.conf verbatim, Redis as a 6-node cluster
// with AOF and an init Job, and every component is pointed at both: the
// NATS URLs list the three servers, the streams get three replicas, the
// Redis URL is a cluster URL of the StatefulSet's pods.
func TestKubernetesHA(t *testing.T) {
	m := loadManifests(t)

	nats := checkStatefulSet(t, m, "cost-nats", 3, map[string]int32{"client": 4222, "cluster": 6222, "monitor": 8222})
	conf, err := os.ReadFile("nats/nats-cluster.conf")
	if err != nil {
		t.Fatal(err)
	}
	cm, ok := m.configMaps["cost-nats-config"]
	if !ok || cm.Data["nats.conf"] != string(conf) {
		t.Fatal("ConfigMap cost-nats-config nats.conf differs from deploy/nats/nats-cluster.conf: copy the file into it")
	}
	nc := nats.Spec.Template.Spec.Containers[0]
	if !slices.Contains(nc.Args, "--config=/etc/nats/nats.conf") ||
		!slices.ContainsFunc(nc.VolumeMounts, func(vm corev1.VolumeMount) bool { return vm.MountPath == "/etc/nats" && vm.Name == "config" }) {
		t.Errorf("cost-nats does not run the ConfigMap's config: args %v, mounts %+v", nc.Args, nc.VolumeMounts)
	}
	if e, ok := envOf(nc, "SERVER_NAME"); !ok || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.name" {
		t.Errorf("SERVER_NAME must be the pod name: %+v", e)
	}
	// Every password the config reads (natsPasswords: what the config
	// tests need to parse it) comes from a Secret.
	for v := range natsPasswords {
		if e, ok := envOf(nc, v); !ok || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			t.Errorf("cost-nats: %s is not taken from a Secret", v)
		}
	}
	// The config's routes are the pods.
	pods := podNames(nats)
	for i, pod := range pods {
		if !strings.Contains(string(conf), "nats://"+pod+":6222") {
			t.Errorf("nats-cluster.conf has no route to pod %d (%s)", i, pod)
		}
	}

	redis := checkStatefulSet(t, m, "cost-redis", 6, map[string]int32{"redis": 6379, "bus": 16379})
	rcm, ok := m.configMaps["cost-redis-config"]
	if !ok {
		t.Fatal("no ConfigMap cost-redis-config")
	}
	for _, want := range []string{"cluster-enabled yes", "appendonly yes", "cluster-config-file /data/nodes.conf", "cluster-preferred-endpoint-type hostname"} {
		if !strings.Contains(rcm.Data["redis.conf"], want+"\n") {
			t.Errorf("redis.conf lacks %q", want)
		}
	}
	job, ok := m.jobs["cost-redis-cluster-init"]
	if !ok {
		t.Fatal("no Job cost-redis-cluster-init")
	}
	script := strings.Join(job.Spec.Template.Spec.Containers[0].Args, "\n")
	for _, want := range []string{"--cluster create", "--cluster-replicas 1", "for i in 0 1 2 3 4 5", "cost-redis-$i.$svc", "svc=" + redis.Spec.ServiceName + ".cost-system.svc", "cluster_state:ok"} {
		if !strings.Contains(script, want) {
			t.Errorf("init Job script lacks %q", want)
		}
	}
	if rp := job.Spec.Template.Spec.RestartPolicy; rp != corev1.RestartPolicyOnFailure && rp != corev1.RestartPolicyNever {
		t.Errorf("init Job restart policy %q", rp)
	}
	checkPodSpec(t, m, "cost-redis-cluster-init", job.Spec.Template.Spec, nil)
	redisPods := podNames(redis)

	// The components.
	for _, d := range []string{"cost-aggregator", "cost-api", "cost-notifier"} {
		c := m.deployments[d].Spec.Template.Spec.Containers[0]
		e, ok := envOf(c, "REDIS_URL")
		if !ok {
			t.Fatalf("%s: no REDIS_URL", d)
		}
		u, err := url.Parse(e.Value)
		if err != nil {
			t.Fatalf("%s: REDIS_URL: %v", d, err)
		}
		hosts := append([]string{u.Host}, u.Query()["addr"]...)
		if len(hosts) < 3 {
			t.Errorf("%s: REDIS_URL names %d nodes, want at least 3 (?addr=)", d, len(hosts))
		}
		for _, h := range hosts {
			if !slices.Contains(redisPods, strings.TrimSuffix(h, ":6379")) || !strings.HasSuffix(h, ":6379") {
				t.Errorf("%s: REDIS_URL node %s is not a pod of cost-redis", d, h)
			}
		}
		if !slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--redis-password-file=") }) {
			t.Errorf("%s: no --redis-password-file", d)
		}
	}
	for _, d := range []string{"cost-aggregator", "cost-collector"} {
		c := m.deployments[d].Spec.Template.Spec.Containers[0]
		if e, ok := envOf(c, "COST_STREAM_REPLICAS"); !ok || e.Value != "3" {
			t.Errorf("%s: COST_STREAM_REPLICAS %q, want 3", d, e.Value)
		}
	}
	sec := m.secrets["cost-nats"]
	for _, key := range []string{"collector-url", "aggregator-url", "api-url", "notifier-url"} {
		list := sec.StringData[key]
		if err := config.ValidateNATSURLs("cost-nats "+key, list); err != nil {
			t.Errorf("%v", err)
			continue
		}
		var hosts []string
		for _, one := range strings.Split(list, ",") {
			u, _ := url.Parse(one)
			hosts = append(hosts, u.Hostname())
			if u.Port() != "4222" || u.User == nil {
				t.Errorf("cost-nats %s: %s lacks the client port or the user", key, config.RedactURL(one))
			}
		}
		if !reflect.DeepEqual(hosts, pods) {
			t.Errorf("cost-nats %s lists %v, want every NATS pod %v", key, hosts, pods)
		}
	}
	users := m.secrets["cost-nats-users"]
	for _, e := range nc.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name != users.Name {
			t.Errorf("cost-nats reads %s from Secret %s, want %s", e.Name, e.ValueFrom.SecretKeyRef.Name, users.Name)
		}
	}
}

// TestDockerComposeHA: the ha profile runs 3 NATS servers routed to each
// other with JetStream, 6 Redis nodes with cluster mode and AOF on their
// own volumes, a one-shot service that creates the cluster once, and the
// same components as the default profile pointed at them; .env selects
// the default profile.
func TestDockerComposeHA(t *testing.T) {
	data, err := os.ReadFile("../docker-compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c compose
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatalf("docker-compose.yaml: %v", err)
	}
	env, err := os.ReadFile("../.env")
	if err != nil || !slices.Contains(strings.Split(string(env), "\n"), "COMPOSE_PROFILES=default") {
		t.Fatalf(".env must select the default profile (COMPOSE_PROFILES=default): %v", err)
	}
	ha := map[string]bool{}
	for name, s := range c.Services {
		if slices.Equal(s.Profiles, []string{"ha"}) {
			ha[name] = true
		}
	}
	natsNames := []string{"nats-1", "nats-2", "nats-3"}
	var routes []string
	for _, n := range natsNames {
		routes = append(routes, "nats://"+n+":6222")
	}
	for _, n := range natsNames {
		s, ok := c.Services[n]
		if !ok || !ha[n] {
			t.Fatalf("no ha service %s", n)
		}
		cmd := strings.Join(s.Command, " ")
		for _, want := range []string{"--jetstream", "--server_name " + n, "--cluster_name cost-nats", "--cluster nats://0.0.0.0:6222", "--routes " + strings.Join(routes, ",")} {
			if !strings.Contains(cmd, want) {
				t.Errorf("%s: command %q lacks %q", n, cmd, want)
			}
		}
		if !slices.Contains(s.Volumes, n+"-data:/data") || !hasKey(c.Volumes, n+"-data") {
			t.Errorf("%s: store not on its own declared volume: %v", n, s.Volumes)
		}
	}
	var redisNames []string
	for i := 1; i <= 6; i++ {
		n := fmt.Sprintf("redis-%d", i)
		redisNames = append(redisNames, n)
		s, ok := c.Services[n]
		if !ok || !ha[n] {
			t.Fatalf("no ha service %s", n)
		}
		cmd := strings.Join(s.Command, " ")
		for _, want := range []string{"--appendonly yes", "--cluster-enabled yes", "--cluster-config-file /data/nodes.conf", "--cluster-announce-hostname " + n} {
			if !strings.Contains(cmd, want) {
				t.Errorf("%s: command %q lacks %q", n, cmd, want)
			}
		}
		if !slices.Contains(s.Volumes, n+"-data:/data") || !hasKey(c.Volumes, n+"-data") {
			t.Errorf("%s: data not on its own declared volume: %v", n, s.Volumes)
		}
	}
	create, ok := c.Services["redis-cluster-create"]
	if !ok || !ha["redis-cluster-create"] {
		t.Fatal("no ha service redis-cluster-create")
	}
	script := strings.Join(create.Command, "\n")
	for _, want := range []string{"--cluster create", "--cluster-replicas 1", "for i in 1 2 3 4 5 6", "cluster_state:ok"} {
		if !strings.Contains(script, want) {
			t.Errorf("redis-cluster-create lacks %q", want)
		}
	}
	for _, n := range redisNames {
		if create.DependsOn[n].Condition != "service_healthy" {
			t.Errorf("redis-cluster-create does not wait for %s", n)
		}
	}
	apps := []string{"aggregator-ha-1", "aggregator-ha-2", "api-ha", "collector-east-ha", "collector-west-ha"}
	for _, n := range apps {
		s, ok := c.Services[n]
		if !ok || !ha[n] {
			t.Fatalf("no ha service %s", n)
		}
		e := s.Environment
		if e["NATS_URL"] != strings.Join([]string{"nats://nats-1:4222", "nats://nats-2:4222", "nats://nats-3:4222"}, ",") {
			t.Errorf("%s: NATS_URL %q does not list the three servers", n, e["NATS_URL"])
		}
		if err := config.ValidateNATSURLs(n, e["NATS_URL"]); err != nil {
			t.Error(err)
		}
		u, err := url.Parse(e["REDIS_URL"])
		if err != nil || !slices.Contains(redisNames, u.Hostname()) || len(u.Query()["addr"]) < 2 {
			t.Errorf("%s: REDIS_URL %q is not a cluster URL of the six nodes", n, e["REDIS_URL"])
		}
		if e["COST_STREAM_REPLICAS"] != "3" {
			t.Errorf("%s: COST_STREAM_REPLICAS %q, want 3", n, e["COST_STREAM_REPLICAS"])
		}
		for _, dep := range append(natsNames, "redis-cluster-create") {
			if _, ok := s.DependsOn[dep]; !ok {
				t.Errorf("%s does not wait for %s", n, dep)
			}
		}
	}
	// The same components as the default profile.
	for small, big := range map[string]string{"aggregator-1": "aggregator-ha-1", "aggregator-2": "aggregator-ha-2", "api": "api-ha",
		"collector-east": "collector-east-ha", "collector-west": "collector-west-ha"} {
		if !slices.Equal(c.Services[small].Command, c.Services[big].Command) {
			t.Errorf("%s runs %v, %s %v: the same components in both profiles", big, c.Services[big].Command, small, c.Services[small].Command)
		}
	}
	if want := len(natsNames) + len(redisNames) + 1 + len(apps); len(ha) != want {
		t.Errorf("%d ha services %v, want %d", len(ha), keys(ha), want)
	}
}

func hasKey(m map[string]any, k string) bool { _, ok := m[k]; return ok }
