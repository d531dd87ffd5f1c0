// Command notifier tells people when usage crosses a budget or threshold:
// a durable subscriber of the rollup events (COST_ROLLUPS) that fires each
// threshold of its rules file once per period and delivers it as a signed
// CloudEvents webhook and on NATS. Run any number of replicas.
package main

import (
	"context"
	"errors"
	"io"
	"os"

	"github.com/alauda/costmeter/cmd/internal/wire"
	"github.com/alauda/costmeter/internal/app"
	"github.com/alauda/costmeter/internal/config"
	"github.com/alauda/costmeter/internal/redisconn"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/notifier"
)

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

func run(args []string, stderr io.Writer) int {
	var (
		common   *config.Common
		natsSec  config.NATSSecurity
		redisSec config.RedisSecurity
		cfg      = notifier.DefaultConfig()
		listen   string
	)
	return app.Main(app.Program{
		Name: "notifier", Service: "cost-notifier",
		Flags: func(f *config.Flags, c *config.Common) {
			common = c
			c.RegisterNATS(f)
			c.RegisterRedis(f)
			natsSec.RegisterFlags(f)
			redisSec.RegisterFlags(f)
			cfg.RegisterFlags(f)
			f.Duration(&cfg.Retention, "retention", "COST_RETENTION", rollup.DefaultRetention, "how long period state and notifications are kept after their period (the rollups' retention)")
			f.String(&listen, "listen", "NOTIFIER_LISTEN", ":9092", "address of /healthz, /readyz and /metrics")
		},
		Validate: func() error {
			errs := []error{natsSec.Validate(), redisSec.Validate(common.RedisURL), cfg.Validate()}
			if cfg.RulesFile == "" {
				errs = append(errs, errors.New("--rules-file: required (the budget and alert rules, YAML)"))
			}
			return errors.Join(errs...)
		},
		Build: func(ctx context.Context, env *app.Env) error {
			rules, err := wire.Rules(env.Log, cfg)
			if err != nil {
				return err
			}
			rdb, err := wire.Redis(ctx, env, common.RedisURL, redisconn.WithSecurity(redisSec))
			if err != nil {
				return err
			}
			nc, js, err := wire.NATS(env, common.NATSURL, "cost-notifier", natsSec)
			if err != nil {
				return err
			}
			n, err := wire.Notifier(env, cfg, js, nc, rdb, rules)
			if err != nil {
				return err
			}
			wire.NotifierProbes(env, listen, rdb, nc, n)
			return nil
		},
	}, args, stderr)
}
