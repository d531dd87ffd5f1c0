// Command api serves the usage query API (cost.alauda.io/v1beta1) from the
// day rollups in Redis. It is stateless: run any number of replicas.
package main

import (
	"context"
	"errors"
	"io"
	"os"
	_ "time/tzdata" // billing zones resolve without the host's zoneinfo

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alauda/costmeter/cmd/internal/wire"
	"github.com/alauda/costmeter/internal/app"
	"github.com/alauda/costmeter/internal/config"
	"github.com/alauda/costmeter/internal/redisconn"
	"github.com/alauda/costmeter/internal/rollup"
)

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

func run(args []string, stderr io.Writer) int {
	var (
		common   *config.Common
		redisSec config.RedisSecurity
		natsURL  string
		natsSec  config.NATSSecurity
		// No auth default: --auth none must be chosen explicitly here.
		cfg wire.APIConfig
	)
	return app.Main(app.Program{
		Name: "api", Service: "cost-api",
		Flags: func(f *config.Flags, c *config.Common) {
			common = c
			c.RegisterRedis(f)
			c.RegisterTimezone(f)
			redisSec.RegisterFlags(f)
			// Optional here: without NATS the watch routes answer 503.
			f.String(&natsURL, "nats-url", "NATS_URL", "", "NATS server URL(s) for the watch routes (rollup events); empty: watch disabled")
			natsSec.RegisterFlags(f)
			cfg.RegisterFlags(f)
			cfg.RegisterAllocationLabels(f)
		},
		Validate: func() error {
			var natsURLErr error
			if natsURL != "" {
				natsURLErr = config.ValidateNATSURLs("--nats-url", natsURL)
			}
			return errors.Join(redisSec.Validate(common.RedisURL), natsURLErr, natsSec.Validate(), cfg.Validate())
		},
		Build: func(ctx context.Context, env *app.Env) error {
			rdb, err := wire.Redis(ctx, env, common.RedisURL, redisconn.WithSecurity(redisSec))
			if err != nil {
				return err
			}
			store, err := wire.Store(ctx, rdb, common.Location(), rollup.DefaultRetention, false)
			if err != nil {
				return err
			}
			var js jetstream.JetStream
			if natsURL != "" {
				// Connects in the background: until NATS answers, watch
				// requests get 503.
				if _, js, err = wire.NATS(env, natsURL, "cost-api", natsSec); err != nil {
					return err
				}
			}
			return wire.API(env, cfg, store, rdb, js)
		},
	}, args, stderr)
}
