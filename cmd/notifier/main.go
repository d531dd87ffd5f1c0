// Command notifier tells people when usage crosses a budget or threshold:
// a durable subscriber of the rollup events (COST_ROLLUPS) that fires each
// threshold of its rules file once per period and delivers it as a signed
// CloudEvents webhook and on NATS. Run any number of replicas.
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

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"

	"github.com/alauda/costmeter/internal/config"
	"github.com/alauda/costmeter/internal/health"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/redisconn"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/rungroup"
	"github.com/alauda/costmeter/internal/telemetry"
	"github.com/alauda/costmeter/notifier"
)

// scope is the OTel instrumentation scope of the notifier's meter.
const scope = "github.com/alauda/costmeter/notifier"

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("notifier", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := config.NewFlags(fs, config.OSEnv)
	var common config.Common
	common.RegisterNATS(f)
	common.RegisterRedis(f)
	common.RegisterLog(f)
	var natsSec config.NATSSecurity
	natsSec.RegisterFlags(f)
	var redisSec config.RedisSecurity
	redisSec.RegisterFlags(f)
	cfg := notifier.DefaultConfig()
	cfg.RegisterFlags(f)
	var telCfg telemetry.Config
	telCfg.RegisterFlags(f)
	var listen string
	f.Duration(&cfg.Retention, "retention", "COST_RETENTION", rollup.DefaultRetention, "how long period state and notifications are kept after their period (the rollups' retention)")
	f.String(&listen, "listen", "NOTIFIER_LISTEN", ":9092", "address of /healthz, /readyz and /metrics")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	errs := []error{f.Err(), common.Validate(), natsSec.Validate(), redisSec.Validate(common.RedisURL), cfg.Validate(), telCfg.Validate()}
	if cfg.RulesFile == "" {
		errs = append(errs, errors.New("--rules-file: required (the budget and alert rules, YAML)"))
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintf(stderr, "notifier: invalid configuration:\n%v\n", err)
		return 2
	}
	log := telemetry.NewLogger(stderr, common.LogFormat, common.LogLevel)
	rules, err := notifier.LoadRules(cfg.RulesFile, cfg.RulesPoll, log.With("component", "rules"))
	if err != nil {
		fmt.Fprintf(stderr, "notifier: %v\n", err)
		return 2
	}
	for _, w := range rules.Current().Warnings {
		log.Warn(w)
	}
	log.Info("rules loaded", "path", cfg.RulesFile, "rules", len(rules.Current().Rules))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	otel.SetErrorHandler(telemetry.ErrorHandler(log))
	tel, err := telemetry.Setup(ctx, telCfg, "cost-notifier")
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
		fmt.Fprintf(stderr, "notifier: %v\n", err)
		return 2
	}
	defer rdb.Close()
	if err := natsconn.Retry(ctx, log, "connect to redis", func(ctx context.Context) error { return redisconn.Ping(ctx, rdb) }); err != nil {
		return 1
	}
	natsOpts, err := natsconn.SecurityOptions(natsSec)
	if err != nil {
		log.Error("nats security", "err", err)
		return 2
	}
	nc, js, err := natsconn.Connect(common.NATSURL, "cost-notifier", log, natsOpts...)
	if err != nil {
		log.Error("connect to nats", "err", err)
		return 1
	}
	defer natsconn.Drain(nc, 10*time.Second)
	n, err := notifier.New(cfg, js, nc, rdb, rules, notifier.WithLogger(log), notifier.WithMeter(tel.Meter(scope)))
	if err != nil {
		log.Error("create notifier", "err", err)
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
			if !n.Running() {
				return errors.New("consumer not running")
			}
			return nil
		},
	}, log)
	probes.Handle("/metrics", tel.Handler())
	var g rungroup.Group
	g.Add("notifier", n.Run)
	g.Add("probes", probes.Run)
	if err := g.Run(ctx); err != nil {
		log.Error("stopped", "err", err)
		return 1
	}
	log.Info("stopped")
	return 0
}
