// Command collector measures namespaces (or imports or simulates samples)
// and publishes usage samples to NATS JetStream.
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
	_ "time/tzdata"

	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/internal/config"
	"github.com/alauda/costmeter/internal/natsconn"
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
	var natsSec config.NATSSecurity
	natsSec.RegisterFlags(f)
	var cfg collector.Config
	cfg.RegisterFlags(f)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg.Finish()
	if err := errors.Join(f.Err(), common.Validate(), natsSec.Validate(), cfg.Validate()); err != nil {
		fmt.Fprintf(stderr, "collector: invalid configuration:\n%v\n", err)
		return 2
	}
	log := telemetry.NewLogger(stderr, common.LogFormat, common.LogLevel)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var in io.Reader
	if cfg.Source == collector.SourceFile {
		if cfg.File == "-" {
			in = stdin
		} else {
			fh, err := os.Open(cfg.File)
			if err != nil {
				fmt.Fprintf(stderr, "collector: %v\n", err)
				return 2
			}
			defer fh.Close()
			in = fh
		}
	}

	natsOpts, err := natsconn.SecurityOptions(natsSec)
	if err != nil {
		log.Error("nats security", "err", err)
		return 2
	}
	nc, js, err := natsconn.Connect(common.NATSURL, "cost-collector", log, natsOpts...)
	if err != nil {
		log.Error("connect to nats", "err", err)
		return 1
	}
	defer nc.Drain()
	if err := natsconn.Retry(ctx, log, "create streams", func(ctx context.Context) error {
		return stream.Ensure(ctx, js, stream.DefaultConfig())
	}); err != nil {
		return 1
	}
	pub, err := collector.NewPublisher(js, collector.PublisherConfig{MaxBatch: cfg.MaxBatch}, log)
	if err != nil {
		log.Error("create publisher", "err", err)
		return 1
	}

	switch cfg.Source {
	case collector.SourceFile:
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
	case collector.SourceSimulate:
		sim, err := collector.NewSimulator(cfg.Sim, nil)
		if err != nil {
			log.Error("create simulator", "err", err)
			return 2
		}
		if err := sim.Run(ctx, pub.Publish); err != nil && ctx.Err() == nil {
			log.Error("simulate", "err", err)
			return 1
		}
		return 0
	default:
		fmt.Fprintf(stderr, "collector: --source %s is not built yet\n", cfg.Source)
		return 2
	}
}
