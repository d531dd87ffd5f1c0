// Package wire builds each component's parts from its configuration, once:
// its own binary (cmd/aggregator, cmd/api, cmd/notifier, cmd/collector,
// cmd/exporter) and
// costd, which hosts them all in one process, call the same function, so
// the two cannot drift. Connections are opened here with their cleanup
// registered on the app.Env, in the order they must close in reverse.
package wire

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/alauda/costmeter/aggregator"
	"github.com/alauda/costmeter/api"
	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/exporter"
	"github.com/alauda/costmeter/internal/allocation"
	"github.com/alauda/costmeter/internal/app"
	"github.com/alauda/costmeter/internal/auth"
	"github.com/alauda/costmeter/internal/config"
	"github.com/alauda/costmeter/internal/health"
	"github.com/alauda/costmeter/internal/httpguard"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/pricing"
	"github.com/alauda/costmeter/internal/redisconn"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/notifier"
)

// The OTel instrumentation scopes of the components' meters and tracers.
const (
	AggregatorScope = "github.com/alauda/costmeter/aggregator"
	CollectorScope  = "github.com/alauda/costmeter/collector"
	NotifierScope   = "github.com/alauda/costmeter/notifier"
)

// Redis opens url with opts, traced by the binary's tracer, waits until it
// answers (retrying until ctx ends) and closes it at cleanup.
func Redis(ctx context.Context, env *app.Env, url string, opts ...redisconn.DialOption) (redis.UniversalClient, error) {
	rdb, err := redisconn.Open(url, env.Tel.RecordingTracerProvider(), opts...)
	if err != nil {
		return nil, app.Invalid(err)
	}
	env.Defer(func() { _ = rdb.Close() })
	if err := natsconn.Retry(ctx, env.Log, "connect to redis", func(ctx context.Context) error { return redisconn.Ping(ctx, rdb) }); err != nil {
		return nil, err
	}
	return rdb, nil
}

// Store is the rollup store on rdb in loc, refusing Redis whose rollups
// were cut in another billing zone; with scripts, its scripts are loaded
// (it writes).
func Store(ctx context.Context, rdb redis.UniversalClient, loc *time.Location, retention time.Duration, scripts bool, opts ...rollup.StoreOption) (*rollup.Store, error) {
	store, err := rollup.NewStore(rdb, loc, retention, opts...)
	if err != nil {
		return nil, app.Invalid(err)
	}
	// Days cut in another zone would be reported as this zone's days.
	if err := store.CheckTimezone(ctx); err != nil {
		return nil, err
	}
	if scripts {
		if err := store.LoadScripts(ctx); err != nil {
			return nil, fmt.Errorf("load scripts: %w", err)
		}
	}
	return store, nil
}

// NATS connects to url as name with the binary's security flags, and
// drains the connection at cleanup (after the parts finished and
// acknowledged what they hold, before Redis closes). It connects in the
// background: NATS may come up later.
func NATS(env *app.Env, url, name string, sec config.NATSSecurity) (*nats.Conn, jetstream.JetStream, error) {
	opts, err := natsconn.SecurityOptions(sec)
	if err != nil {
		return nil, nil, app.Invalid(err)
	}
	nc, js, err := natsconn.Connect(url, name, env.Log, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to nats: %w", err)
	}
	env.Defer(func() { natsconn.Drain(nc, 10*time.Second) })
	return nc, js, nil
}

// Probes serves /healthz, /readyz (checks) and /metrics on listen.
func Probes(env *app.Env, listen string, checks map[string]health.Check) {
	probes := health.NewServer(listen, checks, env.Log)
	probes.Handle("/metrics", env.Tel.Handler())
	env.Add("probes", probes.Run)
}

// Consumer readiness checks of a consuming part: Redis answers, NATS is
// connected, the consumer runs.
func consumerChecks(rdb redis.UniversalClient, nc *nats.Conn, running func() bool) map[string]health.Check {
	return map[string]health.Check{
		"redis": func(ctx context.Context) error { return redisconn.Ping(ctx, rdb) },
		"nats": func(context.Context) error {
			if nc.Status() != nats.CONNECTED {
				return fmt.Errorf("nats is %s", nc.Status())
			}
			return nil
		},
		"consumer": func(context.Context) error {
			if !running() {
				return errors.New("consumer not running")
			}
			return nil
		},
	}
}

// Aggregator builds the aggregator on js and store and adds it to the
// run group.
func Aggregator(env *app.Env, cfg aggregator.Config, js jetstream.JetStream, store aggregator.Rollups) (*aggregator.Aggregator, error) {
	agg, err := aggregator.New(cfg, js, store, aggregator.WithLogger(env.Log),
		aggregator.WithMeter(env.Tel.Meter(AggregatorScope)), aggregator.WithTracer(env.Tel.Tracer(AggregatorScope)))
	if err != nil {
		return nil, app.Invalid(fmt.Errorf("create aggregator: %w", err))
	}
	env.Add("aggregator", agg.Run)
	return agg, nil
}

// AggregatorProbes serves the aggregator's probes.
func AggregatorProbes(env *app.Env, listen string, rdb redis.UniversalClient, nc *nats.Conn, agg *aggregator.Aggregator) {
	Probes(env, listen, consumerChecks(rdb, nc, agg.Running))
}

// Rules loads the notifier's rules file and logs its warnings; a missing
// or broken file is a configuration problem naming every broken rule.
func Rules(log *slog.Logger, cfg notifier.Config) (*notifier.Rules, error) {
	rules, err := notifier.LoadRules(cfg.RulesFile, cfg.RulesPoll, log.With("component", "rules"))
	if err != nil {
		return nil, app.Invalid(err)
	}
	for _, w := range rules.Current().Warnings {
		log.Warn(w)
	}
	log.Info("rules loaded", "path", cfg.RulesFile, "rules", len(rules.Current().Rules))
	return rules, nil
}

// Notifier builds the notifier (reading js, publishing with nc, its state
// in rdb) and adds it to the run group.
func Notifier(env *app.Env, cfg notifier.Config, js jetstream.JetStream, nc *nats.Conn, rdb redis.UniversalClient, rules *notifier.Rules) (*notifier.Notifier, error) {
	n, err := notifier.New(cfg, js, nc, rdb, rules, notifier.WithLogger(env.Log), notifier.WithMeter(env.Tel.Meter(NotifierScope)))
	if err != nil {
		return nil, app.Invalid(fmt.Errorf("create notifier: %w", err))
	}
	env.Add("notifier", n.Run)
	return n, nil
}

// NotifierProbes serves the notifier's probes.
func NotifierProbes(env *app.Env, listen string, rdb redis.UniversalClient, nc *nats.Conn, n *notifier.Notifier) {
	Probes(env, listen, consumerChecks(rdb, nc, n.Running))
}

// APIConfig is the usage API's configuration: the API, authentication and
// the request guard.
type APIConfig struct {
	API   api.Config
	Auth  auth.Config
	Guard httpguard.Config
}

// RegisterFlags registers the API's flags with defaults; auth's default
// mode is the caller's (cmd/api has none: --auth must be chosen; costd
// tries it out with none). --allocation-labels is not among them: it is
// the aggregator's too, and a binary registers it once
// (RegisterAllocationLabels, or ShareAllocationLabels).
func (c *APIConfig) RegisterFlags(f *config.Flags) {
	c.API = api.DefaultConfig()
	c.API.RegisterFlags(f)
	c.Auth.RegisterFlags(f)
	c.Guard = httpguard.DefaultConfig()
	c.Guard.RegisterFlags(f)
}

// RegisterAllocationLabels registers --allocation-labels for the API
// alone (cmd/api).
func (c *APIConfig) RegisterAllocationLabels(f *config.Flags) { c.API.RegisterAllocationLabels(f) }

// ShareAllocationLabels is for a binary hosting the aggregator as well
// (costd): it registers --allocation-labels unless the aggregator already
// did, and returns the function that, after parsing, gives the API the
// flag's one value.
func (c *APIConfig) ShareAllocationLabels(f *config.Flags) (after func()) {
	if f.FlagSet().Lookup(api.AllocationLabelsFlag) == nil {
		c.API.RegisterAllocationLabels(f)
		return func() {}
	}
	return func() { c.API.AllocationLabels = f.FlagSet().Lookup(api.AllocationLabelsFlag).Value.String() }
}

// Validate reports every problem at once.
func (c APIConfig) Validate() error {
	return errors.Join(c.API.Validate(), c.Auth.Validate(), c.Guard.Validate())
}

// API builds the usage API on store (its notifications list from rdb; its
// watch routes from js, nil: they answer 503) and adds it, and the token
// file's reloading, to the run group.
func API(env *app.Env, cfg APIConfig, store *rollup.Store, rdb redis.UniversalClient, js jetstream.JetStream) error {
	gin.SetMode(gin.ReleaseMode)
	authn, err := auth.New(cfg.Auth, env.Log.With("component", "auth"))
	if err != nil {
		return app.Invalid(fmt.Errorf("create authentication: %w", err))
	}
	// Watch streams outlive any request deadline and must not hold a
	// heavy query slot.
	guard, err := httpguard.New(cfg.Guard, httpguard.WithStreaming(api.IsWatch))
	if err != nil {
		return app.Invalid(fmt.Errorf("create request guard: %w", err))
	}
	opts := []api.Option{api.WithLogger(env.Log.With("component", "api")),
		api.WithTelemetry(env.Tel.MeterProvider(), env.Tel.TracerProvider(), env.Tel.Handler()),
		api.WithNotifications(notifier.NewLog(rdb)),
		api.WithAuthenticate(guard.Protect(authn.Handler()))}
	if js != nil {
		opts = append(opts, api.WithEvents(js))
	}
	srv, err := api.New(cfg.API, store, store.Location(), opts...)
	if err != nil {
		return app.Invalid(fmt.Errorf("create api: %w", err))
	}
	env.Add("auth", authn.Run)
	env.Add("allocation policy", srv.Policies().Run)
	env.Add("api", srv.Run)
	return nil
}

// PublisherOptions are the collector publisher's meter and tracer.
func PublisherOptions(env *app.Env) []collector.PublisherOption {
	return []collector.PublisherOption{collector.WithPublisherMeter(env.Tel.Meter(CollectorScope)), collector.WithPublisherTracer(env.Tel.Tracer(CollectorScope))}
}

// ExporterScope is the exporter's OTel instrumentation scope.
const ExporterScope = "github.com/alauda/costmeter/exporter"

// Exporter builds the FOCUS exporter reading the rollups of rdb in loc,
// its leases and change events on js, pricing with prices (nil: every
// cost 0) in currency. It is returned, not added to the run group: the
// caller runs it (Run) or backfills with it (Backfill).
//
// With kept label keys (the aggregator's --allocation-labels) the rows
// carry the namespaces' labels as Tags, and the namespaces the policy file
// (policyFile, watched and reloaded; "" shares nothing) shares are split
// over the groups of cfg.GroupBy (the first key by default) as allocated
// rows.
func Exporter(ctx context.Context, env *app.Env, cfg exporter.Config, rdb redis.UniversalClient, js jetstream.JetStream, loc *time.Location, currency string, prices *pricing.List, keys []string, policyFile string) (*exporter.Exporter, error) {
	opts := []exporter.Option{exporter.WithLogger(env.Log.With("component", "exporter"))}
	if prices != nil {
		opts = append(opts, exporter.WithPrices(prices))
	}
	if len(keys) > 0 {
		groupBy := cfg.GroupBy
		if groupBy == "" {
			groupBy = keys[0]
		}
		policy := func() *allocation.Policy { return nil }
		if policyFile != "" {
			w, err := allocation.Watch(policyFile, prices.Decimals(), 0, env.Log.With("component", "allocation-policy"))
			if err != nil {
				return nil, app.Invalid(fmt.Errorf("--allocation-file: %w", err))
			}
			env.Add("allocation-policy", w.Run)
			policy = w.Current
		}
		cb, err := exporter.NewChargeback(rollup.NewReader(rdb), keys, groupBy, policy)
		if err != nil {
			return nil, app.Invalid(fmt.Errorf("--export-allocation-group-by: %w", err))
		}
		opts = append(opts, exporter.WithAllocator(cb), exporter.WithLabeler(cb))
	}
	x, err := exporter.New(ctx, cfg, rollup.NewReader(rdb), js, loc, currency, opts...)
	if err != nil {
		return nil, fmt.Errorf("create exporter: %w", err)
	}
	return x, nil
}

// ExporterProbes serves the exporter's probes: Redis answers, NATS is
// connected.
func ExporterProbes(env *app.Env, listen string, rdb redis.UniversalClient, nc *nats.Conn) {
	Probes(env, listen, map[string]health.Check{
		"redis": func(ctx context.Context) error { return redisconn.Ping(ctx, rdb) },
		"nats": func(context.Context) error {
			if nc.Status() != nats.CONNECTED {
				return fmt.Errorf("nats is %s", nc.Status())
			}
			return nil
		},
	})
}
