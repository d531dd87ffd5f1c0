package aggregator_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/alauda/costmeter/aggregator"
	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/redisconn"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/telemetry"
	"github.com/alauda/costmeter/internal/testenv"
)

// BenchmarkBatchTelemetry measures the aggregator's batch path (fetch,
// decode, apply to Redis, events, ack) for 40 messages of 50 samples, with
// telemetry off (no-op meter and tracer) and on (SDK meter behind
// /metrics, every span recorded and exported in batches, Redis calls
// traced, publish spans and headers on the collector side too).
//
//	go test -run '^$' -bench BatchTelemetry -benchtime 20x ./aggregator/
func BenchmarkBatchTelemetry(b *testing.B) {
	for _, traced := range []bool{false, true} {
		b.Run(fmt.Sprintf("traced=%v", traced), func(b *testing.B) { benchBatches(b, traced) })
	}
}

func benchBatches(b *testing.B, traced bool) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	n, r := testenv.StartNATS(b), testenv.StartRedis(b)
	nc, js, err := natsconn.Connect(n.URL(), "bench", log)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	if err := stream.Ensure(ctx, js, stream.DefaultConfig()); err != nil {
		b.Fatal(err)
	}
	rdb := r.Client()
	var (
		aggOpts = []aggregator.Option{aggregator.WithLogger(log), aggregator.WithClock(func() time.Time { return testNow })}
		pubOpts []collector.PublisherOption
	)
	if traced {
		tel, err := telemetry.Setup(ctx, telemetry.Config{}, "bench", telemetry.WithSpanExporter(tracetest.NewNoopExporter()))
		if err != nil {
			b.Fatal(err)
		}
		defer tel.Shutdown(ctx)
		if err := redisconn.Trace(rdb, tel.TracerProvider()); err != nil {
			b.Fatal(err)
		}
		aggOpts = append(aggOpts, aggregator.WithMeter(tel.Meter("agg")), aggregator.WithTracer(tel.Tracer("agg")))
		pubOpts = append(pubOpts, collector.WithPublisherMeter(tel.Meter("col")), collector.WithPublisherTracer(tel.Tracer("col")))
	}
	store, err := rollup.NewStore(rdb, time.UTC, testRetention)
	if err != nil {
		b.Fatal(err)
	}
	if err := store.LoadScripts(ctx); err != nil {
		b.Fatal(err)
	}
	pub, err := collector.NewPublisher(js, collector.PublisherConfig{MaxBatch: 50}, log, pubOpts...)
	if err != nil {
		b.Fatal(err)
	}
	cfg := aggregator.DefaultConfig()
	agg, err := aggregator.New(cfg, js, store, aggOpts...)
	if err != nil {
		b.Fatal(err)
	}
	actx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- agg.Run(actx) }()
	defer func() { cancel(); <-done }()
	cons := func() (bool, string) {
		done, detail, err := stream.Drained(ctx, js, stream.Samples, stream.Consumer)
		if err != nil {
			return false, err.Error()
		}
		return done, detail
	}
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; b.Loop(); i++ {
		// 40 messages of 50 samples, each iteration a new hour of windows.
		b.StopTimer()
		samples := gen("east", 50, start.Add(time.Duration(i)*time.Hour), 40, time.Minute)
		b.StartTimer()
		if err := pub.Publish(ctx, samples); err != nil {
			b.Fatal(err)
		}
		testenv.Eventually(b, 30*time.Second, "drained", cons)
	}
}
