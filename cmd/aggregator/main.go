// Command aggregator consumes usage samples from NATS JetStream and keeps
// the exact day rollups in Redis. Run any number of replicas.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
	_ "time/tzdata" // billing zones resolve without the host's zoneinfo

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"

	"github.com/alauda/costmeter/aggregator"
	"github.com/alauda/costmeter/internal/config"
	"github.com/alauda/costmeter/internal/health"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/redisconn"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/rungroup"
	"github.com/alauda/costmeter/internal/telemetry"
)

// scope is the OTel instrumentation scope of the aggregator's meter and
// tracer.
const scope = "github.com/alauda/costmeter/aggregator"

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("aggregator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := config.NewFlags(fs, config.OSEnv)
	var common config.Common
	common.RegisterNATS(f)
	common.RegisterRedis(f)
	common.RegisterTimezone(f)
	common.RegisterLog(f)
	var natsSec config.NATSSecurity
	natsSec.RegisterFlags(f)
	var redisSec config.RedisSecurity
	redisSec.RegisterFlags(f)
	cfg := aggregator.DefaultConfig()
	cfg.RegisterFlags(f)
	var telCfg telemetry.Config
	telCfg.RegisterFlags(f)
	var retention time.Duration
	var listen string
	f.Duration(&retention, "retention", "COST_RETENTION", rollup.DefaultRetention, "how long rollups are kept after their month ends (a month is kept or dropped whole)")
	f.String(&listen, "listen", "AGGREGATOR_LISTEN", ":9091", "address of /healthz, /readyz and /metrics")
	var waitReplicas int
	f.Int(&waitReplicas, "redis-wait-replicas", "REDIS_WAIT_REPLICAS", 0, "acknowledge a batch only once this many replicas of the index node hold its index writes (WAIT); 1 on a Redis Cluster with replicas")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var errs []error
	errs = append(errs, f.Err(), common.Validate(), natsSec.Validate(), redisSec.Validate(common.RedisURL), cfg.Validate(), telCfg.Validate())
	if waitReplicas < 0 || waitReplicas > 5 {
		errs = append(errs, fmt.Errorf("--redis-wait-replicas: %d is not within 0..5", waitReplicas))
	}
	if retention < 24*time.Hour {
		errs = append(errs, fmt.Errorf("--retention: %s is shorter than a day", retention))
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintf(stderr, "aggregator: invalid configuration:\n%v\n", err)
		return 2
	}
	log := telemetry.NewLogger(stderr, common.LogFormat, common.LogLevel)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// Shut down last: it flushes the spans of the shutdown itself.
	otel.SetErrorHandler(telemetry.ErrorHandler(log))
	tel, err := telemetry.Setup(ctx, telCfg, "cost-aggregator")
	if err != nil {
		log.Error("set up telemetry", "err", err)
		return 2
	}
	defer func() {
		if err := tel.Shutdown(context.Background()); err != nil {
			log.Warn("shut telemetry down", "err", err)
		}
	}()

	rdb, err := redisconn.Open(common.RedisURL, tel.RecordingTracerProvider(), redisconn.WithSecurity(redisSec))
	if err != nil {
		fmt.Fprintf(stderr, "aggregator: %v\n", err)
		return 2
	}
	defer rdb.Close()
	store, err := rollup.NewStore(rdb, common.Location(), retention, rollup.WithWaitReplicas(waitReplicas, 2*time.Second))
	if err != nil {
		fmt.Fprintf(stderr, "aggregator: %v\n", err)
		return 2
	}
	if err := natsconn.Retry(ctx, log, "connect to redis", func(ctx context.Context) error { return redisconn.Ping(ctx, rdb) }); err != nil {
		return 1
	}
	if err := store.CheckTimezone(ctx); err != nil {
		log.Error("refusing to start", "err", err)
		return 1
	}
	if err := store.LoadScripts(ctx); err != nil {
		log.Error("load scripts", "err", err)
		return 1
	}
	natsOpts, err := natsconn.SecurityOptions(natsSec)
	if err != nil {
		log.Error("nats security", "err", err)
		return 2
	}
	nc, js, err := natsconn.Connect(common.NATSURL, "cost-aggregator", log, natsOpts...)
	if err != nil {
		log.Error("connect to nats", "err", err)
		return 1
	}
	// Runs after the aggregator finished and acknowledged its batches in
	// hand, and before Redis is closed.
	defer natsconn.Drain(nc, 10*time.Second)
	agg, err := aggregator.New(cfg, js, store, aggregator.WithLogger(log),
		aggregator.WithMeter(tel.Meter(scope)), aggregator.WithTracer(tel.Tracer(scope)))
	if err != nil {
		log.Error("create aggregator", "err", err)
		return 2
	}
	probes := health.NewServer(listen, map[string]health.Check{
		"redis": func(ctx context.Context) error { return redisconn.Ping(ctx, rdb) },
		"nats": func(context.Context) error {
			if nc.Status() != nats.CONNECTED {
				return fmt.Errorf("nats is %s", nc.Status())
			}
			return nil
		},
		"consumer": func(context.Context) error {
			if !agg.Running() {
				return errors.New("consumer not running")
			}
			return nil
		},
	}, log)
	probes.Handle("/metrics", tel.Handler())
	var g rungroup.Group
	g.Add("aggregator", agg.Run)
	g.Add("probes", probes.Run)
	if err := g.Run(ctx); err != nil {
		log.Error("stopped", "err", err)
		return 1
	}
	log.Info("stopped")
	return 0
}
