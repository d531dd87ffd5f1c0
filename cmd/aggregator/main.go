// Command aggregator consumes usage samples from NATS JetStream and keeps
// the exact day rollups in Redis. Run any number of replicas.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
	_ "time/tzdata" // billing zones resolve without the host's zoneinfo

	"github.com/alauda/costmeter/aggregator"
	"github.com/alauda/costmeter/cmd/internal/wire"
	"github.com/alauda/costmeter/internal/app"
	"github.com/alauda/costmeter/internal/config"
	"github.com/alauda/costmeter/internal/redisconn"
	"github.com/alauda/costmeter/internal/rollup"
)

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

func run(args []string, stderr io.Writer) int {
	var (
		common       *config.Common
		natsSec      config.NATSSecurity
		redisSec     config.RedisSecurity
		cfg          = aggregator.DefaultConfig()
		retention    time.Duration
		listen       string
		waitReplicas int
	)
	return app.Main(app.Program{
		Name: "aggregator", Service: "cost-aggregator",
		Flags: func(f *config.Flags, c *config.Common) {
			common = c
			c.RegisterNATS(f)
			c.RegisterRedis(f)
			c.RegisterTimezone(f)
			natsSec.RegisterFlags(f)
			redisSec.RegisterFlags(f)
			cfg.RegisterFlags(f)
			f.Duration(&retention, "retention", "COST_RETENTION", rollup.DefaultRetention, "how long rollups are kept after their month ends (a month is kept or dropped whole)")
			f.String(&listen, "listen", "AGGREGATOR_LISTEN", ":9091", "address of /healthz, /readyz and /metrics")
			f.Int(&waitReplicas, "redis-wait-replicas", "REDIS_WAIT_REPLICAS", 0, "acknowledge a batch only once this many replicas of the index node hold its index writes (WAIT); 1 on a Redis Cluster with replicas")
		},
		Validate: func() error {
			errs := []error{natsSec.Validate(), redisSec.Validate(common.RedisURL), cfg.Validate()}
			if waitReplicas < 0 || waitReplicas > 5 {
				errs = append(errs, fmt.Errorf("--redis-wait-replicas: %d is not within 0..5", waitReplicas))
			}
			if retention < 24*time.Hour {
				errs = append(errs, fmt.Errorf("--retention: %s is shorter than a day", retention))
			}
			return errors.Join(errs...)
		},
		Build: func(ctx context.Context, env *app.Env) error {
			rdb, err := wire.Redis(ctx, env, common.RedisURL, redisconn.WithSecurity(redisSec))
			if err != nil {
				return err
			}
			store, err := wire.Store(ctx, rdb, common.Location(), retention, true, rollup.WithWaitReplicas(waitReplicas, 2*time.Second), rollup.WithGroupKeys(groupKeys(cfg)))
			if err != nil {
				return err
			}
			nc, js, err := wire.NATS(env, common.NATSURL, "cost-aggregator", natsSec)
			if err != nil {
				return err
			}
			agg, err := wire.Aggregator(env, cfg, js, store)
			if err != nil {
				return err
			}
			wire.AggregatorProbes(env, listen, rdb, nc, agg)
			return nil
		},
	}, args, stderr)
}

// groupKeys are the kept label keys of a validated configuration.
func groupKeys(cfg aggregator.Config) []string {
	keys, _ := cfg.GroupKeys()
	return keys
}
