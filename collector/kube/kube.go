// Package kube is the collector's Kubernetes source (--source kubernetes):
// it measures every namespace of one cluster and emits one sample per
// namespace per window. It is the only package of the module that imports
// client-go, so that the aggregator and API binaries stay small.
//
// # What it reads
//
// Namespaces, pods, resource quotas, persistent volume claims, nodes and
// persistent volumes come from shared informers (one watch each, no list per
// window). Pod usage comes
// from the metrics API (metrics.k8s.io PodMetrics, which cannot be watched,
// so it is listed once per scrape). Storage usage comes from the kubelets'
// volume stats through the API server's node proxy, where RBAC allows it;
// otherwise it is 0, said once in the log.
//
// # RBAC
//
// Read only, cluster-wide (RBAC.md has the ClusterRole to copy):
//
//	""               namespaces, pods, resourcequotas, persistentvolumeclaims,
//	                 nodes, persistentvolumes                                  get list watch
//	metrics.k8s.io   pods                                                     get list
//	""               nodes/proxy (optional, for storage usage)                 get
//
// Start checks the required permissions with SelfSubjectAccessReviews and
// fails naming every one that is missing (ErrForbidden), rather than let
// the informers retry forever.
//
// # Structure
//
// A scrape observes the cluster (informer caches, deletions delivered
// since the last scrape, the metrics API: the only I/O), builds a snapshot
// from that (snapshot.go, pure), adds the slot since the previous scrape
// to the open window (window.go) and turns each window that closed into
// samples.
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
//     usage the metrics API's latest value for it — when the API lists it
//     no more or is unavailable, the last value for up to one window, then
//     0 (0 when it never had one) — its effective value max(usage,
//     request); all times its running seconds;
//   - quotas (the smallest hard requests.cpu/cpu, requests.memory/memory
//     and requests.storage over the namespace's ResourceQuotas) and bound
//     claims' capacities count for the whole slot;
//   - the namespace's project is its --project-label value when the window
//     closes (--default-project without it), and so are its allocation
//     labels (WithLabeler: its values of --allocation-labels, else the
//     label map's);
//   - the cluster's capacity, sent as one capacity sample after the
//     window's namespaces: the allocatable CPU and memory of the nodes that
//     are Ready and not cordoned (spec.unschedulable: no new pod can be
//     placed there, so it is no room anyone can use) and the capacity of
//     the persistent volumes in phase Bound, each for the whole slot.
//
// At t each namespace's sums are divided by the interval: averages over
// the window, as wire format v1 defines them. The first scrape after a
// start extends back to the start of its window (the state it sees is the
// best estimate of the part the collector missed), so a restart costs no
// window; a gap longer than a window (a suspended process) drops the
// windows it spans.
package kube

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
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
		if err := sample.CheckName(sample.NameCluster, c.Cluster); err != nil {
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
	return sample.CheckName(sample.NameProject, p) == nil
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

// WithLabeler makes every sample carry its namespace's allocation labels
// (--allocation-labels, --allocation-label-map), read from the namespace
// informer: the labels a namespace has when a window closes are the
// labels of that window's sample, as its project is.
func WithLabeler(l *collector.Labeler) Option { return func(s *Source) { s.labeler = l } }

// WithVolumeStats replaces the kubelet volume stats reader.
func WithVolumeStats(v VolumeStats) Option { return func(s *Source) { s.volumes = v } }
