// Command api serves the usage query API (cost.alauda.io/v1beta1) from the
// day rollups in Redis. It is stateless: run any number of replicas.
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

	"github.com/gin-gonic/gin"
	"go.opentelemetry.io/otel"

	"github.com/alauda/costmeter/api"
	"github.com/alauda/costmeter/internal/auth"
	"github.com/alauda/costmeter/internal/config"
	"github.com/alauda/costmeter/internal/httpguard"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/redisconn"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/rungroup"
	"github.com/alauda/costmeter/internal/telemetry"
	"github.com/alauda/costmeter/notifier"
)

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("api", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := config.NewFlags(fs, config.OSEnv)
	var common config.Common
	common.RegisterRedis(f)
	common.RegisterTimezone(f)
	common.RegisterLog(f)
	var redisSec config.RedisSecurity
	redisSec.RegisterFlags(f)
	// Optional here: without NATS the watch routes answer 503.
	var natsURL string
	f.String(&natsURL, "nats-url", "NATS_URL", "", "NATS server URL(s) for the watch routes (rollup events); empty: watch disabled")
	var natsSec config.NATSSecurity
	natsSec.RegisterFlags(f)
	cfg := api.DefaultConfig()
	cfg.RegisterFlags(f)
	// No default: --auth none must be chosen explicitly here.
	var authCfg auth.Config
	authCfg.RegisterFlags(f)
	guardCfg := httpguard.DefaultConfig()
	guardCfg.RegisterFlags(f)
	var telCfg telemetry.Config
	telCfg.RegisterFlags(f)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var natsURLErr error
	if natsURL != "" {
		natsURLErr = config.ValidateNATSURLs("--nats-url", natsURL)
	}
	if err := errors.Join(f.Err(), common.Validate(), redisSec.Validate(common.RedisURL), natsURLErr, natsSec.Validate(), cfg.Validate(), authCfg.Validate(), guardCfg.Validate(), telCfg.Validate()); err != nil {
		fmt.Fprintf(stderr, "api: invalid configuration:\n%v\n", err)
		return 2
	}
	log := telemetry.NewLogger(stderr, common.LogFormat, common.LogLevel)
	gin.SetMode(gin.ReleaseMode)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// Shut down last: it flushes the spans of the shutdown itself.
	otel.SetErrorHandler(telemetry.ErrorHandler(log))
	tel, err := telemetry.Setup(ctx, telCfg, "cost-api")
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
		fmt.Fprintf(stderr, "api: %v\n", err)
		return 2
	}
	defer rdb.Close()
	store, err := rollup.NewStore(rdb, common.Location(), rollup.DefaultRetention)
	if err != nil {
		fmt.Fprintf(stderr, "api: %v\n", err)
		return 2
	}
	if err := natsconn.Retry(ctx, log, "connect to redis", func(ctx context.Context) error { return redisconn.Ping(ctx, rdb) }); err != nil {
		return 1
	}
	// Days cut in another zone would be reported as this zone's days.
	if err := store.CheckTimezone(ctx); err != nil {
		log.Error("refusing to start", "err", err)
		return 1
	}
	authn, err := auth.New(authCfg, log.With("component", "auth"))
	if err != nil {
		log.Error("create authentication", "err", err)
		return 2
	}
	opts := []api.Option{api.WithLogger(log.With("component", "api")),
		api.WithTelemetry(tel.MeterProvider(), tel.TracerProvider(), tel.Handler()),
		api.WithNotifications(notifier.NewLog(rdb))}
	if natsURL != "" {
		natsOpts, err := natsconn.SecurityOptions(natsSec)
		if err != nil {
			log.Error("nats security", "err", err)
			return 2
		}
		// Connects in the background: until NATS answers, watch requests
		// get 503.
		nc, js, err := natsconn.Connect(natsURL, "cost-api", log, natsOpts...)
		if err != nil {
			log.Error("connect to nats", "err", err)
			return 1
		}
		defer natsconn.Drain(nc, 10*time.Second)
		opts = append(opts, api.WithEvents(js))
	}
	// Watch streams outlive any request deadline and must not hold a
	// heavy query slot.
	guard, err := httpguard.New(guardCfg, httpguard.WithStreaming(api.IsWatch))
	if err != nil {
		log.Error("create request guard", "err", err)
		return 2
	}
	srv, err := api.New(cfg, store, common.Location(), append(opts, api.WithAuthenticate(guard.Protect(authn.Handler())))...)
	if err != nil {
		log.Error("create api", "err", err)
		return 2
	}
	var g rungroup.Group
	g.Add("auth", authn.Run)
	g.Add("api", srv.Run)
	if err := g.Run(ctx); err != nil {
		log.Error("stopped", "err", err)
		return 1
	}
	log.Info("stopped")
	return 0
}
