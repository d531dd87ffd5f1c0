// Package app is the shell every binary runs in, written once: flags with
// environment fallbacks, every configuration problem listed with exit
// status 2, the logger, SIGINT/SIGTERM, telemetry, a run group of the
// binary's parts, and cleanup in reverse order of setup. A binary's main
// only says which flags it has and how its parts are built (cmd/internal/wire).
package app

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

	"go.opentelemetry.io/otel"

	"github.com/alauda/costmeter/internal/config"
	"github.com/alauda/costmeter/internal/rungroup"
	"github.com/alauda/costmeter/internal/telemetry"
)

// invalid marks an error found while building the parts that is a
// configuration problem (exit status 2, printed plainly), not a failure of
// something the process talks to (exit status 1, logged).
type invalid struct{ err error }

func (e invalid) Error() string { return e.err.Error() }
func (e invalid) Unwrap() error { return e.err }

// Invalid marks err as a configuration problem: Main prints it as
// "<binary>: <err>" and exits 2. Invalid(nil) is nil.
func Invalid(err error) error {
	if err == nil {
		return nil
	}
	return invalid{err}
}

// Program is one binary.
type Program struct {
	// Name is the binary's name, the first word of its configuration
	// errors.
	Name string
	// Service is the OTel service.name of its telemetry.
	Service string
	// Flags registers the binary's flags; common already holds
	// --log-format and --log-level, and the binary registers the other
	// shared flags it has on it.
	Flags func(f *config.Flags, common *config.Common)
	// Validate returns every configuration problem of the binary's own
	// flags, joined; Main adds the shared ones.
	Validate func() error
	// Build sets up the binary's parts: it opens connections (registering
	// their Close with Env.Defer), adds actors to the run group (Env.Add).
	// A configuration problem it finds is returned as Invalid.
	Build func(ctx context.Context, env *Env) error
}

// Env is what Build gets: the logger, the telemetry, and the run group and
// cleanups it fills.
type Env struct {
	Log      *slog.Logger
	Tel      *telemetry.Telemetry
	Stderr   io.Writer
	group    rungroup.Group
	cleanups []func()
	stopped  func() []any
}

// NewEnv returns an Env for a binary that runs its own shell (costd, which
// hosts every component in one process).
func NewEnv(log *slog.Logger, tel *telemetry.Telemetry, stderr io.Writer) *Env {
	return &Env{Log: log, Tel: tel, Stderr: stderr}
}

// Run runs the actors added until one returns or ctx ends, and returns
// their joined errors once all returned.
func (e *Env) Run(ctx context.Context) error { return e.group.Run(ctx) }

// Close runs the cleanups, last registered first.
func (e *Env) Close() {
	for i := len(e.cleanups) - 1; i >= 0; i-- {
		e.cleanups[i]()
	}
	e.cleanups = nil
}

// Add adds an actor to the run group: it must return soon after ctx ends.
func (e *Env) Add(name string, run func(ctx context.Context) error) { e.group.Add(name, run) }

// Defer registers a cleanup; cleanups run in reverse order of
// registration after every actor returned.
func (e *Env) Defer(f func()) { e.cleanups = append(e.cleanups, f) }

// StoppedWith sets where the key-value pairs of the final "stopped" log
// line come from (read after every actor returned).
func (e *Env) StoppedWith(f func() []any) { e.stopped = f }

// Main runs p with args and returns the process's exit status: 2 for any
// configuration problem (all of them listed), 1 when a part failed, 0
// after a clean stop on SIGINT or SIGTERM.
func Main(p Program, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet(p.Name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := config.NewFlags(fs, config.OSEnv)
	var common config.Common
	common.RegisterLog(f)
	var telCfg telemetry.Config
	telCfg.RegisterFlags(f)
	p.Flags(f, &common)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := errors.Join(f.Err(), common.Validate(), p.Validate(), telCfg.Validate()); err != nil {
		fmt.Fprintf(stderr, "%s: invalid configuration:\n%v\n", p.Name, err)
		return 2
	}
	log := telemetry.NewLogger(stderr, common.LogFormat, common.LogLevel)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// Shut down last: it flushes the spans of the shutdown itself.
	otel.SetErrorHandler(telemetry.ErrorHandler(log))
	tel, err := telemetry.Setup(ctx, telCfg, p.Service)
	if err != nil {
		log.Error("set up telemetry", "err", err)
		return 2
	}
	defer func() {
		if err := tel.Shutdown(context.Background()); err != nil {
			log.Warn("shut telemetry down", "err", err)
		}
	}()
	env := NewEnv(log, tel, stderr)
	defer env.Close()
	if err := p.Build(ctx, env); err != nil {
		var inv invalid
		if errors.As(err, &inv) {
			fmt.Fprintf(stderr, "%s: %v\n", p.Name, err)
			return 2
		}
		if ctx.Err() == nil {
			log.Error("refusing to start", "err", err)
		}
		return 1
	}
	if err := env.Run(ctx); err != nil {
		log.Error("stopped", "err", err)
		return 1
	}
	var kv []any
	if env.stopped != nil {
		kv = env.stopped()
	}
	log.Info("stopped", kv...)
	return 0
}
