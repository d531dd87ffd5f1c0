package collector_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/collector/spool"
	"github.com/alauda/costmeter/internal/testenv"
)

// rigConfig is what a test changes of the relay rig; zero values take
// the defaults noted.
type rigConfig struct {
	// Dir is the spool's directory (a new temporary one).
	Dir string
	// SpoolBytes bounds the spool (64 MiB).
	SpoolBytes int64
	// MaxBatch is the publisher's batch (100), AckTimeout its wait (2 s;
	// negative: the publisher's default).
	MaxBatch   int
	AckTimeout time.Duration
	// Relay is the relay's configuration (Window 4, MaxBackoff 300 ms;
	// negative: the relay's default).
	Relay collector.RelayConfig
}

// relayRig is a relay publishing from its own spool, running until the
// test ends (or stopped), with the metrics and the log (warnings and
// errors) it produces.
type relayRig struct {
	sp      *spool.Spool
	relay   *collector.Relay
	reader  *sdkmetric.ManualReader
	log     *testenv.LockedBuffer
	stopped func()
}

// startRelay builds a publisher on js, a spool and a relay between them,
// and runs the relay.
func startRelay(ctx context.Context, t *testing.T, js jetstream.JetStream, cfg rigConfig) *relayRig {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	if cfg.SpoolBytes == 0 {
		cfg.SpoolBytes = 64 << 20
	}
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = 100
	}
	switch {
	case cfg.AckTimeout == 0:
		cfg.AckTimeout = 2 * time.Second
	case cfg.AckTimeout < 0:
		cfg.AckTimeout = 0
	}
	if cfg.Relay.Window == 0 {
		cfg.Relay.Window = 4
	}
	switch {
	case cfg.Relay.MaxBackoff == 0:
		cfg.Relay.MaxBackoff = 300 * time.Millisecond
	case cfg.Relay.MaxBackoff < 0:
		cfg.Relay.MaxBackoff = 0
	}
	r := &relayRig{reader: sdkmetric.NewManualReader(), log: &testenv.LockedBuffer{}}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r.reader))
	log := slog.New(slog.NewTextHandler(r.log, &slog.HandlerOptions{Level: slog.LevelWarn}))
	pub, err := collector.NewPublisher(js, collector.PublisherConfig{MaxBatch: cfg.MaxBatch, AckTimeout: cfg.AckTimeout}, log,
		collector.WithPublisherMeter(mp.Meter("test")))
	if err != nil {
		t.Fatal(err)
	}
	r.sp, err = spool.Open(spool.Config{Dir: cfg.Dir, MaxBytes: cfg.SpoolBytes}, spool.WithLogger(log), spool.WithMeter(mp.Meter("test")))
	if err != nil {
		t.Fatal(err)
	}
	r.relay, err = collector.NewRelay(pub, r.sp, cfg.Relay, log)
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := r.relay.Run(rctx); err != nil {
			t.Errorf("relay: %v", err)
		}
	}()
	var once sync.Once
	r.stopped = func() {
		once.Do(func() {
			stop()
			wg.Wait()
			r.sp.Close()
			_ = mp.Shutdown(context.Background())
		})
	}
	t.Cleanup(r.stopped)
	return r
}
