package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/gin-gonic/gin"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/alauda/costmeter/api"
	"github.com/alauda/costmeter/internal/auth"
	"github.com/alauda/costmeter/internal/config"
	"github.com/alauda/costmeter/internal/httpguard"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/rungroup"
	"github.com/alauda/costmeter/internal/telemetry"
	"github.com/alauda/costmeter/notifier"
)

// apiOptions configures costd's usage API: the same flags as cmd/api,
// except that --auth defaults to none here (try-it-out mode; the API logs
// a warning).
type apiOptions struct {
	api   api.Config
	auth  auth.Config
	guard httpguard.Config
}

func (a *apiOptions) register(f *config.Flags) {
	a.api = api.DefaultConfig()
	a.api.RegisterFlags(f)
	a.auth = auth.Config{Mode: auth.ModeNone}
	a.auth.RegisterFlags(f)
	a.guard = httpguard.DefaultConfig()
	a.guard.RegisterFlags(f)
}

func (a *apiOptions) validate() error {
	return errors.Join(a.api.Validate(), a.auth.Validate(), a.guard.Validate())
}

// build returns the actor serving the API (and reloading tokens); its
// watch routes read the rollup events from the in-process JetStream js.
func (a *apiOptions) build(_ context.Context, rdb redis.UniversalClient, store *rollup.Store, js jetstream.JetStream, log *slog.Logger, tel *telemetry.Telemetry) (func(context.Context) error, error) {
	gin.SetMode(gin.ReleaseMode)
	authn, err := auth.New(a.auth, log.With("component", "auth"))
	if err != nil {
		return nil, err
	}
	guard, err := httpguard.New(a.guard, httpguard.WithStreaming(api.IsWatch))
	if err != nil {
		return nil, err
	}
	srv, err := api.New(a.api, store, store.Location(), api.WithLogger(log.With("component", "api")),
		api.WithAuthenticate(guard.Protect(authn.Handler())), api.WithEvents(js), api.WithNotifications(notifier.NewLog(rdb)),
		api.WithTelemetry(tel.MeterProvider(), tel.TracerProvider(), tel.Handler()))
	if err != nil {
		return nil, err
	}
	var g rungroup.Group
	g.Add("auth", authn.Run)
	g.Add("http", srv.Run)
	return g.Run, nil
}
