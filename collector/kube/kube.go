// Package kube is the collector's Kubernetes source (--source kubernetes):
// it measures every namespace of one cluster and emits one sample per
// namespace per window. It is the only package of the module that imports
// client-go, so that the aggregator and API binaries stay small.
//
// # What it reads
//
// Namespaces, pods, resource quotas and persistent volume claims come from
// shared informers (one watch each, no list per window). Pod usage comes
// from the metrics API (metrics.k8s.io PodMetrics, which cannot be watched,
// so it is listed once per scrape). Storage usage comes from the kubelets'
// volume stats through the API server's node proxy, where RBAC allows it;
// otherwise it is 0, said once in the log.
//
// # RBAC
//
// Read only, cluster-wide (RBAC.md has the ClusterRole to copy):
//
//	""               namespaces, pods, resourcequotas, persistentvolumeclaims  get list watch
//	metrics.k8s.io   pods                                                     get list
//	""               nodes/proxy (optional, for storage usage)                 get
//
// # How a window is measured
//
// Windows are [t−interval, t) with t a multiple of --interval, so they are
// the same on every restart and a window collected twice is a duplicate.
// Inside a window the source scrapes every --scrape-interval (a divisor of
// the interval). A scrape at time s covers the slot since the previous
// scrape with the state it sees at s:
//
//   - a pod counts for the seconds of the slot in which it ran: from its
//     status.startTime until its containers finished (the latest
//     finishedAt), or, once it is gone, until its deletionTimestamp or the
//     scrape that found it gone, whichever is first;
//   - its request is what the scheduler reserves (see podRequests), its
//     usage the metrics API's latest value for it (the previous scrape's
//     when it has none now, 0 when it never had one), its effective value
//     max(usage, request) — all times its running seconds;
//   - quotas (the smallest hard requests.cpu/cpu, requests.memory/memory
//     and requests.storage over the namespace's ResourceQuotas) and bound
//     claims' capacities count for the whole slot;
//   - the namespace's project is its --project-label value when the window
//     closes (--default-project without it).
//
// At t each namespace's sums are divided by the interval: averages over
// the window, as wire format v1 defines them. The first scrape after a
// start extends back to the start of its window (the state it sees is the
// best estimate of the part the collector missed), so a restart costs no
// window; a gap longer than a window (a suspended process) drops the
// windows it spans.
package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	metricsclient "k8s.io/metrics/pkg/client/clientset/versioned"

	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/internal/config"
	"github.com/alauda/costmeter/internal/sample"
)

// Defaults of the Kubernetes source.
const (
	DefaultProjectLabel   = "cpaas.io/project"
	DefaultProject        = "unassigned"
	DefaultScrapeInterval = 15 * time.Second
	DefaultTimeout        = 10 * time.Second
)

// Config configures the Kubernetes source.
type Config struct {
	// Kubeconfig is a kubeconfig file; empty means in-cluster config.
	Kubeconfig string
	// Cluster names the cluster in every sample.
	Cluster string
	// ProjectLabel is the namespace label that names its project.
	ProjectLabel string
	// DefaultProject is the project of namespaces without the label.
	DefaultProject string
	// Interval is the window (the collector's --interval).
	Interval time.Duration
	// ScrapeInterval is how often pods and usage are looked at within a
	// window; it divides Interval.
	ScrapeInterval time.Duration
	// VolumeStats reads storage usage from the kubelets.
	VolumeStats bool
	// Timeout bounds each call to the API server.
	Timeout time.Duration
}

// RegisterFlags registers the source's flags; Interval is the collector's
// --interval and is set by the caller.
func (c *Config) RegisterFlags(f *config.Flags) {
	f.String(&c.Kubeconfig, "kubeconfig", "KUBECONFIG", "", "kubeconfig file (default: in-cluster configuration)")
	f.String(&c.Cluster, "cluster", "COST_CLUSTER", "", "name of this cluster in the samples (required with --source kubernetes)")
	f.String(&c.ProjectLabel, "project-label", "COLLECTOR_PROJECT_LABEL", DefaultProjectLabel, "namespace label naming its project")
	f.String(&c.DefaultProject, "default-project", "COLLECTOR_DEFAULT_PROJECT", DefaultProject, "project of namespaces without the project label")
	f.Duration(&c.ScrapeInterval, "scrape-interval", "COLLECTOR_SCRAPE_INTERVAL", DefaultScrapeInterval, "how often pods and usage are looked at within a window (divides --interval)")
	f.Bool(&c.VolumeStats, "volume-stats", "COLLECTOR_VOLUME_STATS", true, "read storage usage from the kubelets' volume stats (needs get on nodes/proxy)")
	f.Duration(&c.Timeout, "kube-timeout", "COLLECTOR_KUBE_TIMEOUT", DefaultTimeout, "deadline of each call to the Kubernetes API")
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Cluster == "" {
		errs = append(errs, errors.New("--cluster: required with --source kubernetes"))
	} else {
		s := sample.Sample{Cluster: c.Cluster, Project: "p", Namespace: "n", Start: time.Unix(0, 0), End: time.Unix(1, 0)}
		if err := s.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("--cluster: %w", err))
		}
	}
	for _, msg := range validation.IsQualifiedName(c.ProjectLabel) {
		errs = append(errs, fmt.Errorf("--project-label: %q: %s", c.ProjectLabel, msg))
	}
	if !validProject(c.DefaultProject) {
		errs = append(errs, fmt.Errorf("--default-project: %q is not a lowercase DNS label", c.DefaultProject))
	}
	if c.Interval < time.Second || c.Interval > time.Hour || c.Interval%time.Second != 0 {
		errs = append(errs, fmt.Errorf("--interval: %s is not whole seconds within 1s..1h", c.Interval))
	}
	if c.ScrapeInterval < time.Second || c.ScrapeInterval%time.Second != 0 || (c.Interval > 0 && c.Interval%c.ScrapeInterval != 0) {
		errs = append(errs, fmt.Errorf("--scrape-interval: %s is not whole seconds dividing --interval %s", c.ScrapeInterval, c.Interval))
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("--kube-timeout: must be positive, got %s", c.Timeout))
	}
	return errors.Join(errs...)
}

func validProject(p string) bool {
	s := sample.Sample{Cluster: "c", Project: p, Namespace: "n", Start: time.Unix(0, 0), End: time.Unix(1, 0)}
	return s.Validate() == nil
}

// Clients connects to the cluster: with cfg.Kubeconfig if set, else with
// the pod's service account (in-cluster configuration).
func Clients(cfg Config) (kubernetes.Interface, metricsclient.Interface, error) {
	var (
		rc  *rest.Config
		err error
	)
	if cfg.Kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("load kubernetes configuration: %w", err)
	}
	rc.UserAgent = "cost-collector"
	rc.QPS, rc.Burst = 20, 40
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("create kubernetes client: %w", err)
	}
	mc, err := metricsclient.NewForConfig(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("create metrics client: %w", err)
	}
	return kc, mc, nil
}

// Option sets an optional dependency.
type Option func(*Source)

// WithLogger sets the logger (default: slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(s *Source) { s.log = l } }

// WithClock sets the clock (default: time.Now).
func WithClock(now func() time.Time) Option { return func(s *Source) { s.now = now } }

// WithInformerFactory makes the source use factory's informers instead of
// its own (a caller that also watches the same objects shares the caches).
func WithInformerFactory(f informers.SharedInformerFactory) Option {
	return func(s *Source) { s.factory = f }
}

// WithVolumeStats replaces the kubelet volume stats reader.
func WithVolumeStats(v VolumeStats) Option { return func(s *Source) { s.volumes = v } }

// Source measures a cluster's namespaces.
type Source struct {
	cfg     Config
	kc      kubernetes.Interface
	mc      metricsclient.Interface
	factory informers.SharedInformerFactory
	volumes VolumeStats
	log     *slog.Logger
	now     func() time.Time

	namespaces corelisters.NamespaceLister
	pods       corelisters.PodLister
	quotas     corelisters.ResourceQuotaLister
	claims     corelisters.PersistentVolumeClaimLister
	synced     []cache.InformerSynced

	mu      sync.Mutex
	finals  map[types.UID]*corev1.Pod // pods deleted since the last scrape, as last seen by the watch
	started bool

	// Scrape state, owned by the goroutine that scrapes.
	last       time.Time                 // end of the last scraped slot
	seen       map[types.UID]*corev1.Pod // running pods at the last scrape
	retired    map[types.UID]time.Time   // gone pods already accounted for
	terminal   map[types.UID]time.Time   // first scrape that saw a pod finished without finishedAt
	usage      map[string]podUsage       // namespace/pod → latest metrics
	projects   map[string]string         // namespace → project, kept for deleted namespaces
	win        *window
	warned     map[string]bool // problems said once
	metricsErr bool
}

type podUsage struct {
	amounts
}

// New returns a source for the cluster kc and its metrics API mc.
func New(cfg Config, kc kubernetes.Interface, mc metricsclient.Interface, opts ...Option) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if kc == nil || mc == nil {
		return nil, errors.New("kubernetes source: kubernetes and metrics clients are required")
	}
	s := &Source{cfg: cfg, kc: kc, mc: mc, log: slog.Default(), now: time.Now,
		finals: map[types.UID]*corev1.Pod{}, seen: map[types.UID]*corev1.Pod{}, retired: map[types.UID]time.Time{},
		terminal: map[types.UID]time.Time{}, usage: map[string]podUsage{}, projects: map[string]string{}, warned: map[string]bool{}}
	for _, o := range opts {
		o(s)
	}
	s.log = s.log.With("component", "kubernetes", "cluster", cfg.Cluster)
	if s.factory == nil {
		s.factory = informers.NewSharedInformerFactory(kc, 0)
	}
	if s.volumes == nil && cfg.VolumeStats {
		s.volumes = NewKubeletVolumeStats(kc.CoreV1().RESTClient())
	}
	core := s.factory.Core().V1()
	nsInf, podInf, quotaInf, claimInf := core.Namespaces(), core.Pods(), core.ResourceQuotas(), core.PersistentVolumeClaims()
	s.namespaces, s.pods, s.quotas, s.claims = nsInf.Lister(), podInf.Lister(), quotaInf.Lister(), claimInf.Lister()
	s.synced = []cache.InformerSynced{nsInf.Informer().HasSynced, podInf.Informer().HasSynced, quotaInf.Informer().HasSynced, claimInf.Informer().HasSynced}
	if _, err := podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: s.podDeleted}); err != nil {
		return nil, fmt.Errorf("watch pod deletions: %w", err)
	}
	return s, nil
}

// podDeleted keeps the last state of a deleted pod until the next scrape,
// so that a pod that started and ended between two scrapes still counts.
func (s *Source) podDeleted(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	s.mu.Lock()
	s.finals[p.UID] = p
	s.mu.Unlock()
}

// Start starts the informers and waits until their caches are filled. The
// informers run until ctx ends; Wait waits for them to stop.
func (s *Source) Start(ctx context.Context) error {
	s.factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), s.synced...) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return errors.New("kubernetes informer caches did not sync")
	}
	s.mu.Lock()
	s.started = true
	s.mu.Unlock()
	s.log.InfoContext(ctx, "watching namespaces, pods, quotas and claims")
	return nil
}

// Wait waits for the informers to stop after the context given to Start
// ended.
func (s *Source) Wait() { s.factory.Shutdown() }

// Synced reports whether the informer caches are filled (readiness).
func (s *Source) Synced() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.started
}

// Run starts the informers, scrapes every ScrapeInterval and emits each
// window's samples when it closes, until ctx ends; then it returns nil.
func (s *Source) Run(ctx context.Context, emit collector.Emit) error {
	ictx, cancel := context.WithCancel(ctx)
	defer func() { cancel(); s.Wait() }()
	if err := s.Start(ictx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	step := s.cfg.ScrapeInterval
	for {
		now := s.now()
		t := time.NewTimer(now.Truncate(step).Add(step).Sub(now))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		samples, err := s.Scrape(ctx)
		if err != nil {
			s.log.WarnContext(ctx, "scrape", "err", err)
			continue
		}
		if len(samples) == 0 {
			continue
		}
		if err := emit(ctx, samples); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("emit window ending %s: %w", samples[0].End.Format(time.RFC3339), err)
		}
		s.log.DebugContext(ctx, "window collected", "end", samples[0].End, "namespaces", len(samples))
	}
}

// Scrape looks at the cluster now and accounts the time since the previous
// scrape; it returns the samples of the windows that closed, if any. Call
// it from one goroutine, after Start.
func (s *Source) Scrape(ctx context.Context) ([]sample.Sample, error) {
	iv, step := s.cfg.Interval, s.cfg.ScrapeInterval
	at := s.now().Truncate(step)
	if !s.last.IsZero() && !at.After(s.last) {
		return nil, nil
	}
	from := s.last
	if from.IsZero() || at.Sub(from) > iv {
		if !from.IsZero() {
			s.log.WarnContext(ctx, "no scrape for longer than a window: the windows in between are not collected", "last", from, "now", at)
		}
		// Extend back to the start of the window this slot belongs to.
		from = at.Add(-time.Nanosecond).Truncate(iv)
		s.win = nil
	}
	snap, err := s.snapshot(ctx, at)
	if err != nil {
		return nil, err
	}
	for ns, p := range snap.projects {
		s.projects[ns] = p
	}
	var out []sample.Sample
	for from.Before(at) {
		end := from.Truncate(iv).Add(iv)
		segEnd := end
		if at.Before(end) {
			segEnd = at
		}
		if s.win == nil || !s.win.end.Equal(end) {
			s.win = newWindow(end, iv)
		}
		s.win.add(snap, from, segEnd)
		if segEnd.Equal(end) {
			out = append(out, s.close(ctx, snap)...)
			s.win = nil
		}
		from = segEnd
	}
	s.last = at
	s.forget(snap, at)
	return out, nil
}

// forget moves the scrape state past a snapshot.
func (s *Source) forget(snap *snapshot, at time.Time) {
	s.seen = make(map[types.UID]*corev1.Pod, len(snap.pods))
	for _, p := range snap.pods {
		if !p.gone {
			s.seen[p.pod.UID] = p.pod
		} else {
			s.retired[p.pod.UID] = at
			delete(s.terminal, p.pod.UID)
		}
	}
	horizon := at.Add(-2 * s.cfg.Interval)
	for uid, t := range s.retired {
		if t.Before(horizon) {
			delete(s.retired, uid)
		}
	}
	for k := range s.usage {
		if _, ok := snap.podNames[k]; !ok {
			delete(s.usage, k)
		}
	}
}

// close turns the window's sums into samples, one per namespace, sorted.
func (s *Source) close(ctx context.Context, snap *snapshot) []sample.Sample {
	w := s.win
	used := s.storageUsage(ctx, snap)
	ivs := w.secs
	names := make([]string, 0, len(w.ns))
	for ns := range w.ns {
		names = append(names, ns)
	}
	sort.Strings(names)
	out := make([]sample.Sample, 0, len(names))
	for _, ns := range names {
		a := w.ns[ns]
		project, ok := s.projects[ns]
		if !ok {
			project = s.cfg.DefaultProject
		}
		var storageUse float64
		for claim, secs := range a.claimSecs {
			storageUse += float64(used[ns+"/"+claim]) * secs
		}
		cpuEff := s.bound(ns, "cpu.effective", a.cpuEff/(ivs*1e9), sample.MaxCores)
		memEff := s.bound(ns, "memory.effective", a.memEff/ivs, sample.MaxBytes)
		out = append(out, sample.Sample{
			Cluster: s.cfg.Cluster, Project: project, Namespace: ns,
			Start: w.end.Add(-s.cfg.Interval), End: w.end,
			CPU: sample.Resources{
				Usage:     s.bound(ns, "cpu.usage", a.cpuUse/(ivs*1e9), sample.MaxCores),
				Request:   s.bound(ns, "cpu.request", a.cpuReq/(ivs*1e9), sample.MaxCores),
				Quota:     s.bound(ns, "cpu.quota", a.cpuQuota/(ivs*1e9), sample.MaxCores),
				Effective: &cpuEff,
			},
			Memory: sample.Resources{
				Usage:     s.bound(ns, "memory.usage", a.memUse/ivs, sample.MaxBytes),
				Request:   s.bound(ns, "memory.request", a.memReq/ivs, sample.MaxBytes),
				Quota:     s.bound(ns, "memory.quota", a.memQuota/ivs, sample.MaxBytes),
				Effective: &memEff,
			},
			Storage: sample.Resources{
				Usage:   s.bound(ns, "storage.usage", storageUse/ivs, sample.MaxBytes),
				Request: s.bound(ns, "storage.request", a.storageReq/ivs, sample.MaxBytes),
				Quota:   s.bound(ns, "storage.quota", a.storageQuota/ivs, sample.MaxBytes),
			},
		})
	}
	// Deleted namespaces are remembered only while a window still has
	// their sums.
	for ns := range s.projects {
		if _, ok := snap.projects[ns]; !ok {
			delete(s.projects, ns)
		}
	}
	return out
}

// bound clamps a value to the wire format's bound (a quota of exabytes is
// meant as "unlimited"), saying so once per namespace and field.
func (s *Source) bound(ns, field string, v, limit float64) float64 {
	if v <= limit {
		return v
	}
	if key := "bound/" + ns + "/" + field; !s.warned[key] {
		s.warned[key] = true
		s.log.Warn("value above the sample bound; sending the bound", "namespace", ns, "field", field, "value", v, "bound", limit)
	}
	return limit
}

// storageUsage asks the kubelets for the used bytes of the claims mounted
// on their nodes; without access it is empty, said once.
func (s *Source) storageUsage(ctx context.Context, snap *snapshot) map[string]int64 {
	if s.volumes == nil || len(snap.claimNodes) == 0 {
		return nil
	}
	nodes := make([]string, 0, len(snap.claimNodes))
	for n := range snap.claimNodes {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	cctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	used, err := s.volumes.PVCUsage(cctx, nodes)
	switch {
	case err != nil && !s.warned["volumes"]:
		s.warned["volumes"] = true
		s.log.WarnContext(ctx, "storage usage unavailable from the kubelets' volume stats; reporting 0 for the claims they do not cover", "err", err)
	case err != nil:
		s.log.DebugContext(ctx, "read volume stats", "err", err)
	case s.warned["volumes"]:
		s.warned["volumes"] = false
		s.log.InfoContext(ctx, "storage usage available again from the kubelets' volume stats")
	}
	return used
}

// snapshot is the cluster as one scrape sees it.
type snapshot struct {
	at         time.Time
	projects   map[string]string // existing namespaces → project
	pods       []podState
	podNames   map[string]bool // namespace/name of pods present
	quotas     map[string]quota
	claims     map[string][]claim
	claimNodes map[string]bool // nodes running pods that mount claims
}

type podState struct {
	pod        *corev1.Pod
	start, end time.Time // end zero: still running
	gone       bool
	req, use   amounts
}

type quota struct {
	cpu, mem, storage int64
}

type claim struct {
	name  string
	bytes int64
}

func (s *Source) snapshot(ctx context.Context, at time.Time) (*snapshot, error) {
	snap := &snapshot{at: at, projects: map[string]string{}, podNames: map[string]bool{}, quotas: map[string]quota{}, claims: map[string][]claim{}, claimNodes: map[string]bool{}}
	nss, err := s.namespaces.List(labels.Everything())
	if err != nil {
		return nil, fmt.Errorf("list namespaces from the cache: %w", err)
	}
	for _, ns := range nss {
		snap.projects[ns.Name] = s.project(ns)
	}
	pods, err := s.pods.List(labels.Everything())
	if err != nil {
		return nil, fmt.Errorf("list pods from the cache: %w", err)
	}
	s.mu.Lock()
	finals := s.finals
	s.finals = map[types.UID]*corev1.Pod{}
	s.mu.Unlock()
	s.scrapeMetrics(ctx)

	present := make(map[types.UID]bool, len(pods))
	for _, p := range pods {
		present[p.UID] = true
		snap.podNames[p.Namespace+"/"+p.Name] = true
		if st, ok := s.podState(p, false, at); ok {
			snap.pods = append(snap.pods, st)
		}
		if p.Spec.NodeName != "" && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			for _, v := range p.Spec.Volumes {
				if v.PersistentVolumeClaim != nil {
					snap.claimNodes[p.Spec.NodeName] = true
				}
			}
		}
	}
	// Pods gone since the last scrape: the watch's last state if it came,
	// else what the last scrape saw.
	gone := map[types.UID]*corev1.Pod{}
	for uid, p := range s.seen {
		if !present[uid] {
			gone[uid] = p
		}
	}
	for uid, p := range finals {
		if _, done := s.retired[uid]; !present[uid] && !done {
			gone[uid] = p
		}
	}
	for _, p := range gone {
		if st, ok := s.podState(p, true, at); ok {
			snap.pods = append(snap.pods, st)
		}
	}

	quotas, err := s.quotas.List(labels.Everything())
	if err != nil {
		return nil, fmt.Errorf("list resource quotas from the cache: %w", err)
	}
	seenQuota := map[string]map[string]bool{}
	for _, q := range quotas {
		cur := snap.quotas[q.Namespace]
		set := seenQuota[q.Namespace]
		if set == nil {
			set = map[string]bool{}
			seenQuota[q.Namespace] = set
		}
		hard := q.Spec.Hard
		if len(q.Status.Hard) > 0 {
			hard = q.Status.Hard
		}
		merge := func(key string, v int64, ok bool, dst *int64) {
			if !ok {
				return
			}
			if !set[key] || v < *dst {
				*dst = v
			}
			set[key] = true
		}
		cpu, cok := hard[corev1.ResourceRequestsCPU]
		if !cok {
			cpu, cok = hard[corev1.ResourceCPU]
		}
		merge("cpu", nanocores(cpu), cok, &cur.cpu)
		mem, mok := hard[corev1.ResourceRequestsMemory]
		if !mok {
			mem, mok = hard[corev1.ResourceMemory]
		}
		merge("mem", mem.Value(), mok, &cur.mem)
		st, sok := hard[corev1.ResourceRequestsStorage]
		merge("storage", st.Value(), sok, &cur.storage)
		snap.quotas[q.Namespace] = cur
	}

	claims, err := s.claims.List(labels.Everything())
	if err != nil {
		return nil, fmt.Errorf("list persistent volume claims from the cache: %w", err)
	}
	for _, c := range claims {
		if c.Status.Phase != corev1.ClaimBound {
			continue
		}
		q, ok := c.Status.Capacity[corev1.ResourceStorage]
		if !ok {
			q = c.Spec.Resources.Requests[corev1.ResourceStorage]
		}
		snap.claims[c.Namespace] = append(snap.claims[c.Namespace], claim{name: c.Name, bytes: q.Value()})
	}
	return snap, nil
}

// project is a namespace's project label, or the default when it is
// missing or not a valid project name (said once per namespace).
func (s *Source) project(ns *corev1.Namespace) string {
	p, ok := ns.Labels[s.cfg.ProjectLabel]
	if !ok || p == "" {
		return s.cfg.DefaultProject
	}
	if !validProject(p) {
		if key := "project/" + ns.Name + "/" + p; !s.warned[key] {
			s.warned[key] = true
			s.log.Warn("project label is not a lowercase DNS label; using the default project", "namespace", ns.Name, "label", s.cfg.ProjectLabel, "value", p, "project", s.cfg.DefaultProject)
		}
		return s.cfg.DefaultProject
	}
	return p
}

// podState computes when a pod ran and what it requested and used; ok is
// false for a pod that never started.
func (s *Source) podState(p *corev1.Pod, gone bool, at time.Time) (podState, bool) {
	st := podState{pod: p, gone: gone}
	switch {
	case p.Status.StartTime != nil:
		st.start = p.Status.StartTime.Time
	case p.Status.Phase == corev1.PodRunning:
		st.start = p.CreationTimestamp.Time
	default:
		return st, false
	}
	finished := p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
	if last, all := lastFinish(p); all && (finished || gone) {
		st.end = last
	}
	if st.end.IsZero() && finished {
		t, ok := s.terminal[p.UID]
		if !ok {
			t = at
			s.terminal[p.UID] = at
		}
		st.end = t
	}
	if st.end.IsZero() && gone {
		st.end = at
		if p.DeletionTimestamp != nil && p.DeletionTimestamp.Time.Before(at) {
			st.end = p.DeletionTimestamp.Time
		}
	}
	st.req = podRequests(p)
	if u, ok := s.usage[p.Namespace+"/"+p.Name]; ok {
		st.use = u.amounts
	}
	return st, true
}

// lastFinish is the latest finishedAt of the app containers; all is false
// unless every one of them terminated.
func lastFinish(p *corev1.Pod) (last time.Time, all bool) {
	if len(p.Status.ContainerStatuses) == 0 {
		return time.Time{}, false
	}
	for _, cs := range p.Status.ContainerStatuses {
		t := cs.State.Terminated
		if t == nil {
			return time.Time{}, false
		}
		if t.FinishedAt.After(last) {
			last = t.FinishedAt.Time
		}
	}
	return last, !last.IsZero()
}

// scrapeMetrics refreshes the usage of every pod the metrics API knows;
// pods it does not list keep their previous usage.
func (s *Source) scrapeMetrics(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	list, err := s.mc.MetricsV1beta1().PodMetricses("").List(cctx, metav1.ListOptions{})
	if err != nil {
		if !s.metricsErr {
			s.metricsErr = true
			s.log.WarnContext(ctx, "list pod metrics; keeping the last known usage", "err", err)
		}
		return
	}
	if s.metricsErr {
		s.metricsErr = false
		s.log.InfoContext(ctx, "pod metrics available again")
	}
	for i := range list.Items {
		pm := &list.Items[i]
		var u amounts
		for _, c := range pm.Containers {
			u = u.add(fromList(c.Usage))
		}
		s.usage[pm.Namespace+"/"+pm.Name] = podUsage{amounts: u}
	}
}
