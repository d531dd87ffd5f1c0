// Package faults_test is the fault suite: real nats-server, redis-server
// and aggregator processes are killed, stopped, restarted and fed hostile
// input, and after the system drains every rollup must equal the exact
// integer sum of the samples JetStream acknowledged (the ledger): above it
// is double counting, below it is loss. Scenarios already covered by
// aggregator/aggregator_test.go (kill -9 before the Redis write and between
// the write and the ack, two replicas, a clean Redis tail loss) are not
// repeated here.
package faults_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"go.uber.org/goleak"

	"github.com/alauda/costmeter/aggregator"
	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/pipelinetest"
	"github.com/alauda/costmeter/internal/redisconn"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/testenv"
)

// testRetention keeps fixed 2025 dates alive in Redis whatever today is.
const testRetention = 20 * 365 * 24 * time.Hour

// ackWait is the consumer's AckWait in every process of the suite (the
// consumer takes the value of whoever creates or updates it last).
const ackWait = 2 * time.Second

// testNow is the aggregators' clock.
var testNow = time.Date(2025, 6, 10, 0, 0, 0, 0, time.UTC)

// envStopAt tells an aggregator child where to stop itself.
const envStopAt = "COSTMETER_STOP_AT"

// TestMain lets the test binary re-execute itself as an aggregator or as a
// nats-server (testenv.ChildCommand), so that either can be killed -9 or
// stopped with SIGSTOP.
func TestMain(m *testing.M) {
	testenv.RunChild(map[string]func([]string) int{
		"aggregator": func([]string) int { return runAggregatorChild() },
		"nats":       func([]string) int { return runNATSChild() },
	})
	gin.SetMode(gin.ReleaseMode)
	goleak.VerifyTestMain(m)
}

// runAggregatorChild runs an aggregator until killed. COSTMETER_STOP_AT
// ("decoded:N" or "committed:N") makes it SIGSTOP itself at that stage of
// its N-th batch; after SIGCONT it carries on with that batch.
func runAggregatorChild() int {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	rdb, err := redisconn.Dial(os.Getenv("REDIS_URL"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	store, _ := rollup.NewStore(rdb, time.UTC, testRetention)
	nc, js, err := natsconn.Connect(os.Getenv("NATS_URL"), "child", log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer nc.Close()
	var opts []aggregator.Option
	if at := os.Getenv(envStopAt); at != "" {
		stage, nStr, _ := strings.Cut(at, ":")
		n, _ := strconv.Atoi(nStr)
		want := aggregator.StageDecoded
		if stage == "committed" {
			want = aggregator.StageCommitted
		}
		var mu sync.Mutex
		seen := 0
		opts = append(opts, aggregator.WithStageHook(func(s aggregator.Stage) {
			if s != want {
				return
			}
			mu.Lock()
			seen++
			stop := seen == n
			mu.Unlock()
			if stop {
				_ = syscall.Kill(os.Getpid(), syscall.SIGSTOP)
			}
		}))
	}
	cfg := aggregator.DefaultConfig()
	// Batches of one fetch each, so that the stop's stage count (the N-th
	// batch) falls mid-stream.
	cfg.BatchSize, cfg.MaxBatch = 10, 10
	cfg.Workers = 1
	cfg.HealInterval = 200 * time.Millisecond
	cfg.Stream.AckWait = ackWait
	if r, err := strconv.Atoi(os.Getenv("COST_STREAM_REPLICAS")); err == nil {
		cfg.Stream.Replicas = r
	}
	opts = append(opts, aggregator.WithLogger(log), aggregator.WithClock(func() time.Time { return testNow }))
	agg, err := aggregator.New(cfg, js, store, opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := agg.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// runNATSChild runs nats-server with JetStream on NATS_PORT with its
// store in NATS_DIR until killed.
func runNATSChild() int {
	port, _ := strconv.Atoi(os.Getenv("NATS_PORT"))
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: os.Getenv("NATS_DIR"), NoSigs: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	go srv.Start()
	if !srv.ReadyForConnections(20 * time.Second) {
		fmt.Fprintln(os.Stderr, "nats-server not ready")
		return 1
	}
	select {}
}

// natsChild is a nats-server process on a fixed port and store.
type natsChild struct {
	t    *testing.T
	port int
	dir  string
	cmd  *exec.Cmd
}

func startNATSChild(t *testing.T) *natsChild {
	t.Helper()
	n := &natsChild{t: t, port: testenv.FreePort(t), dir: t.TempDir()}
	n.start()
	t.Cleanup(n.kill)
	return n
}

func (n *natsChild) url() string { return "nats://127.0.0.1:" + strconv.Itoa(n.port) }

func (n *natsChild) start() {
	n.t.Helper()
	n.cmd = testenv.ChildCommand("nats")
	n.cmd.Env = append(n.cmd.Env, "NATS_PORT="+strconv.Itoa(n.port), "NATS_DIR="+n.dir)
	n.cmd.Stderr = os.Stderr
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	testenv.Eventually(n.t, 20*time.Second, "nats-server child answers", func() (bool, string) {
		nc, err := nats.Connect(n.url(), nats.Timeout(time.Second))
		if err != nil {
			return false, err.Error()
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return false, err.Error()
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err = js.AccountInfo(ctx)
		return err == nil, fmt.Sprint(err)
	})
}

// kill sends SIGKILL and waits (idempotent).
func (n *natsChild) kill() {
	if n.cmd != nil {
		_ = n.cmd.Process.Kill()
		_ = n.cmd.Wait()
		n.cmd = nil
	}
}

// env is one test's servers and clients.
type env struct {
	t     *testing.T
	redis *testenv.Redis // nil on a Redis Cluster (newHAEnv)
	// redisURL is what aggregator children dial.
	redisURL string
	nc       *nats.Conn
	js       jetstream.JetStream
	url      string
	store    *rollup.Store
	pub      *collector.Publisher
	log      *slog.Logger
}

func newEnv(t *testing.T, natsURL string, opts ...testenv.RedisOption) *env {
	t.Helper()
	r := testenv.StartRedis(t, opts...)
	e := newEnvOn(t, natsURL, r.Client(), r.URL())
	e.redis = r
	return e
}

// newEnvOn is an env on the Redis (single or cluster) that rdb reaches
// and children dial at redisURL.
func newEnvOn(t *testing.T, natsURL string, rdb redis.UniversalClient, redisURL string) *env {
	t.Helper()
	e := &env{t: t, url: natsURL, redisURL: redisURL, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	var err error
	e.nc, e.js, err = natsconn.Connect(natsURL, "test", e.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.nc.Close)
	if e.store, err = rollup.NewStore(rdb, time.UTC, testRetention); err != nil {
		t.Fatal(err)
	}
	if err := e.store.LoadScripts(context.Background()); err != nil {
		t.Fatal(err)
	}
	scfg := stream.DefaultConfig()
	scfg.AckWait = ackWait
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := stream.Ensure(ctx, e.js, scfg); err != nil {
		t.Fatal(err)
	}
	e.pub = e.publisher(collector.PublisherConfig{MaxBatch: 5, AckTimeout: time.Second})
	return e
}

func (e *env) publisher(cfg collector.PublisherConfig) *collector.Publisher {
	e.t.Helper()
	p, err := collector.NewPublisher(e.js, cfg, e.log)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// startAggregator runs an in-process aggregator until the returned stop is
// called or the test ends.
func (e *env) startAggregator(opts ...aggregator.Option) (stop func()) {
	e.t.Helper()
	cfg := aggregator.DefaultConfig()
	// Batches of one fetch each: many small batches, so that a fault
	// always meets one in flight.
	cfg.BatchSize, cfg.MaxBatch = 10, 10
	cfg.HealInterval = 200 * time.Millisecond
	cfg.Stream.AckWait = ackWait
	opts = append([]aggregator.Option{aggregator.WithLogger(e.log), aggregator.WithClock(func() time.Time { return testNow })}, opts...)
	agg, err := aggregator.New(cfg, e.js, e.store, opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	return pipelinetest.Start(e.t, agg)
}

// startChild runs an aggregator child process with extra environment.
func (e *env) startChild(extra ...string) *exec.Cmd {
	e.t.Helper()
	cmd := testenv.ChildCommand("aggregator")
	cmd.Env = append(append(cmd.Env, "NATS_URL="+e.url, "REDIS_URL="+e.redisURL), extra...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// ledger is the exact integer sums Redis must hold.
type ledger = pipelinetest.Ledger

func newLedger() *ledger { return pipelinetest.NewLedger() }

// gen makes namespaces × windows samples of cluster from start on.
var gen = pipelinetest.Gen

// diff compares the ledger with Redis and returns the first mismatch.
func (e *env) diff(l *ledger) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return l.Diff(ctx, e.store)
}

func (e *env) consumerInfo() (*jetstream.ConsumerInfo, error) { return pipelinetest.ConsumerInfo(e.js) }

// waitExact waits until the stream is drained and Redis equals the ledger.
func (e *env) waitExact(l *ledger, within time.Duration) {
	e.t.Helper()
	pipelinetest.WaitExact(e.t, e.js, e.store, l, within)
}

// deadLetters counts the dead-letter stream's messages by reason.
func (e *env) deadLetters() map[string]int { return pipelinetest.MustDeadLetters(e.t, e.js) }

// procState is the state letter of /proc/<pid>/stat ('T' when stopped).
func procState(pid int) byte {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return 0
	}
	return s[i+2]
}
