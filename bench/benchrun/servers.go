package benchrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/natsembed"
	"github.com/alauda/costmeter/internal/redischild"
	"github.com/alauda/costmeter/internal/redisconn"
	"github.com/alauda/costmeter/internal/stream"
)

// servers are the fresh NATS and Redis of one run, in a temporary
// directory removed by close.
type servers struct {
	dir   string
	nats  *natsembed.Server
	redis *redischild.Child
	nc    *nats.Conn
	js    jetstream.JetStream
	rdb   *redis.Client
}

// startServers starts an embedded nats-server with JetStream (file store)
// and a redis-server child with AOF (appendfsync everysec), as costd runs
// them.
func startServers(ctx context.Context, log *slog.Logger, redisNice int) (*servers, error) {
	dir, err := os.MkdirTemp("", "costmeter-bench-")
	if err != nil {
		return nil, fmt.Errorf("create bench dir: %w", err)
	}
	s := &servers{dir: dir}
	port, err := freePort()
	if err != nil {
		s.close()
		return nil, err
	}
	if s.redis, err = redischild.Start(ctx, filepath.Join(dir, "redis"), port); err != nil {
		s.close()
		return nil, fmt.Errorf("start redis: %w", err)
	}
	if redisNice != 0 {
		if err := s.redis.Renice(redisNice); err != nil {
			s.close()
			return nil, err
		}
	}
	rdb, err := redisconn.Dial(s.redis.URL())
	if err != nil {
		s.close()
		return nil, err
	}
	s.rdb = rdb.(*redis.Client) // one address: a plain client
	if s.nats, err = natsembed.Start("127.0.0.1:-1", filepath.Join(dir, "nats")); err != nil {
		s.close()
		return nil, fmt.Errorf("start nats: %w", err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	if log.Enabled(ctx, slog.LevelDebug) {
		quiet = log
	}
	if s.nc, s.js, err = natsconn.Connect(s.nats.URL(), "bench", quiet); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// reset empties Redis and deletes the pipeline's streams, so each phase
// starts from nothing.
func (s *servers) reset(ctx context.Context) error {
	if err := s.rdb.FlushAll(ctx).Err(); err != nil {
		return fmt.Errorf("flush redis: %w", err)
	}
	for _, name := range []string{stream.Samples, stream.DeadLetter, stream.Rollups, rawStream} {
		if err := s.js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("delete stream %s: %w", name, err)
		}
	}
	return nil
}

func (s *servers) close() {
	if s.nc != nil {
		s.nc.Close()
	}
	if s.nats != nil {
		s.nats.Stop()
	}
	if s.rdb != nil {
		_ = s.rdb.Close()
	}
	if s.redis != nil {
		s.redis.Stop()
	}
	_ = os.RemoveAll(s.dir)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// redisInfo returns the numeric fields of one INFO section.
func redisInfo(ctx context.Context, rdb *redis.Client, section string) (map[string]float64, error) {
	txt, err := rdb.Info(ctx, section).Result()
	if err != nil {
		return nil, fmt.Errorf("redis info %s: %w", section, err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(txt, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			out[k] = f
		}
	}
	return out, nil
}

// redisCPU is the CPU seconds Redis used so far (user + system, all
// threads; the main thread does all command work).
func redisCPU(ctx context.Context, rdb *redis.Client) float64 {
	info, err := redisInfo(ctx, rdb, "cpu")
	if err != nil {
		return 0
	}
	return info["used_cpu_user"] + info["used_cpu_sys"]
}

// redisUsedMemory is INFO memory used_memory, in bytes.
func redisUsedMemory(ctx context.Context, rdb *redis.Client) (float64, error) {
	info, err := redisInfo(ctx, rdb, "memory")
	if err != nil {
		return 0, err
	}
	return info["used_memory"], nil
}

// waitDrained polls until the aggregators' consumer has acknowledged every
// message up to the stream's last sequence: acknowledgement follows the
// Redis commit, so by then every sample is visible in the rollups.
func waitDrained(ctx context.Context, js jetstream.JetStream, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		done, detail, err := drained(ctx, js)
		if err == nil && done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stream not drained within %s: %s (%v)", within, detail, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func drained(ctx context.Context, js jetstream.JetStream) (bool, string, error) {
	return stream.Drained(ctx, js, stream.Samples, stream.Consumer)
}
