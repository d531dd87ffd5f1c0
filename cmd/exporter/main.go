// Command exporter writes the rollups out as FinOps FOCUS 1.3 Parquet (and
// optionally gzipped CSV) to a directory or an S3-compatible bucket: each
// billing day once it has ended and --export-delay passed, rewritten with
// correction rows when late data changes it. With --from and --to it
// backfills those days and exits. See docs/export.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"
	_ "time/tzdata"

	"github.com/alauda/costmeter/cmd/internal/wire"
	"github.com/alauda/costmeter/exporter"
	"github.com/alauda/costmeter/internal/app"
	"github.com/alauda/costmeter/internal/config"
	"github.com/alauda/costmeter/internal/pricing"
	"github.com/alauda/costmeter/internal/redisconn"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
)

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

func run(args []string, stderr io.Writer) int {
	var (
		common                                  *config.Common
		natsSec                                 config.NATSSecurity
		redisSec                                config.RedisSecurity
		cfg                                     = exporter.DefaultConfig()
		currency, pricingFile, from, to, listen string
		labels, policyFile                      string
		keys                                    []string
		prices                                  *pricing.List
		first, last                             rollup.Day
	)
	return app.Main(app.Program{
		Name: "exporter", Service: "cost-exporter",
		Flags: func(f *config.Flags, c *config.Common) {
			common = c
			c.RegisterNATS(f)
			c.RegisterRedis(f)
			c.RegisterTimezone(f)
			natsSec.RegisterFlags(f)
			redisSec.RegisterFlags(f)
			cfg.RegisterFlags(f)
			f.String(&currency, "currency", "COST_CURRENCY", "CNY", "currency of costs (the API's --currency)")
			f.String(&pricingFile, "pricing", "COST_PRICING_FILE", "", "price list file (the API's --pricing); without one every cost is 0")
			f.String(&from, "from", "", "", "backfill: first billing day YYYY-MM-DD (with --to; exits when done)")
			f.String(&to, "to", "", "", "backfill: last billing day YYYY-MM-DD")
			f.String(&listen, "listen", "EXPORTER_LISTEN", ":9093", "address of /healthz, /readyz and /metrics")
			f.String(&labels, "allocation-labels", "COST_ALLOCATION_LABELS", "", "the label keys the aggregator keeps (its --allocation-labels): rows carry them as Tags, and shared namespaces are allocated to the groups of --export-allocation-group-by")
			f.String(&policyFile, "allocation-file", "COST_ALLOCATION_FILE", "", "allocation policy (the API's --allocation-file): the shared namespaces whose costs become allocated rows; reloaded on change")
		},
		Validate: func() error {
			errs := []error{natsSec.Validate(), redisSec.Validate(common.RedisURL), cfg.Validate()}
			if err := pricing.CheckCurrency("--currency", currency); err != nil {
				errs = append(errs, err)
			}
			var err error
			if keys, err = sample.ParseLabelKeys(labels); err != nil {
				errs = append(errs, fmt.Errorf("--allocation-labels: %w", err))
			}
			if cfg.GroupBy != "" && !slices.Contains(keys, cfg.GroupBy) {
				errs = append(errs, fmt.Errorf("--export-allocation-group-by: %q is not one of --allocation-labels %v", cfg.GroupBy, keys))
			}
			if pricingFile != "" {
				p, err := pricing.Load(pricingFile)
				if err != nil {
					errs = append(errs, fmt.Errorf("--pricing: %w", err))
				}
				prices = p
			}
			if from != "" || to != "" {
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
			return errors.Join(errs...)
		},
		Build: func(ctx context.Context, env *app.Env) error {
			rdb, err := wire.Redis(ctx, env, common.RedisURL, redisconn.WithSecurity(redisSec))
			if err != nil {
				return err
			}
			nc, js, err := wire.NATS(env, common.NATSURL, "cost-exporter", natsSec)
			if err != nil {
				return err
			}
			x, err := wire.Exporter(ctx, env, cfg, rdb, js, common.Location(), currency, prices, keys, policyFile)
			if err != nil {
				return err
			}
			if from != "" {
				// The backfill is the only part: the process exits when it
				// is done.
				env.Add("backfill", func(ctx context.Context) error {
					if err := x.Backfill(ctx, first, last); err != nil {
						return fmt.Errorf("backfill: %w", err)
					}
					env.Log.Info("backfill done", "from", from, "to", to)
					return nil
				})
				return nil
			}
			env.Add("exporter", x.Run)
			wire.ExporterProbes(env, listen, rdb, nc)
			return nil
		},
	}, args, stderr)
}

func parseDate(flag, s string) (rollup.Day, error) {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a date YYYY-MM-DD", flag, s)
	}
	return rollup.DayFromDate(t.Date()), nil
}
