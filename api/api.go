// Package api serves the usage query API, cost.alauda.io/v1beta1: usage and
// cost per project, cluster or namespace and per day, ISO week or calendar
// month, composed from the exact day rollups in Redis (internal/rollup)
// without reading more than a page needs.
//
// Routes:
//
//	GET /platform/cost.alauda.io/v1beta1/costs/usage                     platform-wide
//	GET /platform/cost.alauda.io/v1beta1/projects/{project}/costs/usage  one project's data
//	GET /platform/cost.alauda.io/v1beta1/costs/coverage                  completeness per cluster and day (coverage.go)
//	GET /platform/cost.alauda.io/v1beta1/costs/allocation (and .../projects/{project}/costs/allocation)
//	    the bill per group of a kept label key (bill.go, docs/chargeback.md)
//	GET .../costs/usage/watch (both)  Server-Sent Events of rollup changes (watch.go)
//	GET /platform/cost.alauda.io/v1beta1/notifications (and .../projects/{project}/notifications)
//	    thresholds the notifier fired, with their delivery state (notifications.go)
//	GET /openapi.yaml, /healthz, /readyz, /metrics (with WithTelemetry)
//
// Every error is a Kubernetes Status object (internal/kstatus).
//
// Speed: a page costs one cardinality per bucket, one rank lookup and one
// ZRANGE per bucket on the page, and one MGET per month of the page's day
// rollups, so it grows with page size × days and with the number of
// buckets, never with the number of entities (see rollup.Reader for the
// one exception, an ISO week straddling two months, which is merged once
// and cached). A full CSV export grows with the rows exported.
package api

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/alauda/costmeter/internal/allocation"
	"github.com/alauda/costmeter/internal/auth"
	"github.com/alauda/costmeter/internal/config"
	"github.com/alauda/costmeter/internal/filewatch"
	"github.com/alauda/costmeter/internal/health"
	"github.com/alauda/costmeter/internal/pricing"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
)

// Paths of the usage routes.
const (
	PlatformPath = "/platform/cost.alauda.io/v1beta1/costs/usage"
	ProjectPath  = "/platform/cost.alauda.io/v1beta1/projects/:project/costs/usage"
)

//go:embed openapi.yaml
var openAPISpec []byte

// OpenAPISpec returns the OpenAPI 3 description served at /openapi.yaml.
func OpenAPISpec() []byte { return slices.Clone(openAPISpec) }

// Currencies are the ISO 4217 codes --currency accepts (pricing.Currencies,
// defined there once for the API and the exporter).
var Currencies = pricing.Currencies

// Config configures the API server.
type Config struct {
	// Listen is the address served, host:port.
	Listen string
	// Currency is echoed in every row and is the currency of the price list.
	Currency string
	// PricingFile is an optional price list (internal/pricing); rows carry
	// cost when it is set.
	PricingFile string
	// AllocationLabels is the comma-separated list of the namespace label
	// keys the aggregator keeps (its --allocation-labels): the keys the
	// group kinds and the bill accept as groupBy.
	AllocationLabels string
	// AllocationFile is the optional allocation policy of the bill route
	// (internal/allocation), reloaded when it changes; without it nothing
	// is shared and idle is its own group.
	AllocationFile string
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config { return Config{Listen: ":8080", Currency: "CNY"} }

// RegisterFlags registers --listen, --currency and --pricing.
func (c *Config) RegisterFlags(f *config.Flags) {
	d := DefaultConfig()
	f.String(&c.Listen, "listen", "API_LISTEN", d.Listen, "address of the API, /openapi.yaml, /healthz, /readyz and /metrics")
	f.String(&c.Currency, "currency", "COST_CURRENCY", d.Currency, "currency of costs (ISO 4217: CNY, USD, THB, RUB, AUD, CAD, CHF, DKK, EUR, GBP, IDR, INR, JPY, HKD, SGD)")
	f.String(&c.PricingFile, "pricing", "COST_PRICING_FILE", "", "price list file (YAML or JSON); when set rows carry cost")
	f.String(&c.AllocationFile, "allocation-file", "COST_ALLOCATION_FILE", "", "allocation policy of the bill route (YAML: shared namespaces and labels, idle, overheads), reloaded on change; empty: nothing shared, idle its own group")
}

// AllocationLabelsFlag is the flag (and its environment variable) naming
// the kept label keys, shared by the aggregator and the API: costd
// registers it once and gives both the one value.
const (
	AllocationLabelsFlag = "allocation-labels"
	AllocationLabelsEnv  = "COST_ALLOCATION_LABELS"
)

// RegisterAllocationLabels registers --allocation-labels, for a binary
// where no other component (the aggregator) registers it.
func (c *Config) RegisterAllocationLabels(f *config.Flags) {
	f.String(&c.AllocationLabels, AllocationLabelsFlag, AllocationLabelsEnv, "", "namespace label keys the aggregator keeps rollups of, comma-separated (as its --allocation-labels): the groupBy keys of the group kinds and the bill")
}

// ParseLabelKeys parses a comma-separated list of label keys
// (sample.ParseLabelKeys: the one rule of every binary's
// --allocation-labels).
func ParseLabelKeys(list string) ([]string, error) { return sample.ParseLabelKeys(list) }

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("--listen: %q is not host:port", c.Listen))
	}
	if err := pricing.CheckCurrency("--currency", c.Currency); err != nil {
		errs = append(errs, err)
	}
	var prices *pricing.List
	if c.PricingFile != "" {
		var err error
		if prices, err = c.loadPricing(); err != nil {
			errs = append(errs, fmt.Errorf("--pricing: %w", err))
		}
	}
	if _, err := ParseLabelKeys(c.AllocationLabels); err != nil {
		errs = append(errs, fmt.Errorf("--%s: %w", AllocationLabelsFlag, err))
	}
	if c.AllocationFile != "" {
		if _, err := allocation.Load(c.AllocationFile, prices.Decimals()); err != nil {
			errs = append(errs, fmt.Errorf("--allocation-file: %w", err))
		}
	}
	return errors.Join(errs...)
}

// loadPricing reads the price list and checks that the currency it names,
// if any, is the one the API echoes.
func (c Config) loadPricing() (*pricing.List, error) {
	p, err := pricing.Load(c.PricingFile)
	if err != nil {
		return nil, err
	}
	if cur := p.Currency(); cur != "" && cur != c.Currency {
		return nil, fmt.Errorf("price list %s: currency %s is not the API's --currency %s", c.PricingFile, cur, c.Currency)
	}
	return p, nil
}

// Rollups is what the API reads: pages of a selection's rows, one
// entity's day values, and whether the store answers. *rollup.Store and
// *rollup.Reader provide it; the key layout stays theirs.
type Rollups interface {
	Page(ctx context.Context, sel rollup.Selection, buckets []rollup.Bucket, offset, limit int) (rollup.Page, error)
	DayValues(ctx context.Context, d rollup.Day, sc rollup.Scope, member string) (rollup.Values, bool, error)
	ClusterCoverage(ctx context.Context, first, last rollup.Day, cluster string) ([]rollup.ClusterDay, error)
	Ping(ctx context.Context) error
	// TopByUsage and RowCounts serve orderBy=usage (orderby.go).
	TopByUsage(ctx context.Context, sc rollup.Scope, first, last rollup.Day, field, n int) ([]rollup.Ranked, error)
	RowCounts(ctx context.Context, sc rollup.Scope, members []string, buckets []rollup.Bucket) ([]int, error)
}

// Server is the API server.
type Server struct {
	cfg     Config
	loc     *time.Location
	reader  Rollups
	pricing *pricing.List
	log     *slog.Logger
	authn   gin.HandlerFunc
	engine  *gin.Engine
	watch   watchState
	tel     telemetryDeps
	// notifications serves the notification routes (notifications.go).
	notifications Notifications
	// groupKeys are the kept label keys (Config.AllocationLabels).
	groupKeys []string
	// policies holds the allocation policy in force (bill.go).
	policies *filewatch.Watcher[*allocation.Policy]
}

// Option sets an optional dependency of the Server.
type Option func(*Server)

// WithAuthenticate sets the middleware that authenticates a request: it
// stores the caller's principal with auth.WithPrincipal in the request's
// context, or aborts (with a Status) itself. Without it every request is
// auth.Anonymous().
func WithAuthenticate(h gin.HandlerFunc) Option { return func(s *Server) { s.authn = h } }

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(s *Server) { s.log = l } }

// New returns a Server answering from rollups. loc is the
// billing zone the rollups were cut in: query days are its calendar days.
// The caller checks it against the zone recorded in Redis
// (rollup.Store.CheckTimezone) before serving.
func New(cfg Config, rollups Rollups, loc *time.Location, opts ...Option) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("api config: %w", err)
	}
	if rollups == nil || loc == nil {
		return nil, errors.New("api: rollups and time zone are required")
	}
	s := &Server{cfg: cfg, loc: loc, reader: rollups, log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(s)
	}
	if s.authn == nil {
		s.authn = func(c *gin.Context) {
			c.Request = c.Request.WithContext(auth.WithPrincipal(c.Request.Context(), auth.Anonymous()))
		}
	}
	if cfg.PricingFile != "" {
		p, err := cfg.loadPricing()
		if err != nil {
			return nil, err
		}
		s.pricing = p
	}
	s.groupKeys, _ = ParseLabelKeys(cfg.AllocationLabels) // checked by Validate
	if cfg.AllocationFile != "" {
		w, err := allocation.Watch(cfg.AllocationFile, s.pricing.Decimals(), 0, s.log.With("component", "allocation"))
		if err != nil {
			return nil, err
		}
		s.policies = w
	} else {
		s.policies = filewatch.Static[*allocation.Policy](nil)
	}
	if s.tel.meters != nil {
		if err := s.registerCoverageMetrics(s.tel.meters.Meter(meterScope)); err != nil {
			return nil, err
		}
	}
	s.engine = s.routes()
	return s, nil
}

func (s *Server) routes() *gin.Engine {
	e := gin.New()
	s.instrument(e)
	e.Use(s.recovery)
	// Before any route is added (gin gives a route the middleware installed
	// before it) and before any handler: an ambiguous Authorization is 400.
	e.Use(auth.OneAuthorization())
	probes := health.NewServer("", map[string]health.Check{
		"redis": s.reader.Ping,
	}, s.log)
	probe := func(c *gin.Context) {
		c.Header("Content-Type", "text/plain; charset=utf-8")
		probes.Handler().ServeHTTP(c.Writer, c.Request)
	}
	e.GET("/healthz", probe)
	e.GET("/readyz", probe)
	e.GET("/openapi.yaml", func(c *gin.Context) { c.Data(http.StatusOK, "application/yaml", openAPISpec) })
	g := e.Group("", s.authn)
	g.GET(PlatformPath, func(c *gin.Context) { s.usage(c, "") })
	g.GET(ProjectPath, func(c *gin.Context) { s.usage(c, c.Param("project")) })
	g.GET(BillPath, func(c *gin.Context) { s.respond(c, "bill query", s.serveBill(c, "")) })
	g.GET(ProjectBillPath, func(c *gin.Context) { s.respond(c, "bill query", s.serveBill(c, c.Param("project"))) })
	g.GET(CoveragePath, func(c *gin.Context) { s.respond(c, "coverage query", s.serveCoverage(c)) })
	g.GET(PlatformWatchPath, func(c *gin.Context) { s.watchRoute(c, "") })
	g.GET(ProjectWatchPath, func(c *gin.Context) { s.watchRoute(c, c.Param("project")) })
	s.notificationRoutes(g)
	s.consoleRoutes(e, g)
	e.NoRoute(func(c *gin.Context) {
		abort(c, http.StatusNotFound, fmt.Sprintf("the server could not find the requested resource %s", c.Request.URL.Path))
	})
	return e
}

// recovery turns a panic into a 500 Status; the stack goes to the log only.
func (s *Server) recovery(c *gin.Context) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.ErrorContext(c.Request.Context(), "panic serving request", "path", c.Request.URL.Path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			if !c.Writer.Written() {
				abort(c, http.StatusInternalServerError, "internal error")
			} else {
				c.Abort()
			}
		}
	}()
	c.Next()
}

// Policies is the allocation policy file's watcher: the caller runs its
// Run in the run group (with no --allocation-file it holds the empty
// policy and Run just waits).
func (s *Server) Policies() *filewatch.Watcher[*allocation.Policy] { return s.policies }

// Handler returns the HTTP handler of every route.
func (s *Server) Handler() http.Handler { return s.engine }

// Run serves on the configured address until ctx ends, then shuts down
// gracefully.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.cfg.Listen, err)
	}
	srv := &http.Server{Handler: s.engine, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 5 * time.Minute}
	srv.RegisterOnShutdown(s.watch.shutdown) // watch streams end; Shutdown then finds them idle
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.log.Info("serving api", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("serve api: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shut api down: %w", err)
	}
	return nil
}
