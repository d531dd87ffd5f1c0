// Command collector measures namespaces (--source kubernetes), reads them
// from a cluster's Prometheus (--source prometheus, live or a backfill of
// --from..--to), simulates them (--source simulate) or imports NDJSON
// samples (--source file), and publishes usage samples (with the namespaces'
// --allocation-labels) and capacity samples to NATS JetStream. The first two keep every batch
// in an on-disk spool (--spool-dir, --spool-max-bytes) until JetStream
// acknowledged it and serve /healthz and /readyz on --listen.
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
	"syscall"
	"time"
	_ "time/tzdata"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"

	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/collector/kube"
	"github.com/alauda/costmeter/collector/prom"
	"github.com/alauda/costmeter/collector/spool"
	"github.com/alauda/costmeter/internal/config"
	"github.com/alauda/costmeter/internal/health"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/redisconn"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/rungroup"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/telemetry"
)

func main() { os.Exit(run(os.Args[1:], os.Stdin, os.Stderr)) }

func run(args []string, stdin io.Reader, stderr io.Writer) int {
	fs := flag.NewFlagSet("collector", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := config.NewFlags(fs, config.OSEnv)
	var common config.Common
	common.RegisterNATS(f)
	common.RegisterLog(f)
	common.RegisterTimezone(f)
	common.RegisterRedis(f)
	var redisSec config.RedisSecurity
	redisSec.RegisterFlags(f)
	var natsSec config.NATSSecurity
	natsSec.RegisterFlags(f)
	var cfg collector.Config
	cfg.RegisterFlags(f)
	// Used only when the streams do not exist yet: the aggregators own
	// their configuration (stream.CreateOnly).
	streams := stream.DefaultConfig()
	streams.RegisterReplicas(f)
	var kcfg kube.Config
	kcfg.RegisterFlags(f)
	var pcfg prom.Config
	pcfg.RegisterFlags(f)
	var telCfg telemetry.Config
	telCfg.RegisterFlags(f)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg.Finish()
	errs := []error{f.Err(), common.Validate(), natsSec.Validate(), cfg.Validate(), streams.Validate(), telCfg.Validate()}
	if cfg.Source == collector.SourceKubernetes {
		kcfg.Interval = cfg.Sim.Interval
		errs = append(errs, kcfg.Validate())
	}
	if cfg.Source == collector.SourcePrometheus {
		pcfg.Cluster, pcfg.ProjectLabel, pcfg.DefaultProject = kcfg.Cluster, kcfg.ProjectLabel, kcfg.DefaultProject
		pcfg.Interval, pcfg.Step, pcfg.Location = cfg.Sim.Interval, kcfg.ScrapeInterval, common.Location()
		pcfg.Labeler = cfg.Labeler
		errs = append(errs, pcfg.Validate())
		if pcfg.FillGaps {
			errs = append(errs, redisSec.Validate(common.RedisURL))
		}
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintf(stderr, "collector: invalid configuration:\n%v\n", err)
		return 2
	}
	natsOpts, err := natsconn.SecurityOptions(natsSec)
	if err != nil {
		fmt.Fprintf(stderr, "collector: %v\n", err)
		return 2
	}
	log := telemetry.NewLogger(stderr, common.LogFormat, common.LogLevel)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// Shut down last: it flushes the spans of the shutdown itself.
	otel.SetErrorHandler(telemetry.ErrorHandler(log))
	tel, err := telemetry.Setup(ctx, telCfg, "cost-collector")
	if err != nil {
		log.Error("set up telemetry", "err", err)
		return 2
	}
	defer func() {
		if err := tel.Shutdown(context.Background()); err != nil {
			log.Warn("shut telemetry down", "err", err)
		}
	}()
	if cfg.Source == collector.SourceFile {
		return importFile(ctx, cfg, streams, common, natsOpts, stdin, stderr, log, tel)
	}
	var psrc *prom.Source
	if cfg.Source == collector.SourcePrometheus {
		if psrc, err = promSource(ctx, pcfg, common, redisSec, tel, log); err != nil {
			fmt.Fprintf(stderr, "collector: %v\n", err)
			return 2
		}
		if pcfg.Backfill() {
			return backfill(ctx, cfg, psrc, streams, common, natsOpts, stderr, log, tel)
		}
	}
	return collect(ctx, cfg, kcfg, psrc, streams, common, natsOpts, stderr, log, tel)
}

// promSource builds the Prometheus source and checks, before anything is
// sent, that Prometheus holds what it needs. With --fill-gaps it reads the
// cluster's coverage from the store (--redis-url), whose recorded billing
// zone must be --timezone.
func promSource(ctx context.Context, pcfg prom.Config, common config.Common, redisSec config.RedisSecurity, tel *telemetry.Telemetry, log *slog.Logger) (*prom.Source, error) {
	papi, err := prom.NewAPI(pcfg)
	if err != nil {
		return nil, err
	}
	opts := []prom.Option{prom.WithLogger(log)}
	if pcfg.FillGaps {
		rdb, err := redisconn.Open(common.RedisURL, tel.RecordingTracerProvider(), redisconn.WithSecurity(redisSec))
		if err != nil {
			return nil, err
		}
		// The client lives as long as the process: a backfill exits.
		store, err := rollup.NewStore(rdb, common.Location(), rollup.DefaultRetention)
		if err != nil {
			return nil, err
		}
		cctx, cancel := context.WithTimeout(ctx, pcfg.Timeout)
		defer cancel()
		if err := store.CheckTimezone(cctx); err != nil {
			return nil, fmt.Errorf("--fill-gaps: %w", err)
		}
		opts = append(opts, prom.WithGaps(prom.NewStoreGaps(rollup.NewReader(rdb), common.Location())))
	}
	src, err := prom.New(pcfg, papi, opts...)
	if err != nil {
		return nil, err
	}
	if err := src.Check(ctx); err != nil {
		return nil, err
	}
	return src, nil
}

// backfill runs --source prometheus --from --to: like the file import it
// publishes directly and exits once JetStream acknowledged every sample,
// so a failed backfill is simply run again (all duplicates).
func backfill(ctx context.Context, cfg collector.Config, src *prom.Source, streams stream.Config, common config.Common, natsOpts []nats.Option, stderr io.Writer, log *slog.Logger, tel *telemetry.Telemetry) int {
	nc, js, err := natsconn.Connect(common.NATSURL, "cost-collector", log, natsOpts...)
	if err != nil {
		log.Error("connect to nats", "err", err)
		return 1
	}
	defer natsconn.Drain(nc, 10*time.Second)
	if err := natsconn.Retry(ctx, log, "create streams", func(ctx context.Context) error {
		return stream.Ensure(ctx, js, streams, stream.CreateOnly(), stream.WithLogger(log))
	}); err != nil {
		return 1
	}
	pub, err := collector.NewPublisher(js, collector.PublisherConfig{MaxBatch: cfg.MaxBatch}, log, publisherOptions(tel)...)
	if err != nil {
		log.Error("create publisher", "err", err)
		return 1
	}
	sum, err := src.Backfill(ctx, pub.Publish, stderr)
	fmt.Fprintf(stderr, "backfilled %d days: %d samples sent, %d windows skipped as already covered\n", sum.Days, sum.Samples, sum.Skipped)
	if err != nil {
		log.Error("backfill", "err", err)
		return 1
	}
	return 0
}

// scope is the OTel instrumentation scope of the collector's meters and
// tracers.
const scope = "github.com/alauda/costmeter/collector"

func publisherOptions(tel *telemetry.Telemetry) []collector.PublisherOption {
	return []collector.PublisherOption{collector.WithPublisherMeter(tel.Meter(scope)), collector.WithPublisherTracer(tel.Tracer(scope))}
}

// importFile runs --source file. It publishes directly, without the spool:
// it exits only once JetStream acknowledged every line, so a failed import
// is simply run again (message ids make that idempotent).
func importFile(ctx context.Context, cfg collector.Config, streams stream.Config, common config.Common, natsOpts []nats.Option, stdin io.Reader, stderr io.Writer, log *slog.Logger, tel *telemetry.Telemetry) int {
	in := stdin
	if cfg.File != "-" {
		fh, err := os.Open(cfg.File)
		if err != nil {
			fmt.Fprintf(stderr, "collector: %v\n", err)
			return 2
		}
		defer fh.Close()
		in = fh
	}
	nc, js, err := natsconn.Connect(common.NATSURL, "cost-collector", log, natsOpts...)
	if err != nil {
		log.Error("connect to nats", "err", err)
		return 1
	}
	defer natsconn.Drain(nc, 10*time.Second)
	if err := natsconn.Retry(ctx, log, "create streams", func(ctx context.Context) error {
		return stream.Ensure(ctx, js, streams, stream.CreateOnly(), stream.WithLogger(log))
	}); err != nil {
		return 1
	}
	pub, err := collector.NewPublisher(js, collector.PublisherConfig{MaxBatch: cfg.MaxBatch}, log, publisherOptions(tel)...)
	if err != nil {
		log.Error("create publisher", "err", err)
		return 1
	}
	sum, err := collector.Import(ctx, in, pub, stderr)
	fmt.Fprintf(stderr, "imported %d of %d lines (%d rejected) in %d messages\n", sum.Accepted, sum.Lines, sum.Rejected, sum.Messages)
	if err != nil {
		log.Error("import", "err", err)
		return 1
	}
	if sum.Rejected > 0 {
		return 2
	}
	return 0
}

// collect runs the long-lived sources (kubernetes, simulate): the source
// emits into the spool, the relay publishes from it, and both run until a
// signal.
func collect(ctx context.Context, cfg collector.Config, kcfg kube.Config, psrc *prom.Source, streams stream.Config, common config.Common, natsOpts []nats.Option, stderr io.Writer, log *slog.Logger, tel *telemetry.Telemetry) int {
	var (
		g         rungroup.Group
		ready     = func(context.Context) error { return nil }
		run       func(ctx context.Context, emit collector.Emit) error
		highWater int64
	)
	switch cfg.Source {
	case collector.SourceSimulate:
		sim, err := collector.NewSimulator(cfg.Sim, nil)
		if err != nil {
			fmt.Fprintf(stderr, "collector: %v\n", err)
			return 2
		}
		run = sim.Run
		// A backfill produces far faster than JetStream takes: it waits
		// for the relay rather than overflow the spool. The Kubernetes
		// source keeps time instead, and never waits.
		highWater = cfg.Spool.MaxBytes / 2
	case collector.SourcePrometheus:
		run = psrc.Run
	case collector.SourceKubernetes:
		kc, mc, err := kube.Clients(kcfg)
		if err != nil {
			fmt.Fprintf(stderr, "collector: %v\n", err)
			return 2
		}
		src, err := kube.New(kcfg, kc, mc, kube.WithLogger(log), kube.WithLabeler(cfg.Labeler))
		if err != nil {
			fmt.Fprintf(stderr, "collector: %v\n", err)
			return 2
		}
		run = src.Run
		ready = func(context.Context) error {
			if !src.Synced() {
				return errors.New("informer caches not synced")
			}
			return nil
		}
	}
	sp, err := spool.Open(cfg.Spool, spool.WithLogger(log), spool.WithMeter(tel.Meter(scope+"/spool")))
	if err != nil {
		fmt.Fprintf(stderr, "collector: open spool: %v\n", err)
		return 2
	}
	defer sp.Close()
	nc, js, err := natsconn.Connect(common.NATSURL, "cost-collector", log, natsOpts...)
	if err != nil {
		log.Error("connect to nats", "err", err)
		return 1
	}
	defer natsconn.Drain(nc, 10*time.Second)
	pub, err := collector.NewPublisher(js, collector.PublisherConfig{MaxBatch: cfg.MaxBatch}, log, publisherOptions(tel)...)
	if err != nil {
		log.Error("create publisher", "err", err)
		return 1
	}
	relay, err := collector.NewRelay(pub, sp, collector.RelayConfig{Streams: &streams, HighWater: highWater}, log)
	if err != nil {
		log.Error("create relay", "err", err)
		return 1
	}
	g.Add("relay", relay.Run)
	g.Add(cfg.Source, func(ctx context.Context) error { return run(ctx, relay.Emit) })
	if cfg.Listen != "" {
		// NATS being away is no reason to restart the collector: the spool
		// is there for it, so readiness is the source's alone.
		probes := health.NewServer(cfg.Listen, map[string]health.Check{"source": ready}, log)
		probes.Handle("/metrics", tel.Handler())
		g.Add("probes", probes.Run)
	}
	if err := g.Run(ctx); err != nil {
		log.Error("stopped", "err", err)
		return 1
	}
	log.Info("stopped", "spooled_batches", sp.Len())
	return 0
}
