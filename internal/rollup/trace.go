package rollup

import (
	"fmt"

	"github.com/redis/go-redis/extra/redisotel/v9"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"
)

// Trace adds a span for every command and pipeline of rdb, from tp (not
// the global provider). Command arguments are left out of the spans: they
// would carry AUTH credentials and, for the apply script, thousands of
// keys per call.
func Trace(rdb redis.UniversalClient, tp trace.TracerProvider) error {
	if err := redisotel.InstrumentTracing(rdb,
		redisotel.WithTracerProvider(tp),
		redisotel.WithDBStatement(false),
		redisotel.WithCallerEnabled(false),
	); err != nil {
		return fmt.Errorf("trace redis calls: %w", err)
	}
	return nil
}
