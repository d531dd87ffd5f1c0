// Command costd runs the whole system in one process, for trying it out:
// an embedded NATS JetStream server, Redis (REDIS_URL, or a redis-server
// child it starts), simulated collectors for three clusters that backfill
// the last 40 days and then run live, the aggregator, the usage API, the
// notifier (with --rules-file) and the FOCUS exporter (with --export-url).
// Ctrl-C stops everything cleanly, in reverse order of start.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
	_ "time/tzdata"

	"go.opentelemetry.io/otel"

	"github.com/alauda/costmeter/aggregator"
	"github.com/alauda/costmeter/cmd/internal/wire"
	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/exporter"
	"github.com/alauda/costmeter/internal/app"
	"github.com/alauda/costmeter/internal/auth"
	"github.com/alauda/costmeter/internal/config"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/natsembed"
	"github.com/alauda/costmeter/internal/pricing"
	"github.com/alauda/costmeter/internal/redischild"
	"github.com/alauda/costmeter/internal/redisconn"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/telemetry"
	"github.com/alauda/costmeter/notifier"
)

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

type options struct {
	common     config.Common
	dataDir    string
	natsListen string
	redisPort  int
	retention  time.Duration
	collector  collector.Config
	aggregator aggregator.Config
	api        wire.APIConfig
	telemetry  telemetry.Config
	// notifier runs when --rules-file is set (rules holds them loaded).
	notifier notifier.Config
	rules    *notifier.Rules
	// exporter runs when --export-url is set, pricing with prices.
	exporter exporter.Config
	prices   *pricing.List
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("costd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := config.NewFlags(fs, config.OSEnv)
	var o options
	o.common.RegisterTimezone(f)
	o.common.RegisterLog(f)
	f.String(&o.common.RedisURL, "redis-url", "REDIS_URL", "", "Redis to use; empty starts a redis-server child with its data under --data-dir")
	f.String(&o.dataDir, "data-dir", "COSTD_DATA_DIR", "data", "where the embedded NATS and the Redis child keep their data")
	f.String(&o.natsListen, "nats-listen", "COSTD_NATS_LISTEN", "127.0.0.1:14222", "address of the embedded NATS server")
	f.Int(&o.redisPort, "redis-port", "COSTD_REDIS_PORT", 16379, "port of the redis-server child")
	f.Duration(&o.retention, "retention", "COST_RETENTION", rollup.DefaultRetention, "how long rollups are kept after their month ends (a month is kept or dropped whole)")
	// The try-it-out defaults: three clusters, 40 days of history in hourly
	// windows, then live minutes (the environment and the flags override them).
	o.collector.Sim.Backfill = 960 * time.Hour
	o.collector.BackfillInterval = time.Hour
	o.collector.Sim.Capacity = true // so that idle capacity shows
	o.collector.RegisterSimFlags(f)
	o.aggregator = aggregator.DefaultConfig()
	o.aggregator.RegisterFlags(f)
	// As cmd/api's flags, but --auth defaults to none here (try-it-out
	// mode; the API logs a warning).
	o.api.Auth.Mode = auth.ModeNone
	o.api.RegisterFlags(f)
	shareLabels := o.api.ShareAllocationLabels(f) // one --allocation-labels for the aggregator and the API
	o.telemetry.RegisterFlags(f)
	o.notifier = notifier.DefaultConfig()
	o.notifier.RegisterFlags(f)
	o.exporter = exporter.DefaultConfig()
	o.exporter.RegisterFlags(f)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o.collector.Finish()
	shareLabels()
	// The simulated namespaces carry teams for the kept keys (the
	// aggregator's validation reports a bad --allocation-labels).
	if keys, err := collector.ParseLabelKeys(o.aggregator.AllocationLabels); err == nil {
		o.collector.Sim.Labeler, _ = collector.NewLabeler(keys, "")
	}
	o.notifier.Retention = o.retention
	errs := []error{f.Err(), o.common.Validate(), o.collector.Sim.Validate(), o.aggregator.Validate(), o.api.Validate(), o.telemetry.Validate(), o.notifier.Validate()}
	if o.exporter.URL != "" {
		errs = append(errs, o.exporter.Validate())
		if o.api.API.PricingFile != "" {
			// The API's check of the same file reports a problem once.
			o.prices, _ = pricing.Load(o.api.API.PricingFile)
		}
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintf(stderr, "costd: invalid configuration:\n%v\n", err)
		return 2
	}
	log := telemetry.NewLogger(stderr, o.common.LogFormat, o.common.LogLevel)
	if o.notifier.RulesFile != "" {
		rules, err := wire.Rules(log, o.notifier)
		if err != nil {
			fmt.Fprintf(stderr, "costd: %v\n", err)
			return 2
		}
		o.rules = rules
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, o, log, stderr); err != nil {
		log.Error("costd stopped", "err", err)
		if errors.Is(err, redischild.ErrNotInstalled) {
			return 2
		}
		return 1
	}
	log.Info("costd stopped")
	return 0
}

func serve(ctx context.Context, o options, log *slog.Logger, stderr io.Writer) (err error) {
	// One set of providers for every part: their metrics share the API's
	// /metrics, and a trace runs from the simulator's publish to the
	// aggregator's events. Shut down last, it flushes the last spans.
	otel.SetErrorHandler(telemetry.ErrorHandler(log))
	tel, err := telemetry.Setup(ctx, o.telemetry, "costd")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, tel.Shutdown(context.Background())) }()
	// Redis first: it is stopped last.
	redisURL := o.common.RedisURL
	if redisURL == "" {
		child, err := redischild.Start(ctx, filepath.Join(o.dataDir, "redis"), o.redisPort)
		if err != nil {
			return fmt.Errorf("start redis: %w", err)
		}
		defer child.Stop()
		redisURL = child.URL()
		log.Info("started redis-server", "url", redisURL, "dir", filepath.Join(o.dataDir, "redis"))
	}
	rdb, err := redisconn.Open(redisURL, tel.RecordingTracerProvider())
	if err != nil {
		return err
	}
	defer rdb.Close()
	if err := redisconn.Ping(ctx, rdb); err != nil {
		return err
	}
	groupKeys, _ := o.aggregator.GroupKeys() // validated with the flags
	store, err := wire.Store(ctx, rdb, o.common.Location(), o.retention, true, rollup.WithGroupKeys(groupKeys))
	if err != nil {
		return err
	}

	ns, err := natsembed.Start(o.natsListen, filepath.Join(o.dataDir, "nats"))
	if err != nil {
		return err
	}
	defer ns.Stop()
	log.Info("started embedded nats", "url", ns.URL(), "dir", filepath.Join(o.dataDir, "nats"))
	nc, js, err := natsconn.Connect(ns.URL(), "costd", log)
	if err != nil {
		return err
	}
	defer natsconn.Drain(nc, 10*time.Second)
	if err := stream.Ensure(ctx, js, o.aggregator.Stream); err != nil {
		return err
	}

	// Every component is built by the function its own binary calls.
	env := app.NewEnv(log, tel, stderr)
	defer env.Close()
	if _, err := wire.Aggregator(env, o.aggregator, js, store); err != nil {
		return err
	}
	if o.rules != nil {
		if _, err := wire.Notifier(env, o.notifier, js, nc, rdb, o.rules); err != nil {
			return err
		}
		log.Info("notifier on", "rules", len(o.rules.Current().Rules), "path", o.notifier.RulesFile)
	}
	if err := wire.API(env, o.api, store, rdb, js); err != nil {
		return err
	}
	if o.exporter.URL != "" {
		keys, _ := sample.ParseLabelKeys(o.api.API.AllocationLabels) // checked with the API's flags
		x, err := wire.Exporter(ctx, env, o.exporter, rdb, js, o.common.Location(), o.api.API.Currency, o.prices, keys, o.api.API.AllocationFile)
		if err != nil {
			return err
		}
		env.Add("exporter", x.Run)
		log.Info("exporter on", "url", o.exporter.URL)
	}
	pub, err := collector.NewPublisher(js, collector.PublisherConfig{MaxBatch: o.collector.MaxBatch}, log, wire.PublisherOptions(env)...)
	if err != nil {
		return err
	}
	sim, err := collector.NewSimulator(o.collector.Sim, nil)
	if err != nil {
		return err
	}
	env.Add("simulator", func(ctx context.Context) error {
		log.Info("simulating clusters", "clusters", o.collector.Sim.Clusters, "backfill", o.collector.Sim.Backfill)
		start := time.Now()
		err := sim.Run(ctx, pub.Publish)
		if err == nil && ctx.Err() == nil {
			log.Info("simulator stopped", "after", time.Since(start))
		}
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		<-ctx.Done() // a finished simulation must not stop the rest
		return nil
	})
	return env.Run(ctx)
}
