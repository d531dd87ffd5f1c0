// Package prom is the collector's Prometheus source (--source prometheus):
// it reads what kube-state-metrics, cAdvisor and the kubelet already export
// to a cluster's Prometheus and turns it into the samples (wire format v1)
// the Kubernetes source (collector/kube) would have sent for the same
// windows. It backfills history (--from, --to), follows live, or fills only
// the windows the store is missing (--fill-gaps). Only the collector binary
// imports it, so the aggregator and API binaries stay free of the
// Prometheus client.
//
// # Same windows as the Kubernetes source
//
// Windows are [t−interval, t) with t a multiple of --interval since the
// epoch, as in collector/kube: a window this source sends and one the
// Kubernetes source sent for the same namespace are the same window, so the
// aggregator counts the second as a duplicate, never as an overlap.
//
// # What it reads and how
//
// A window is cut into slots of --scrape-interval (the query step). Every
// series is read with range queries at the slots' starts; a gauge's value
// in a slot is the latest sample Prometheus holds at or before the slot's
// start (its 5-minute lookback), so a series scraped at least once per
// slot is followed exactly. Per slot:
//
//   - a namespace exists while kube_namespace_labels has it; its project is
//     the label_<--project-label> of that series (the label sanitised as
//     kube-state-metrics does: cpaas.io/project → label_cpaas_io_project)
//     at the last slot of the window it existed in, --default-project
//     without it. kube-state-metrics exports namespace labels only when
//     allowed: --metric-labels-allowlist=namespaces=[cpaas.io/project];
//   - a pod counts while kube_pod_status_phase{phase="Running"} is 1;
//     its request is the larger of the sum of its containers'
//     kube_pod_container_resource_requests and its largest init
//     container's (kube_pod_init_container_resource_requests); its CPU
//     usage is the increase of container_cpu_usage_seconds_total over the
//     slot divided by the slot (a counter reset or a new container counts
//     0 for that one slot), its memory usage
//     container_memory_working_set_bytes (what the metrics API reports
//     too), both summed over the pod's containers; its effective value is
//     max(usage, request), summed over pods — the Kubernetes source's rule;
//   - quotas: per ResourceQuota the hard requests.cpu (else cpu),
//     requests.memory (else memory) and requests.storage of kube_resourcequota,
//     the smallest over the namespace's quotas;
//   - allocation labels: the values of --allocation-labels on the same
//     kube_namespace_labels series as the project, each key read from its
//     sanitised name (see labelName; CheckLabelKeys refuses two keys with
//     one name);
//   - capacity (one capacity sample per window in which any of these series
//     exist): kube_node_status_allocatable cpu and memory of the nodes whose
//     kube_node_status_condition{condition="Ready",status="true"} is 1 and
//     kube_node_spec_unschedulable is not 1, and
//     kube_persistentvolume_capacity_bytes of the volumes whose
//     kube_persistentvolume_status_phase{phase="Bound"} is 1;
//   - storage: bound claims (kube_persistentvolumeclaim_status_phase) count
//     their kube_persistentvolumeclaim_resource_requests_storage_bytes as
//     request and kubelet_volume_stats_used_bytes (the largest reported
//     for the claim) as usage.
//
// Each value is summed as value × slot seconds and divided by the window's
// seconds: averages over the window, as wire format v1 defines them.
//
// # Limits
//
//   - Prometheus's retention bounds what can be backfilled: --from before
//     its oldest data is refused before anything is sent.
//   - Resolution: a series scraped less often than --scrape-interval is
//     held at its last value for the slots in between (up to Prometheus's
//     5-minute lookback, after which it is absent); CPU usage follows the
//     counter's scrapes, so its sum over a day is the counter's increase
//     whatever the step. --interval must be a multiple of the step.
//   - A namespace (or pod) Prometheus has no series of sends no sample:
//     its windows stay missing and show as such in the coverage route.
//   - Sidecar init containers, pod overhead and pod-level requests are not
//     exported by kube-state-metrics as the scheduler adds them; claims
//     count their requested size, not the bound volume's capacity.
package prom

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/internal/config"
	"github.com/alauda/costmeter/internal/sample"
)

// Defaults of the Prometheus source.
const (
	DefaultDelay   = 2 * time.Minute
	DefaultTimeout = time.Minute
	// MaxPoints is the most points one range query asks per series;
	// Prometheus refuses more than 11,000.
	MaxPoints = 10_000
	// DateLayout is the layout of --from and --to.
	DateLayout = "2006-01-02"
)

// Config configures the Prometheus source. Cluster, ProjectLabel,
// DefaultProject, Interval, Step and Location come from flags other
// packages register (--cluster, --project-label, --default-project,
// --interval, --scrape-interval, --timezone) and are set by the caller.
type Config struct {
	// URL is the Prometheus server (or anything serving its HTTP API).
	URL string
	// Selector holds extra label matchers added to every series selector,
	// e.g. cluster="prod-east" on a Prometheus holding several clusters.
	Selector string
	// From and To are the billing-zone days (YYYY-MM-DD, inclusive) to
	// backfill; both empty: follow live.
	From, To string
	// FillGaps sends only the windows the store is missing.
	FillGaps bool
	// Delay is how long after a window ends it is read live, so that
	// Prometheus has scraped it.
	Delay time.Duration
	// Timeout bounds each query.
	Timeout time.Duration
	// BearerTokenFile holds a token sent as "Authorization: Bearer" (read
	// again for every request, so a rotated token is picked up).
	BearerTokenFile string
	// CAFile verifies an https Prometheus with a private CA.
	CAFile string

	Cluster        string
	ProjectLabel   string
	DefaultProject string
	Interval       time.Duration
	Step           time.Duration
	Location       *time.Location
	// Labeler attaches allocation labels (--allocation-labels,
	// --allocation-label-map), read from kube_namespace_labels.
	Labeler *collector.Labeler
}

// RegisterFlags registers the source's own flags.
func (c *Config) RegisterFlags(f *config.Flags) {
	f.String(&c.URL, "prometheus-url", "PROMETHEUS_URL", "", "Prometheus HTTP API base URL (required with --source prometheus)")
	f.String(&c.Selector, "prometheus-selector", "PROMETHEUS_SELECTOR", "", `label matchers added to every series selector, e.g. cluster="prod-east"`)
	f.String(&c.From, "from", "COLLECTOR_FROM", "", "first billing day to backfill from Prometheus (YYYY-MM-DD); with --to, backfill and exit")
	f.String(&c.To, "to", "COLLECTOR_TO", "", "last billing day to backfill from Prometheus (YYYY-MM-DD, inclusive)")
	f.Bool(&c.FillGaps, "fill-gaps", "COLLECTOR_FILL_GAPS", false, "with --from/--to: send only the windows the coverage route reports missing for --cluster")
	f.Duration(&c.Delay, "prometheus-delay", "PROMETHEUS_DELAY", DefaultDelay, "how long after a window ends it is read from Prometheus when following live")
	f.Duration(&c.Timeout, "prometheus-timeout", "PROMETHEUS_TIMEOUT", DefaultTimeout, "deadline of each Prometheus query")
	f.String(&c.BearerTokenFile, "prometheus-bearer-token-file", "PROMETHEUS_BEARER_TOKEN_FILE", "", "file with a bearer token for Prometheus (re-read on every request)")
	f.String(&c.CAFile, "prometheus-ca", "PROMETHEUS_CA", "", "PEM file of the CA that signed Prometheus's https certificate")
}

// Backfill reports whether the configuration asks for a backfill rather
// than following live.
func (c Config) Backfill() bool { return c.From != "" || c.To != "" }

// Range returns the backfill's days as [first day's start, day after the
// last's start) in the billing zone.
func (c Config) Range() (from, to time.Time, err error) {
	loc := c.loc()
	f, err1 := time.ParseInLocation(DateLayout, c.From, loc)
	t, err2 := time.ParseInLocation(DateLayout, c.To, loc)
	if err := errors.Join(err1, err2); err != nil {
		return time.Time{}, time.Time{}, err
	}
	return f, t.AddDate(0, 0, 1), nil
}

func (c Config) loc() *time.Location {
	if c.Location == nil {
		return time.UTC
	}
	return c.Location
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("--prometheus-url: required with --source prometheus"))
	} else if u, err := url.Parse(c.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("--prometheus-url: %q is not an http(s) URL", c.URL))
	}
	if c.Cluster == "" {
		errs = append(errs, errors.New("--cluster: required with --source prometheus"))
	} else if err := sample.CheckName(sample.NameCluster, c.Cluster); err != nil {
		errs = append(errs, fmt.Errorf("--cluster: %w", err))
	}
	if c.ProjectLabel == "" {
		errs = append(errs, errors.New("--project-label: required"))
	}
	if err := sample.CheckName(sample.NameProject, c.DefaultProject); err != nil {
		errs = append(errs, fmt.Errorf("--default-project: %w", err))
	}
	if err := CheckLabelKeys(c.ProjectLabel, c.Labeler.Keys()); err != nil {
		errs = append(errs, fmt.Errorf("--allocation-labels: %w", err))
	}
	if c.Interval < time.Second || c.Interval > time.Hour || c.Interval%time.Second != 0 {
		errs = append(errs, fmt.Errorf("--interval: %s is not whole seconds within 1s..1h", c.Interval))
	}
	if c.Step < time.Second || c.Step%time.Second != 0 || (c.Interval > 0 && c.Interval%c.Step != 0) {
		errs = append(errs, fmt.Errorf("--scrape-interval: %s is not whole seconds dividing --interval %s (it is the Prometheus query step)", c.Step, c.Interval))
	}
	if c.Delay < 0 {
		errs = append(errs, fmt.Errorf("--prometheus-delay: %s is negative", c.Delay))
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("--prometheus-timeout: must be positive, got %s", c.Timeout))
	}
	if c.BearerTokenFile != "" {
		if _, err := readToken(c.BearerTokenFile); err != nil {
			errs = append(errs, fmt.Errorf("--prometheus-bearer-token-file: %w", err))
		}
	}
	if c.CAFile != "" {
		if _, err := caPool(c.CAFile); err != nil {
			errs = append(errs, fmt.Errorf("--prometheus-ca: %w", err))
		}
	}
	switch {
	case c.Backfill() && (c.From == "" || c.To == ""):
		errs = append(errs, errors.New("--from, --to: give both to backfill, or neither to follow live"))
	case c.Backfill():
		from, to, err := c.Range()
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("--from, --to: not YYYY-MM-DD: %w", err))
		case !to.After(from):
			errs = append(errs, fmt.Errorf("--to: %s is before --from %s", c.To, c.From))
		case to.Sub(from) > 400*24*time.Hour:
			errs = append(errs, fmt.Errorf("--from, --to: %s..%s is more than 400 days", c.From, c.To))
		}
	case c.FillGaps:
		errs = append(errs, errors.New("--fill-gaps: needs --from and --to"))
	}
	return errors.Join(errs...)
}

// NewAPI returns a Prometheus API client for cfg.URL, with cfg's bearer
// token and CA.
func NewAPI(cfg Config) (v1.API, error) {
	tr := api.DefaultRoundTripper.(*http.Transport).Clone()
	if cfg.CAFile != "" {
		pool, err := caPool(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("--prometheus-ca: %w", err)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	var rt http.RoundTripper = tr
	if cfg.BearerTokenFile != "" {
		rt = bearer{file: cfg.BearerTokenFile, next: tr}
	}
	c, err := api.NewClient(api.Config{Address: cfg.URL, RoundTripper: rt})
	if err != nil {
		return nil, fmt.Errorf("prometheus client for %s: %w", cfg.URL, err)
	}
	return v1.NewAPI(c), nil
}

// bearer adds the token of a file to every request.
type bearer struct {
	file string
	next http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	tok, err := readToken(b.file)
	if err != nil {
		return nil, fmt.Errorf("prometheus bearer token: %w", err)
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+tok)
	return b.next.RoundTrip(r)
}

func readToken(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("%s is empty", file)
	}
	return tok, nil
}

func caPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}

// API is the part of the Prometheus HTTP API the source uses; v1.API has
// it.
type API interface {
	Query(ctx context.Context, query string, ts time.Time, opts ...v1.Option) (model.Value, v1.Warnings, error)
	QueryRange(ctx context.Context, query string, r v1.Range, opts ...v1.Option) (model.Value, v1.Warnings, error)
	Runtimeinfo(ctx context.Context) (v1.RuntimeinfoResult, error)
}

// Option sets an optional dependency.
type Option func(*Source)

// WithLogger sets the logger (default: slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(s *Source) { s.log = l } }

// WithClock sets the clock (default: time.Now).
func WithClock(now func() time.Time) Option { return func(s *Source) { s.now = now } }

// WithGaps makes a backfill send only the windows gaps reports missing
// (--fill-gaps).
func WithGaps(g Gaps) Option { return func(s *Source) { s.gaps = g } }

// Source reads a cluster's history from Prometheus.
type Source struct {
	cfg  Config
	api  API
	log  *slog.Logger
	now  func() time.Time
	gaps Gaps
	sel  string
}

// New returns a source reading from p.
func New(cfg Config, p API, opts ...Option) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if p == nil {
		return nil, errors.New("prometheus source: a Prometheus API client is required")
	}
	s := &Source{cfg: cfg, api: p, log: slog.Default(), now: time.Now}
	for _, o := range opts {
		o(s)
	}
	if cfg.FillGaps && s.gaps == nil {
		return nil, errors.New("prometheus source: --fill-gaps needs a coverage reader")
	}
	s.log = s.log.With("component", "prometheus", "cluster", cfg.Cluster)
	if sel := strings.TrimSpace(cfg.Selector); sel != "" {
		s.sel = "," + sel
	}
	return s, nil
}

// Run follows live: every --interval, --prometheus-delay after a window
// ended, it reads the windows closed since the last one it sent and emits
// them, until ctx ends; then it returns nil. It starts with the last
// window closed before now − delay; a collector that was down leaves the
// windows in between missing, for --fill-gaps to find.
func (s *Source) Run(ctx context.Context, emit collector.Emit) error {
	iv := s.cfg.Interval
	next := s.now().Add(-s.cfg.Delay).Truncate(iv).Add(-iv) // start of the first window to read
	for {
		end := s.now().Add(-s.cfg.Delay).Truncate(iv)
		if end.Sub(next) > 24*time.Hour {
			s.log.WarnContext(ctx, "more than a day behind; the windows in between are not read (use --fill-gaps)", "from", next, "to", end.Add(-24*time.Hour))
			next = end.Add(-24 * time.Hour)
		}
		if end.After(next) {
			samples, err := s.Collect(ctx, next, end)
			switch {
			case err != nil && ctx.Err() != nil:
				return nil
			case err != nil:
				s.log.WarnContext(ctx, "read windows from prometheus; retrying next window", "from", next, "to", end, "err", err)
			default:
				if len(samples) > 0 {
					if err := emit(ctx, samples); err != nil {
						if ctx.Err() != nil {
							return nil
						}
						return fmt.Errorf("emit windows ending up to %s: %w", end.Format(time.RFC3339), err)
					}
				}
				s.log.DebugContext(ctx, "windows collected", "from", next, "to", end, "samples", len(samples))
				next = end
			}
		}
		wake := next.Add(iv).Add(s.cfg.Delay)
		t := time.NewTimer(max(wake.Sub(s.now()), time.Second))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}
