// Command exporter writes the rollups out as FinOps FOCUS 1.3 Parquet (and
// optionally gzipped CSV) to a directory or an S3-compatible bucket: each
// billing day once it has ended and --export-delay passed, rewritten with
// correction rows when late data changes it. With --from and --to it
// backfills those days and exits. See docs/export.md.
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
	_ "time/tzdata"

	"github.com/nats-io/nats.go"

	"github.com/alauda/costmeter/exporter"
	"github.com/alauda/costmeter/internal/config"
	"github.com/alauda/costmeter/internal/health"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/pricing"
	"github.com/alauda/costmeter/internal/redisconn"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/rungroup"
	"github.com/alauda/costmeter/internal/telemetry"
)

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("exporter", flag.ContinueOnError)
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
	cfg := exporter.DefaultConfig()
	cfg.RegisterFlags(f)
	var currency, pricingFile, from, to, listen string
	f.String(&currency, "currency", "COST_CURRENCY", "CNY", "currency of costs (the API's --currency)")
	f.String(&pricingFile, "pricing", "COST_PRICING_FILE", "", "price list file (the API's --pricing); without one every cost is 0")
	f.String(&from, "from", "", "", "backfill: first billing day YYYY-MM-DD (with --to; exits when done)")
	f.String(&to, "to", "", "", "backfill: last billing day YYYY-MM-DD")
	f.String(&listen, "listen", "EXPORTER_LISTEN", ":9093", "address of /healthz, /readyz and /metrics")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	errs := []error{f.Err(), common.Validate(), natsSec.Validate(), redisSec.Validate(common.RedisURL), cfg.Validate()}
	if err := pricing.CheckCurrency("--currency", currency); err != nil {
		errs = append(errs, err)
	}
	var prices *pricing.List
	if pricingFile != "" {
		p, err := pricing.Load(pricingFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("--pricing: %w", err))
		}
		prices = p
	}
	var first, last rollup.Day
	backfill := from != "" || to != ""
	if backfill {
		var err error
		if first, err = parseDate("--from", from); err != nil {
			errs = append(errs, err)
		}
		if last, err = parseDate("--to", to); err != nil {
			errs = append(errs, err)
		}
		if err == nil && last < first {
			errs = append(errs, fmt.Errorf("--to: %s is before --from %s", to, from))
		}
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintf(stderr, "exporter: invalid configuration:\n%v\n", err)
		return 2
	}
	log := telemetry.NewLogger(stderr, common.LogFormat, common.LogLevel)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	rdb, err := redisconn.Open(common.RedisURL, nil, redisconn.WithSecurity(redisSec))
	if err != nil {
		fmt.Fprintf(stderr, "exporter: %v\n", err)
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
	nc, js, err := natsconn.Connect(common.NATSURL, "cost-exporter", log, natsOpts...)
	if err != nil {
		log.Error("connect to nats", "err", err)
		return 1
	}
	defer natsconn.Drain(nc, 10*time.Second)
	opts := []exporter.Option{exporter.WithLogger(log.With("component", "exporter"))}
	if prices != nil {
		opts = append(opts, exporter.WithPrices(prices))
	}
	x, err := exporter.New(ctx, cfg, rollup.NewReader(rdb), js, common.Location(), currency, opts...)
	if err != nil {
		log.Error("create exporter", "err", err)
		return 1
	}
	if backfill {
		if err := x.Backfill(ctx, first, last); err != nil {
			log.Error("backfill", "err", err)
			return 1
		}
		log.Info("backfill done", "from", from, "to", to)
		return 0
	}
	probes := health.NewServer(listen, map[string]health.Check{
		"redis": func(ctx context.Context) error { return redisconn.Ping(ctx, rdb) },
		"nats": func(context.Context) error {
			if nc.Status() != nats.CONNECTED {
				return fmt.Errorf("nats is %s", nc.Status())
			}
			return nil
		},
	}, log)
	var g rungroup.Group
	g.Add("exporter", x.Run)
	g.Add("probes", probes.Run)
	if err := g.Run(ctx); err != nil {
		log.Error("stopped", "err", err)
		return 1
	}
	log.Info("stopped")
	return 0
}

func parseDate(flag, s string) (rollup.Day, error) {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a date YYYY-MM-DD", flag, s)
	}
	return rollup.DayFromDate(t.Date()), nil
}
