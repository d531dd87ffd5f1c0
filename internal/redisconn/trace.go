package redisconn

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

// Open dials Redis like Dial and, when tp is not nil, traces every command
// with it (see Trace). Binaries pass nil when no spans are exported, so the
// per-command hook costs nothing then.
func Open(rawURL string, tp trace.TracerProvider, opts ...DialOption) (redis.UniversalClient, error) {
	rdb, err := Dial(rawURL, opts...)
	if err != nil {
		return nil, err
	}
	if tp != nil {
		if err := Trace(rdb, tp); err != nil {
			rdb.Close()
			return nil, err
		}
	}
	return rdb, nil
}
