package aggregator

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/telemetry"
	"github.com/alauda/costmeter/internal/testenv"
)

// BenchmarkStartApply is the tracing cost the batch path adds per batch of
// 256 messages from 256 traces: reading each traceparent, starting the span
// with 255 links (the SDK keeps 128) and ending it. Compare with the apply
// itself (cost_aggregator_apply_duration_seconds, milliseconds).
func BenchmarkStartApply(b *testing.B) {
	ctx := context.Background()
	n := testenv.StartNATS(b)
	nc, js, err := natsconn.Connect(n.URL(), "bench", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	if err := stream.Ensure(ctx, js, stream.DefaultConfig()); err != nil {
		b.Fatal(err)
	}
	pubTel, err := telemetry.Setup(ctx, telemetry.Config{}, "pub", telemetry.WithSpanExporter(tracetest.NewNoopExporter()))
	if err != nil {
		b.Fatal(err)
	}
	defer pubTel.Shutdown(ctx)
	const batch = 256
	for i := range batch {
		sctx, span := pubTel.Tracer("pub").Start(ctx, "publish")
		m := nats.NewMsg(stream.SamplesPrefix + "east")
		m.Data = []byte(fmt.Sprintf(`{"i":%d}`, i))
		telemetry.Inject(sctx, m)
		if _, err := js.PublishMsg(ctx, m); err != nil {
			b.Fatal(err)
		}
		span.End()
	}
	cons, err := stream.EnsureConsumer(ctx, js, stream.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	fetched, err := cons.Fetch(batch, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		b.Fatal(err)
	}
	var msgs []jetstream.Msg
	for m := range fetched.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) != batch {
		b.Fatalf("fetched %d messages", len(msgs))
	}

	sdk, err := telemetry.Setup(ctx, telemetry.Config{}, "agg", telemetry.WithSpanExporter(tracetest.NewNoopExporter()))
	if err != nil {
		b.Fatal(err)
	}
	defer sdk.Shutdown(ctx)
	for _, tc := range []struct {
		name string
		a    *Aggregator
	}{
		{"noop", &Aggregator{tracer: tracenoop.NewTracerProvider().Tracer("")}},
		{"sdk", &Aggregator{tracer: sdk.Tracer("agg")}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, span := tc.a.startApply(ctx, msgs, true)
				span.End()
			}
		})
	}
}
