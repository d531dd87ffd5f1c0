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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	metricsclient "k8s.io/metrics/pkg/client/clientset/versioned"

	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/internal/sample"
)

// Source measures a cluster's namespaces. Its parts: informers that keep
// the cluster's objects (and the pods deleted between two scrapes); Scrape,
// which observes the cluster (the only I/O), builds a snapshot of it
// (snapshotBuilder, pure), adds the slot since the previous scrape to the
// open window and turns each window that closed into samples.
type Source struct {
	cfg     Config
	kc      kubernetes.Interface
	mc      metricsclient.Interface
	factory informers.SharedInformerFactory
	volumes VolumeStats
	labeler *collector.Labeler
	log     *slog.Logger
	now     func() time.Time
	builder snapshotBuilder

	namespaces corelisters.NamespaceLister
	pods       corelisters.PodLister
	quotas     corelisters.ResourceQuotaLister
	claims     corelisters.PersistentVolumeClaimLister
	nodes      corelisters.NodeLister
	pvs        corelisters.PersistentVolumeLister
	synced     []cache.InformerSynced

	mu      sync.Mutex
	deleted map[types.UID]*corev1.Pod // pods deleted since the last scrape, as last seen by the watch
	started bool

	// Scrape state, owned by the goroutine that scrapes.
	last     time.Time                    // end of the last scraped slot
	hist     history                      // what the snapshot builder carries between scrapes
	projects map[string]string            // namespace → project, kept for deleted namespaces
	labels   map[string]map[string]string // namespace → allocation labels, likewise
	win      *window
	once     onceLog
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
		builder: snapshotBuilder{projectLabel: cfg.ProjectLabel, defaultProject: cfg.DefaultProject, usageHorizon: cfg.Interval},
		deleted: map[types.UID]*corev1.Pod{}, hist: newHistory(), projects: map[string]string{}, labels: map[string]map[string]string{}}
	for _, o := range opts {
		o(s)
	}
	s.builder.labeler = s.labeler
	s.log = s.log.With("component", "kubernetes", "cluster", cfg.Cluster)
	s.once = onceLog{log: s.log, said: map[string]bool{}}
	if s.factory == nil {
		s.factory = informers.NewSharedInformerFactory(kc, 0)
	}
	if s.volumes == nil && cfg.VolumeStats {
		s.volumes = NewKubeletVolumeStats(kc.CoreV1().RESTClient())
	}
	core := s.factory.Core().V1()
	nsInf, podInf, quotaInf, claimInf := core.Namespaces(), core.Pods(), core.ResourceQuotas(), core.PersistentVolumeClaims()
	nodeInf, pvInf := core.Nodes(), core.PersistentVolumes()
	s.namespaces, s.pods, s.quotas, s.claims = nsInf.Lister(), podInf.Lister(), quotaInf.Lister(), claimInf.Lister()
	s.nodes, s.pvs = nodeInf.Lister(), pvInf.Lister()
	s.synced = []cache.InformerSynced{nsInf.Informer().HasSynced, podInf.Informer().HasSynced, quotaInf.Informer().HasSynced, claimInf.Informer().HasSynced,
		nodeInf.Informer().HasSynced, pvInf.Informer().HasSynced}
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
	s.deleted[p.UID] = p
	s.mu.Unlock()
}

// Start checks that RBAC grants what the source needs (ErrForbidden names
// what is missing), starts the informers and waits until their caches are
// filled. The informers run until ctx ends; Wait waits for them to stop.
func (s *Source) Start(ctx context.Context) error {
	if err := s.checkAccess(ctx); err != nil {
		return err
	}
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
	s.log.InfoContext(ctx, "watching namespaces, pods, quotas, claims, nodes and volumes")
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
	obs, err := s.observe(ctx, at)
	if err != nil {
		return nil, err
	}
	snap := s.builder.build(obs, &s.hist)
	s.report(ctx, obs, snap)
	for ns, p := range snap.projects {
		s.projects[ns] = p
		s.labels[ns] = snap.labels[ns]
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
			out = append(out, s.samples(ctx, snap)...)
			s.win = nil
		}
		from = segEnd
	}
	s.last = at
	s.hist.advance(snap, 2*iv)
	return out, nil
}

// observe reads the informers' caches, takes the deletions delivered since
// the last scrape and lists the pod metrics.
func (s *Source) observe(ctx context.Context, at time.Time) (observation, error) {
	obs := observation{at: at}
	var err error
	if obs.namespaces, err = s.namespaces.List(labels.Everything()); err != nil {
		return obs, fmt.Errorf("list namespaces from the cache: %w", err)
	}
	if obs.pods, err = s.pods.List(labels.Everything()); err != nil {
		return obs, fmt.Errorf("list pods from the cache: %w", err)
	}
	if obs.quotas, err = s.quotas.List(labels.Everything()); err != nil {
		return obs, fmt.Errorf("list resource quotas from the cache: %w", err)
	}
	if obs.claims, err = s.claims.List(labels.Everything()); err != nil {
		return obs, fmt.Errorf("list persistent volume claims from the cache: %w", err)
	}
	if obs.nodes, err = s.nodes.List(labels.Everything()); err != nil {
		return obs, fmt.Errorf("list nodes from the cache: %w", err)
	}
	if obs.volumes, err = s.pvs.List(labels.Everything()); err != nil {
		return obs, fmt.Errorf("list persistent volumes from the cache: %w", err)
	}
	s.mu.Lock()
	obs.deleted = s.deleted
	s.deleted = map[types.UID]*corev1.Pod{}
	s.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	list, err := s.mc.MetricsV1beta1().PodMetricses("").List(cctx, metav1.ListOptions{})
	if err != nil {
		obs.metricsErr = fmt.Errorf("list pod metrics: %w", err)
	} else {
		obs.metrics = list.Items
	}
	return obs, nil
}

// report logs, once each until resolved, what a scrape could not measure
// as it should.
func (s *Source) report(ctx context.Context, obs observation, snap *snapshot) {
	switch {
	case obs.metricsErr != nil && apierrors.IsForbidden(obs.metricsErr):
		s.once.error(ctx, "metrics", "pod metrics forbidden by RBAC (list pods.metrics.k8s.io, see deploy/kubernetes/collector-rbac.yaml); usage counts 0 after one window", "err", obs.metricsErr)
	case obs.metricsErr != nil:
		s.once.warn(ctx, "metrics", "pod metrics unavailable; each pod's last usage counts for up to one window, then 0 (its effective value is its request)", "err", obs.metricsErr)
	case s.once.resolved("metrics"):
		s.log.InfoContext(ctx, "pod metrics available again")
	}
	for ns, v := range snap.badProjects {
		s.once.warn(ctx, "project/"+ns+"/"+v, "project label is not a lowercase DNS label; using the default project",
			"namespace", ns, "label", s.cfg.ProjectLabel, "value", v, "project", s.cfg.DefaultProject)
	}
	if snap.staleUsage > 0 {
		s.log.DebugContext(ctx, "pods without usage from the metrics API for longer than a window count usage 0", "pods", snap.staleUsage)
	}
}

// samples turns the window that just closed into samples, one per
// namespace, sorted by namespace, then the cluster's capacity sample.
func (s *Source) samples(ctx context.Context, snap *snapshot) []sample.Sample {
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
			Labels: s.labels[ns],
		})
	}
	out = append(out, sample.Sample{Cluster: s.cfg.Cluster, Start: w.end.Add(-s.cfg.Interval), End: w.end, Capacity: &sample.Capacity{
		CPU:     s.bound("", "capacity.cpu", w.capCPU/(ivs*1e9), sample.MaxCapacityCores),
		Memory:  s.bound("", "capacity.memory", w.capMem/ivs, sample.MaxCapacityBytes),
		Storage: s.bound("", "capacity.storage", w.capStorage/ivs, sample.MaxCapacityBytes),
	}})
	// Deleted namespaces are remembered only while a window still has
	// their sums.
	for ns := range s.projects {
		if _, ok := snap.projects[ns]; !ok {
			delete(s.projects, ns)
			delete(s.labels, ns)
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
	s.once.warn(context.Background(), "bound/"+ns+"/"+field, "value above the sample bound; sending the bound",
		"namespace", ns, "field", field, "value", v, "bound", limit)
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
	case err != nil:
		if !s.once.warn(ctx, "volumes", "storage usage unavailable from the kubelets' volume stats; reporting 0 for the claims they do not cover", "err", err) {
			s.log.DebugContext(ctx, "read volume stats", "err", err)
		}
	case s.once.resolved("volumes"):
		s.log.InfoContext(ctx, "storage usage available again from the kubelets' volume stats")
	}
	return used
}

// onceLog says each problem once, until it is resolved.
type onceLog struct {
	log  *slog.Logger
	said map[string]bool
}

// warn logs msg at warning level unless key was said; it reports whether
// it logged.
func (o *onceLog) warn(ctx context.Context, key, msg string, args ...any) bool {
	return o.say(ctx, slog.LevelWarn, key, msg, args...)
}

// error is warn at error level.
func (o *onceLog) error(ctx context.Context, key, msg string, args ...any) bool {
	return o.say(ctx, slog.LevelError, key, msg, args...)
}

func (o *onceLog) say(ctx context.Context, level slog.Level, key, msg string, args ...any) bool {
	if o.said[key] {
		return false
	}
	o.said[key] = true
	o.log.Log(ctx, level, msg, args...)
	return true
}

// resolved forgets key and reports whether it had been said.
func (o *onceLog) resolved(key string) bool {
	if !o.said[key] {
		return false
	}
	delete(o.said, key)
	return true
}
